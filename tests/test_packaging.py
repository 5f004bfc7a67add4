"What a user of an nbdev project expects of the repository: declared dependencies, licence, workflows, light imports."
import ast, json, re, subprocess, sys, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT/'pyproject.toml').read_text())
DIST = {'PIL': 'pillow', 'sklearn': 'scikit-learn', 'yaml': 'pyyaml'}   # import name -> distribution name, where they differ
OPTIONAL = {'tensorboard'}   # imported only when installed (`has_tensorboard`)

def _req_names(reqs): return {re.split(r'[<>=!~\[; ]', r, 1)[0].lower() for r in reqs}

def _third_party_imports():
    found = set()
    for f in (ROOT/'defixmatch').glob('*.py'):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Import): names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and not n.level: names = [n.module]
            else: continue
            found |= {m.split('.')[0] for m in names}
    return {m for m in found if m not in sys.stdlib_module_names and m != 'defixmatch'}

def test_every_imported_package_is_declared():
    deps = _req_names(PYPROJECT['project']['dependencies'])
    extras = {k: _req_names(v) for k, v in PYPROJECT['project']['optional-dependencies'].items()}
    for m in _third_party_imports():
        d = DIST.get(m, m).lower()
        if m in OPTIONAL: assert any(d in v for v in extras.values()), f"{m}: not in an optional dependency group"
        else: assert d in deps, f"{m} is imported by defixmatch/ but {d} is not in [project] dependencies"

def test_nbdev_is_a_development_dependency_only():
    assert 'nbdev' not in _third_party_imports()   # the package does not need it at run time
    assert 'nbdev' not in _req_names(PYPROJECT['project']['dependencies'])
    assert 'nbdev' in _req_names(PYPROJECT['project']['optional-dependencies']['dev'])

def test_license_file_matches_pyproject():
    assert PYPROJECT['project']['license'] == 'Apache-2.0'
    text = (ROOT/'LICENSE').read_text()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text and 'END OF TERMS AND CONDITIONS' in text

def test_plotting_libraries_load_only_where_plots_are_drawn():
    # matplotlib itself comes with fastai; seaborn only with a chart
    code = ("import sys, defixmatch.learner, defixmatch.train, defixmatch.eval, defixmatch.metrics as m; "
            "print('seaborn' in sys.modules); import torch; m.per_class_accuracy_chart([0.5, 1.0]); print('seaborn' in sys.modules)")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                         env={'MPLBACKEND': 'Agg', **{k: v for k, v in __import__('os').environ.items() if k != 'MPLBACKEND'}})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ['False', 'True'], res.stdout

def _sh_blocks(text): return [b.strip() for b in re.findall(r'```sh\n(.*?)```', text, flags=re.S)]

def test_workflows_run_the_readme_commands_and_deploy_the_docs():
    blocks = _sh_blocks((ROOT/'README.md').read_text())
    install = next(b for b in blocks if b.startswith('pip install'))
    tests = next(b for b in blocks if 'pytest' in b)
    ci = [l.strip() for l in (ROOT/'.github'/'workflows'/'test.yaml').read_text().splitlines()]
    assert install in ci and tests in ci
    deploy = [l.strip() for l in (ROOT/'.github'/'workflows'/'deploy.yaml').read_text().splitlines()]
    assert f'run: {install}' in deploy or install in deploy   # the site is built from the package as the README installs it
    assert 'run: nbdev-docs' in deploy and 'publish_dir: ./_docs' in deploy

def test_evidence_notebooks_export_nothing_and_do_not_call_the_exporter():
    for nb in sorted((ROOT/'nbs').glob('9[0-9]_*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        src = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
        assert not any(re.search(r'^#\|\s*(default_exp|export)', s, flags=re.M) for s in src), nb.name
        assert not any('nbdev_export' in s for s in src), f"{nb.name} calls nbdev_export()"
