"""Render the library notebooks to HTML pages close to what the documentation site shows, without quarto.

The site (`nbdev-docs`, quarto) shows each notebook with the outputs it has saved; before rendering, nbdev's own
notebook processors add the `show_doc` of every exported function and class and runs the `show_doc` cells. This script
passes each notebook through those same processors (`nbdev.processors.FilterDefaults`: the examples are not run, only the exported
definitions and the `show_doc` cells) and then through nbconvert's HTML exporter.

Equations are typeset in the browser by MathJax. nbconvert links MathJax from a CDN; without network pass a local
copy with `--mathjax`, e.g. after `npm install mathjax@2` in some folder:
`--mathjax file:///that/folder/node_modules/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe`.

Usage: python tools/render_pages.py [NOTEBOOK ...] [--out DIR] [--mathjax URL] [--png]
With no notebook it renders every library notebook (nbs/01_* to nbs/14_*). `--png` also takes a screenshot of each
page with headless Chromium (`chromium` on the PATH), for a look without a desktop.
"""
import argparse, os, re, shutil, subprocess, sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
_library = re.compile(r'^(0\d|1[0-4])[a-z]?_.*\.ipynb$')
_directive = re.compile(r'^\s*#\|.*$\n?', flags=re.MULTILINE)
_option = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(\S+)\s*$', flags=re.MULTILINE)
_attrs = re.compile(r'(?<=\))\{target="_blank"[^}]*\}')

def library_notebooks() -> list:
    "The library notebooks, nbs/01_* to nbs/14_*, in order."
    return sorted(p for p in NBS.glob('*.ipynb') if _library.match(p.name))

@contextmanager
def _in_root():
    "Run in the repository root, where nbdev finds its configuration."
    old = os.getcwd()
    os.chdir(ROOT)
    try: yield
    finally: os.chdir(old)

def doc_notebook(path) -> nbformat.NotebookNode:
    "The notebook at `path` as the documentation site gets it: nbdev's filter applied, `show_doc` outputs filled in."
    from fastcore.nbio import read_nb, nb2str
    from nbdev.processors import FilterDefaults
    with _in_root(), open(os.devnull, 'w') as null, redirect_stdout(null):
        nb = read_nb(Path(path).resolve())
        os.environ['IN_TEST'] = '1'  # as nbdev-docs runs its filter
        try: FilterDefaults()(nb)
        finally: del os.environ['IN_TEST']
    nb = nbformat.reads(nb2str(nb), as_version=4)
    cells = []
    for cell in nb.cells:
        cell.pop('has_sd', None)  # nbdev's marker, not part of the notebook format
        cell.metadata.pop('execution', None)
        if cell.cell_type == 'raw' and cell.source.startswith('---'):  # quarto's front matter: the page's title
            cells.append(_title_cell(cell.source)); continue
        if cell.cell_type == 'code':  # quarto's cell options, applied here and then dropped
            opts = dict(_option.findall(cell.source))
            if opts.get('include') == 'false': continue
            if opts.get('output') == 'false': cell.outputs = []
            if opts.get('echo') == 'false': cell.metadata.setdefault('tags', []).append('remove_input')
            cell.source = _directive.sub('', cell.source).strip('\n')
        for o in cell.get('outputs', []):  # quarto's link attributes, which plain markdown prints as text
            if 'text/markdown' in o.get('data', {}): o.data['text/markdown'] = _attrs.sub('', o.data['text/markdown'])
        if cell.source.strip() or cell.get('outputs'): cells.append(cell)
    nb.cells = cells
    return nb

def _title_cell(front_matter):
    "A markdown cell with the title and description of quarto's `front_matter`."
    import yaml
    fm = yaml.safe_load(front_matter.strip().strip('-')) or {}
    md = f"# {fm.get('title', '')}" + (f"\n\n> {fm['description']}" if fm.get('description') else '')
    return nbformat.v4.new_markdown_cell(md)

def error_outputs(nb) -> list:
    "(cell index, 'Name: message') of every saved error output in `nb`."
    return [(i, f"{o.get('ename')}: {o.get('evalue')}") for i, c in enumerate(nb.cells)
            for o in c.get('outputs', []) if o.get('output_type') == 'error']

def render_html(path, mathjax_url=None) -> tuple:
    "(HTML page, filtered notebook) of the notebook at `path`."
    from nbconvert import HTMLExporter
    nb = doc_notebook(path)
    from traitlets.config import Config
    c = Config(); c.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    c.TagRemovePreprocessor.enabled = True
    exporter = HTMLExporter(template_name='lab', config=c, exclude_input_prompt=True, exclude_output_prompt=True)
    if mathjax_url: exporter.mathjax_url = mathjax_url
    html, _ = exporter.from_notebook_node(nb, resources={'metadata': {'name': Path(path).stem}})
    # nbconvert asks MathJax to break long formulas, which splits them token by token inside table cells
    html = html.replace('linebreaks: {\n                    automatic: true', 'linebreaks: {\n                    automatic: false')
    return html, nb

def screenshot(html_path, png_path, width=1000, height=30000, tile=1400) -> list:
    "PNGs of the page at `html_path` taken by headless Chromium, cut in tiles `tile` pixels high; their paths."
    from PIL import Image, ImageChops
    exe = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
    if exe is None: raise SystemExit('--png needs chromium on the PATH')
    png_path = Path(png_path)
    subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                    '--virtual-time-budget=30000', '--allow-file-access-from-files',
                    f'--screenshot={png_path}', f'--window-size={width},{height}', Path(html_path).resolve().as_uri()],
                   check=True, capture_output=True)
    with Image.open(png_path) as im:
        im = im.convert('RGB')
        box = ImageChops.difference(im, Image.new('RGB', im.size, 'white')).getbbox()
        bottom = box[3] + 20 if box else tile
        paths = []
        for i, top in enumerate(range(0, bottom, tile)):
            p = png_path.with_name(f'{png_path.stem}-{i + 1:02d}.png')
            im.crop((0, top, width, min(top + tile, bottom))).save(p)
            paths.append(p)
    png_path.unlink()
    return paths

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*', help='notebooks to render (default: every library notebook)')
    p.add_argument('--out', default='_pages', help='folder for the HTML pages (default: _pages)')
    p.add_argument('--mathjax', default=None, help='MathJax URL to use instead of the CDN')
    p.add_argument('--png', action='store_true', help='also take a screenshot of each page with headless Chromium')
    a = p.parse_args(argv)
    paths = [Path(n) for n in a.notebooks] or library_notebooks()
    for n in paths:
        if not n.is_file(): raise SystemExit(f'no such notebook: {n}')
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    status = 0
    for path in paths:
        html, nb = render_html(path, a.mathjax)
        page = out/f'{path.stem}.html'
        page.write_text(html, encoding='utf-8')
        errs = error_outputs(nb)
        if errs: status = 1
        print(f'{page}  {len(html) // 1024} KiB' + ''.join(f'\n  error output in cell {i}: {e}' for i, e in errs))
        if a.png: screenshot(page, page.with_suffix('.png'))
    return status

if __name__ == '__main__': sys.exit(main())
