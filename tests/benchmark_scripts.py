"""What the tests of the benchmark scripts share: a script loaded as a fresh module, and the rows of a CSV it wrote."""
import csv, importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]/'benchmarks'


def load_script(name:str):
    "`benchmarks/NAME.py` as a fresh module (its globals as the file sets them)."
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS/f'{name}.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def rows(path:Path)->list:
    "The rows of the CSV `path`, which must exist."
    with path.open(newline='') as f: return list(csv.DictReader(f))
