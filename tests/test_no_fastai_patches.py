"The package adds to fastai's `Learner` nothing of its own: no `@patch` on it, no attribute set on the class."
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]/'defixmatch'

def test_no_function_of_the_package_is_patched_onto_fastai_learner():
    for f in sorted(PKG.glob('*.py')):
        text = f.read_text()
        assert not re.search(r'def \w+\(self\s*:\s*Learner\b', text), f"{f.name} patches a method onto fastai's Learner"
        assert not re.search(r'^Learner\.\w+\s*=', text, re.M), f"{f.name} sets an attribute of fastai's Learner"
