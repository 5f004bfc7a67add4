"""A resumable grid of benchmark runs, shared by the benchmark scripts.

A grid is a list of runs, each identified by the values of the script's KEY columns. Every finished run appends one
row to a runs CSV (and any per-run rows, such as evaluation curves, to other CSVs) under an exclusive lock; a run
whose key is already in the runs CSV is skipped, so an interrupted grid resumes where it stopped and several
processes can share one grid. The command lines, versions and budget go to a sidecar JSON, written atomically.

    from grid import Grid
    g = Grid(out/'x_runs.csv', KEY, FIELDS, extra={'curves': (out/'x_curves.csv', CURVE_FIELDS)})
    g.run(todo, run_one, label=lambda k, row: f"{k['method']} acc={row['acc']:.4f}")
"""
import contextlib, csv, fcntl, json, os, platform, subprocess
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'benchmarks'/'results'


def now()->str: return datetime.now(timezone.utc).isoformat(timespec='seconds')


def norm(v):
    "A CSV cell or a Python value in one comparable form: numbers as floats ('0.5', 0.5 and 1/2 match), the rest as str."
    if isinstance(v, bool): return str(v)
    try: return float(v)
    except (TypeError, ValueError): return str(v)


def key_of(row:dict, key)->tuple:
    "The identity of the run of `row` (a CSV row or a run's key dict): its `key` columns, normalised by `norm`."
    return tuple(norm(row[k]) for k in key)


def shown(path:Path)->str:
    "`path` as a message shows it: relative to the repository's root when inside it, so that saved outputs name no machine."
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@contextlib.contextmanager
def locked(path:Path):
    "An exclusive lock on the folder of `path`, for processes appending to the same files (no lock file is left)."
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN); os.close(fd)


def read_rows(path:Path)->list:
    "The rows of the CSV `path` as dicts ([] when it does not exist)."
    if not path.exists(): return []
    with path.open(newline='') as f: return list(csv.DictReader(f))


def append_rows(path:Path, fields, rows):
    "Append `rows` (dicts; missing fields empty, others ignored) to the CSV `path`, with a header when it is new."
    new = not path.exists() or path.stat().st_size == 0
    with path.open('a', newline='') as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        if new: w.writeheader()
        for r in rows: w.writerow({k: r.get(k) for k in fields})
        f.flush(); os.fsync(f.fileno())


def check_header(path:Path, fields):
    "Raise a one-line error when the CSV `path` exists with other columns than `fields` (rows are never mixed)."
    if not path.exists() or path.stat().st_size == 0: return
    with path.open(newline='') as f: head = next(csv.reader(f), [])
    if tuple(head) != tuple(fields):
        raise ValueError(f"{path} has the columns {head}, not those this script writes: move it away or use another --name")


def write_json(path:Path, obj):
    "Write `obj` as JSON to `path` through a temporary file and a rename: never half-written."
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        tmp.write_text(json.dumps(obj, indent=1)); os.replace(tmp, path)
    finally:
        if tmp.exists(): tmp.unlink()


def versions()->dict:
    "Python, torch, fastai, the machine, the git commit of the project and its code files that differ from that commit."
    import torch, fastai
    git = lambda *a: subprocess.run(['git', *a], cwd=ROOT, capture_output=True, text=True).stdout
    try: commit, changed = git('rev-parse', 'HEAD').strip(), git('diff', '--name-only', 'HEAD', '--', 'defixmatch', 'benchmarks/*.py').split()
    except OSError: commit, changed = None, None
    return dict(python=platform.python_version(), torch=torch.__version__, fastai=fastai.__version__,
                machine=platform.machine(), processor=platform.processor(), cpus=os.cpu_count(), git_commit=commit,
                git_uncommitted=changed)


def record_invocation(side:Path, entry:dict, **info):
    "Append `entry` to the `invocations` of the sidecar JSON `side` (created with `info` when missing)."
    meta = json.loads(side.read_text()) if side.exists() else dict(info)
    if 'command' in meta and 'invocations' not in meta:  # the first format kept one command
        meta['invocations'] = [dict(command=meta.pop('command'), started=meta.pop('started', None))]
    meta.update({k: v for k, v in info.items() if k not in meta})
    meta.setdefault('invocations', []).append(entry)
    write_json(side, meta)


def update_invocation(side:Path, entry:dict, **info):
    "Add `info` to the invocation `entry` (the last one with its command and start) of the sidecar JSON `side`."
    meta = json.loads(side.read_text())
    same = [e for e in meta['invocations'] if e.get('command') == entry.get('command') and e.get('started') == entry.get('started')]
    if same: same[-1].update(info)  # two calls of one command in the same second: the one that just ran is the last
    write_json(side, meta)


class Grid:
    "A resumable grid: the runs CSV `runs_csv` keyed by the columns `key`, and per-run rows of other CSVs (`extra`)."
    def __init__(self, runs_csv:Path, key, fields, extra:dict|None=None):
        self.runs_csv, self.key, self.fields, self.extra = Path(runs_csv), tuple(key), tuple(fields), dict(extra or {})
        for path, fl in [(self.runs_csv, self.fields), *self.extra.values()]: check_header(Path(path), fl)

    def key_of(self, row:dict)->tuple: return key_of(row, self.key)
    def done(self)->set: return {self.key_of(r) for r in read_rows(self.runs_csv)}
    def todo(self, runs)->list: return [k for k in runs if self.key_of(k) not in self.done()]

    def record(self, k:dict, row:dict, extra:dict|None=None)->bool:
        "Append the run `k`'s `row` (and its `extra` rows, by name), each with `k`'s columns, under the lock, unless another process did; True if written."
        with locked(self.runs_csv):
            if self.key_of(k) in self.done(): return False
            for name, rows in (extra or {}).items():
                path, fl = self.extra[name]
                if rows: append_rows(Path(path), fl, [{**k, **r} for r in rows])
            append_rows(self.runs_csv, self.fields, [{**k, **row}])
        return True

    def run(self, runs, # key dicts, in the order to run them
            run_one, # key dict -> (row, {extra name: rows}), or None for a run that did not finish (not recorded)
            max_runs:int|None=None, # stop after this many new runs
            label=None, # (key dict, row) -> the line printed when a run is recorded
            log=print)->int:
        "Run every run of `runs` not yet in the runs CSV, recording each as it finishes; the number of new runs."
        new = 0
        for k in runs:
            if self.key_of(k) in self.done(): continue
            if max_runs is not None and new >= max_runs: break
            res = run_one(k)
            if res is None: continue
            row, extra = res
            if self.record(k, row, extra):
                new += 1
                if label is not None: log(label(k, row), flush=True)
        return new
