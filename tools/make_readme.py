"""Write README.md from nbs/index.ipynb without quarto.

`nbdev-readme` needs quarto; this script gives the same result for the parts the README uses (markdown,
code and text outputs) with nbconvert's markdown exporter. Cells marked `#| hide` are dropped, and nbdev
directives (`#| ...` lines) are stripped from the cells that stay.

Usage: python tools/make_readme.py [--check]
With --check it writes nothing and exits 1 when README.md is not what the notebook gives.
"""
import re, sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter
from nbconvert.preprocessors import Preprocessor

ROOT = Path(__file__).resolve().parents[1]
INDEX, README = ROOT/'nbs'/'index.ipynb', ROOT/'README.md'
_directive = re.compile(r'^\s*#\|\s*(.*)$')

class DropNbdevDirectives(Preprocessor):
    "Remove cells marked `#| hide` and strip every `#|` line from the others."
    def preprocess(self, nb, resources):
        keep = []
        for cell in nb.cells:
            lines = cell.source.splitlines()
            flags = [m.group(1).strip() for m in map(_directive.match, lines) if m]
            if any(f.split()[0] in ('hide', 'exporti', 'export', 'exports') for f in flags if f): continue
            cell.source = '\n'.join(l for l in lines if not _directive.match(l)).strip('\n')
            if cell.source or cell.get('outputs'): keep.append(cell)
        nb.cells = keep
        return nb, resources

def render_readme() -> str:
    "The README text that nbs/index.ipynb gives."
    nb = nbformat.read(INDEX, as_version=4)
    exporter = MarkdownExporter()
    exporter.register_preprocessor(DropNbdevDirectives(), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    return '<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n' + body

def main(argv):
    text = render_readme()
    if '--check' in argv:
        same = README.exists() and README.read_text() == text
        if not same: print('README.md is out of date: run python tools/make_readme.py', file=sys.stderr)
        return 0 if same else 1
    README.write_text(text)
    return 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
