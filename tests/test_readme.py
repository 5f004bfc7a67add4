"README.md is generated from nbs/index.ipynb, and its commands are the ones CI runs."
import re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _sh_blocks(text):
    return [b.strip() for b in re.findall(r'```sh\n(.*?)```', text, flags=re.S)]

def test_readme_is_generated_from_index_notebook():
    res = subprocess.run([sys.executable, str(ROOT/'tools'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr

def test_ci_installs_and_tests_exactly_as_the_readme_says():
    readme, ci = (ROOT/'README.md').read_text(), (ROOT/'.ci'/'run').read_text()
    blocks = _sh_blocks(readme)
    install = [b for b in blocks if b.startswith('pip install')]
    tests = [b for b in blocks if 'pytest' in b]
    assert len(install) == 1 and len(tests) == 1, blocks
    ci_lines = [l.strip() for l in ci.splitlines()]
    assert install[0] in ci_lines and tests[0] in ci_lines
