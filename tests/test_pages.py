"""Every library notebook renders to an HTML page, shows no error output, and documents its module's public names.

The pages are made by tools/render_pages.py as the documentation site makes them: nbdev's processors add the
`show_doc` of exported functions and classes and run the `show_doc` cells, the examples are not run (their saved
outputs are shown). No network and no browser are needed.
"""
import ast, functools, html, importlib, inspect, re, sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import render_pages  # noqa: E402

NOTEBOOKS = render_pages.library_notebooks()

class _Text(HTMLParser):
    "The visible text of a page (scripts and styles left out)."
    def __init__(self):
        super().__init__(); self.parts, self._skip = [], 0
    def handle_starttag(self, tag, attrs): self._skip += tag in ('script', 'style')
    def handle_endtag(self, tag): self._skip -= tag in ('script', 'style')
    def handle_data(self, data):
        if not self._skip: self.parts.append(data)

def _squash(s): return re.sub(r'\s+', ' ', s).strip()

@functools.cache
def page(name):
    "(HTML, filtered notebook, visible text) of the page of notebook `name`."
    page_html, nb = render_pages.render_html(ROOT/'nbs'/f'{name}.ipynb')
    t = _Text(); t.feed(page_html)
    return page_html, nb, _squash(html.unescape(' '.join(t.parts)))

def module_of(path):
    "The module a notebook exports to (its `default_exp`), or None."
    import nbformat
    src = '\n'.join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == 'code')
    m = re.search(r'^\s*#\|\s*default_exp\s+(\S+)', src, flags=re.MULTILINE)
    return m.group(1) if m else None

def exported_names(mod):
    """The names of `mod.__all__` that `mod` defines itself: a name it imports from a module of the package and lists
    again (a re-export) is documented on that module's page."""
    tree = ast.parse(Path(mod.__file__).read_text())
    names = next(ast.literal_eval(a.value) for a in tree.body
                 if isinstance(a, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in a.targets))
    pkg = mod.__name__.rpartition('.')[0]
    sources = [importlib.import_module(f'{pkg}.{n.module}' if n.level else n.module) for n in tree.body
               if isinstance(n, ast.ImportFrom) and (n.level or (n.module or '').startswith(pkg + '.'))]
    return [n for n in names
            if not any(n in getattr(m, '__all__', ()) and getattr(m, n) is getattr(mod, n) for m in sources)]

def _shown(nb):
    "Names whose `show_doc` cell has an output on the page."
    return {m.group(1) for c in nb.cells if c.cell_type == 'code' and c.get('outputs')
            for m in [re.match(r'\s*show_doc\(\s*([\w.]+)', c.source)] if m}

def _own_doc(obj):
    "The first line of `obj`'s own docstring, or None (instances of builtin types have only their type's)."
    if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj) or callable(obj) and
            getattr(obj, '__doc__', None) and type(obj).__doc__ != obj.__doc__): return None
    doc = inspect.getdoc(obj)
    return _squash(doc.splitlines()[0]) if doc else None

def undocumented(name):
    "The names in the `__all__` of notebook `name`'s module that its page does not document."
    path = ROOT/'nbs'/f'{name}.ipynb'
    mod = importlib.import_module(f'defixmatch.{module_of(path)}')
    _, nb, text = page(name)
    shown, missing = _shown(nb), []
    for n in exported_names(mod):
        if n in shown: continue
        doc = _own_doc(getattr(mod, n))
        # else the name beside its docstring in the page's text, or a name without docstring in the prose
        if doc and n in text and doc in text: continue
        if doc is None and re.search(rf'\b{re.escape(n)}\b', ' '.join(c.source for c in nb.cells if c.cell_type == 'markdown')):
            continue
        missing.append(n)
    return missing

@pytest.mark.parametrize('name', [p.stem for p in NOTEBOOKS])
def test_page_renders_without_error_output(name):
    page_html, nb, text = page(name)
    assert '<html' in page_html and len(text) > 200
    errors = render_pages.error_outputs(nb)
    assert not errors, f'{name}: error outputs saved in cells {errors}'

@pytest.mark.parametrize('name', [p.stem for p in NOTEBOOKS if module_of(p)])
def test_public_names_documented(name):
    missing = undocumented(name)
    assert not missing, f'{name}: not documented on its page: {sorted(missing)}'

def test_every_module_is_checked():
    "Every module of the package is the `default_exp` of a library notebook, so its names are checked here."
    checked = {module_of(p) for p in NOTEBOOKS}
    modules = {p.stem for p in (ROOT/'defixmatch').glob('*.py') if not p.stem.startswith('_')}
    assert not modules - checked, f'modules no library notebook exports: {sorted(modules - checked)}'

def _undocumented_after(tmp_path, monkeypatch, name, drop):
    "The undocumented names of notebook `name` once the cells for which `drop(cell)` is true are removed (on a copy)."
    import nbformat
    nb = nbformat.read(ROOT/'nbs'/f'{name}.ipynb', as_version=4)
    cut = [c for c in nb.cells if drop(c)]
    assert cut, f'{name} no longer has the cell this test removes'
    nb.cells = [c for c in nb.cells if c not in cut]
    monkeypatch.setattr(render_pages, 'ROOT', ROOT)
    (tmp_path/'nbs').mkdir()
    nbformat.write(nb, tmp_path/'nbs'/f'{name}.ipynb')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
    page.cache_clear()
    try: return undocumented(name)
    finally: page.cache_clear()

def test_check_finds_an_undocumented_constant(tmp_path, monkeypatch):
    "Removing the sentence that names a constant makes it undocumented (a constant has no docstring of its own)."
    assert 'MAX_RUN_NAME' not in undocumented('07a_runs')
    missing = _undocumented_after(tmp_path, monkeypatch, '07a_runs',
                                  lambda c: c.cell_type == 'markdown' and re.search(r'\bMAX_RUN_NAME\b', c.source))
    assert missing == ['MAX_RUN_NAME'], missing
