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

def test_install_starts_in_a_virtual_environment_and_tells_cpu_users_what_they_get():
    readme = (ROOT/'README.md').read_text()
    install = readme.split('## Install', 1)[1].split('\n## ', 1)[0]
    blocks = _sh_blocks(install)
    assert blocks[0].startswith('python3 -m venv') and blocks[1].startswith('pip install'), blocks
    assert 'without a GPU' in install and 'GB' in install                  # what the CUDA wheels weigh
    assert '--index-url https://download.pytorch.org/whl/cpu' in install   # and how to avoid them
