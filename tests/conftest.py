"""The workspace helpers of `benchmarks/workspace.py` (not part of the library) are importable from every test."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
