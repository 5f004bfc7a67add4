"""One GPU check in one call: the card and versions, `gpu_step.py`, then the authors' three reference commands
(complete case, FixMatch, DeFixMatch) through `python -m defixmatch.train` on the CIFAR-10 image folder with
WRN-28-2 at the paper's batch (64 labelled + 7 x 64 unlabelled images) for a short fixed number of iterations.
Started by `device_check.sh`, which installs the wheelhouse first; see benchmarks/README.md.

Each part runs in its own process with a time limit taken from one global budget, and a part that fails or runs
out of time is recorded (error, exit status, end of its output) without stopping the others. `OUT/device_check.json`
is rewritten after every part (through a temporary file), `OUT/device_check.log` holds every part's output.

    python benchmarks/device_check.py --out /tmp/out                 # on the GPU machine (normally through the .sh)
    python benchmarks/device_check.py --device cpu --out /tmp/out    # dry run: tiny sizes, a generated image folder

Environment (each also a flag): DEVICE_CHECK_BUDGET (seconds of work, default 450), DEVICE_CHECK_ITERS (iterations
of each reference command, default 1500), DEVICE_CHECK_GPU_STEP_S (budget of gpu_step.py, default 200),
DEVICE_CHECK_WORKERS (loader workers of the reference commands, default: the best count gpu_step.py measured, else
the number of CPUs less two), DEVICE_CHECK_AMP (1/0: `--amp` on the reference commands, default 1 on a GPU),
DEVICE_CHECK_TGZ (CIFAR-10 tarball, default .devdata/cifar10-jpeg.tar.gz), DEVICE_CHECK_SKIP (gpu_step and/or train),
DEVICE_CHECK_DRY=1 (same as --device cpu).

Time: gpu_step.py gets at most its budget plus 40 s (and never more than 55% of what is left), then each reference
command an equal share of the rest. A command stopped at its limit has no accuracy and no it/s (it prints nothing
before its only evaluation): lower DEVICE_CHECK_ITERS, or skip gpu_step in a second call.
"""
import argparse, csv, json, os, platform, re, shutil, signal, subprocess, sys, tarfile, tempfile, threading, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The three reference commands: name -> the method flags of the authors' commands.
REFERENCE = {'complete_case': ['--modified_fixmatch', '--ulb_loss_ratio', '0'],
             'fixmatch': ['--modified_fixmatch', '--ulb_loss_ratio', '0.5'],
             'defixmatch': ['--debiased', '--ulb_loss_ratio', '0.5']}


def finite(o):
    "`o` with NaN and infinities replaced by None (strict JSON)."
    if isinstance(o, float): return o if o == o and abs(o) != float('inf') else None
    if isinstance(o, dict): return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)): return [finite(v) for v in o]
    return o

class Report:
    "The JSON report and the log: both written as the check goes, the JSON whole each time."
    def __init__(self, out:Path):
        self.out, self.t0 = out, time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / 'device_check.log', 'a', buffering=1)
        self.res = dict(info={}, data={}, gpu_step={}, train={}, summary={}, errors=[])
    def say(self, *a):
        line = ' '.join(str(x) for x in a)
        print(line, flush=True); self.log.write(line + '\n')
    def error(self, part, msg):
        self.res['errors'].append(f'{part}: {msg}'); self.say(f'!! {part}: {msg}')
    def save(self):
        self.res['total_s'] = round(time.perf_counter() - self.t0, 1)
        tmp = self.out / '.device_check.json.part'
        tmp.write_text(json.dumps(finite(self.res), indent=1, default=str, allow_nan=False))
        tmp.replace(self.out / 'device_check.json')


class Budget:
    "Seconds of work left in the global budget."
    def __init__(self, s): self.t0, self.s = time.perf_counter(), s
    def left(self): return self.s - (time.perf_counter() - self.t0)


class GPUSampler:
    "Largest memory in use and mean utilisation of GPU 0 while a part runs, read from nvidia-smi once a second."
    def __init__(self):
        self.ok = shutil.which('nvidia-smi') is not None
        self.mem, self.util, self.stop = [], [], threading.Event()
    def _loop(self):
        while not self.stop.is_set():
            try:
                r = subprocess.run(['nvidia-smi', '--query-gpu=memory.used,utilization.gpu', '--format=csv,noheader,nounits',
                                    '-i', '0'], capture_output=True, text=True, timeout=5)
                m, u = (float(v) for v in r.stdout.strip().split(','))
                self.mem.append(m); self.util.append(u)
            except Exception: pass
            self.stop.wait(1.0)
    def __enter__(self):
        if self.ok: self.th = threading.Thread(target=self._loop, daemon=True); self.th.start()
        return self
    def __exit__(self, *exc):
        self.stop.set()
        if self.ok: self.th.join(timeout=10)
    def result(self):
        if not self.mem: return dict(peak_mem_mib=None, mean_util_pct=None)
        return dict(peak_mem_mib=max(self.mem), mean_util_pct=round(sum(self.util) / len(self.util), 1))


def run_part(rep:Report, name:str, cmd:list, timeout:float, env=None, marks=None)->dict:
    """Run `cmd` in its own process group with a time limit; its output goes to the log. Returns rc, wall time, the
    end of the output and, in `marks`, the seconds at which an output line first matched each regex of `marks`."""
    rep.say(f'\n=== {name}: {" ".join(cmd)}  (limit {timeout:.0f} s)')
    t = time.perf_counter()
    out = dict(cmd=' '.join(cmd), limit_s=round(timeout, 1))
    if timeout < 5:
        out.update(rc=None, wall_s=0, skipped='time budget spent'); rep.error(name, 'skipped: time budget spent'); return out
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                         start_new_session=True, env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})})
    lines, seen = [], {}
    def pump():
        for line in p.stdout:
            line = line.rstrip('\n')
            for k, rx in (marks or {}).items():
                if k not in seen and re.search(rx, line): seen[k] = round(time.perf_counter() - t, 3)
            lines.append(line); rep.log.write(line + '\n')
            if len(lines) > 400: del lines[:200]
    th = threading.Thread(target=pump, daemon=True); th.start()
    try: rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        try: p.wait(timeout=10)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait()
        rc = None; out['timed_out'] = True
        rep.error(name, f'stopped after its time limit of {timeout:.0f} s')
    th.join(timeout=10)
    out.update(rc=rc, wall_s=round(time.perf_counter() - t, 1), tail='\n'.join(lines[-25:]), marks=seen)
    if rc not in (0, None): rep.error(name, f'exit status {rc}: {next((l for l in reversed(lines) if l.strip()), "")[:300]}')
    rep.say(f'=== {name}: exit status {rc}, {out["wall_s"]} s')
    return out


# ----------------------------------------------------------------------------------------------------------------
# Data

def make_tiny_folder(dest:Path, n_classes:int=10, n_train:int=8, n_test:int=3, seed:int=0)->Path:
    "A tiny image folder (`train/<class>/*.jpg`, `test/<class>/*.jpg`) of random 32x32 images, for the dry run."
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    root = dest / 'tiny10'
    for split, n in (('train', n_train), ('test', n_test)):
        for c in range(n_classes):
            d = root / split / f'class{c}'; d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f'{i}.jpg', quality=90)
    return root

def extract(tgz:Path, dest:Path)->Path:
    "Extract an image-folder tarball into `dest`; the folder holding train/ and test/."
    kw = dict(filter='data') if hasattr(tarfile, 'data_filter') else {}
    with tarfile.open(tgz) as tf: tf.extractall(dest, **kw)
    return next(p.parent for p in sorted(dest.rglob('train')) if p.is_dir() and (p.parent / 'test').is_dir())


# ----------------------------------------------------------------------------------------------------------------
# Parts

def info(rep:Report, device:str):
    i = rep.res['info']
    i.update(python=platform.python_version(), executable=sys.executable, cpus=len(os.sched_getaffinity(0)),
             device=device, host=platform.node())
    try:
        r = subprocess.run(['nvidia-smi'], capture_output=True, text=True, timeout=30)
        i['nvidia_smi'] = r.stdout; rep.say(r.stdout)
        r = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'],
                           capture_output=True, text=True, timeout=30)
        i['card'] = r.stdout.strip()
    except Exception as e: i['nvidia_smi'] = f'not available: {e!r}'
    code = ("import json, importlib\nout = {}\n"
            "for m in ('torch', 'torchvision', 'accelerate', 'fastai', 'fastcore', 'fastprogress', 'numpy', 'PIL', 'defixmatch'):\n"
            "    try: mod = importlib.import_module(m); out[m] = [getattr(mod, '__version__', '?'), mod.__file__]\n"
            "    except Exception as e: out[m] = ['import failed', repr(e)]\n"
            "import torch\nout['cuda'] = torch.version.cuda\nout['cuda_available'] = torch.cuda.is_available()\n"
            "out['gpu'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None\n"
            "out['bf16'] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()\n"
            "print(json.dumps(out))")
    try:
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=ROOT)
        i['versions'] = json.loads(r.stdout.strip().splitlines()[-1])
        rep.say(json.dumps(i['versions'], indent=1))
        bad = [m for m, v in i['versions'].items() if isinstance(v, list) and v[0] == 'import failed']
        if bad: rep.error('versions', f'import failed: {bad}')
    except Exception as e: rep.error('versions', f'{e!r} {getattr(r, "stderr", "")[-500:]}')
    i['gpu'] = (i.get('versions') or {}).get('gpu')

def gpu_step(rep:Report, a, budget:Budget, folder):
    "gpu_step.py with its own budget; its JSON (written after each measurement) is read even if it was stopped."
    js = Path(tempfile.mkdtemp()) / 'gpu_step.json'
    cmd = [sys.executable, 'benchmarks/gpu_step.py', '--json', str(js), '--budget', str(a.gpu_step_s)]
    if folder is not None: cmd += ['--image-folder', str(folder)]
    if a.dry: cmd += ['--device', 'cpu', '--tiny']
    limit = min(a.gpu_step_s + 40, 0.55 * budget.left())  # (it may overrun its budget by one measurement)
    with GPUSampler() as g: r = run_part(rep, 'gpu_step', cmd, limit)
    r.update(g.result())
    if js.is_file(): r['results'] = json.loads(js.read_text())
    else: rep.error('gpu_step', 'no results written')
    for n in (r.get('results') or {}).get('notes', []): rep.error('gpu_step', n)
    rep.res['gpu_step'] = r

def best_workers(gs:dict)->int|None:
    "Worker count of the fastest CPU-loader-fed measurement of gpu_step.py (None if none ran)."
    fed = {k: v for k, v in ((gs.get('results') or {}).get('fed') or {}).items() if v and 'CPU loader' in k}
    if not fed: return None
    k = max(fed, key=lambda k: fed[k]['it_s'])
    return int(re.search(r'(\d+) workers', k).group(1))

def train_time_s(log_csv:Path)->float|None:
    "Seconds of training (plus the one evaluation) from the run's log.csv (`time` column, mm:ss or h:mm:ss)."
    try:
        rows = list(csv.DictReader(open(log_csv)))
        parts = [int(x) for x in rows[-1]['time'].split(':')]
        return float(sum(v * 60 ** k for k, v in enumerate(reversed(parts))))
    except Exception: return None

def reference_runs(rep:Report, a, budget:Budget, folder:Path, runs_dir:Path):
    gs = rep.res.get('gpu_step') or {}
    workers = a.workers if a.workers is not None else (0 if a.dry else best_workers(gs) or max(1, rep.res['info']['cpus'] - 2))
    amp = (not a.dry) if a.amp is None else a.amp
    if a.dry: size = ['--net', 'WideResNet', '--depth', '10', '--widen_factor', '1', '--batch_size', '2', '--uratio', '2',
                      '--eval_batch_size', '16', '--num_labels', '40', '--cpu']
    else: size = ['--net', 'WideResNet', '--depth', '28', '--widen_factor', '2', '--batch_size', '64', '--uratio', '7',
                  '--eval_batch_size', '1024', '--num_labels', '4000', '--gpu', '0']
    rep.res['train_settings'] = dict(iters=a.iters, workers=workers, amp=amp, size=' '.join(size))
    names = list(REFERENCE)
    for k, name in enumerate(names):
        cmd = [sys.executable, '-m', 'defixmatch.train', '--dataset', str(folder), '--num_classes', '10', *size,
               '--num_train_iter', str(a.iters), '--num_eval_iter', str(a.iters), '--num_workers', str(workers),
               '--save_dir', str(runs_dir), '--save_name', name, '--overwrite', '--seed', '0', '--no-progress',
               *REFERENCE[name], *(['--amp'] if amp else [])]
        # training starts after the line naming the run folder; the table's header comes with the first evaluation
        with GPUSampler() as g:
            r = run_part(rep, f'train {name}', cmd, budget.left() / (len(names) - k), marks=dict(start='run folder', end=r'^epoch\s'))
        r.update(g.result())
        run = runs_dir / name
        if (run / 'report.json').is_file():
            m = json.loads((run / 'report.json').read_text())
            r.update(accuracy=m.get('acc'), top5=m.get('top5'), ce=m.get('ce'), ece=m.get('ece'),
                     worst_class_acc=m.get('worst_class_acc'), iteration=m.get('iteration'))
        m = r['marks']
        if 'start' in m and 'end' in m:  # iterations per second over training and the one evaluation
            r.update(train_eval_s=round(m['end'] - m['start'], 2), it_s=round(a.iters / (m['end'] - m['start']), 3))
        r['log_csv_time_s'] = train_time_s(run / 'log.csv')
        rep.res['train'][name] = r
        rep.save()

def summary(rep:Report):
    s, res = rep.res['summary'], rep.res
    s['card'] = res['info'].get('gpu') or res['info'].get('card')
    g = (res.get('gpu_step') or {}).get('results') or {}
    for part in ('compute', 'fed'):
        for k, v in (g.get(part) or {}).items():
            if v: s[f'gpu_step {part}: {k}'] = dict(it_s=round(v['it_s'], 2), peak_gib=v.get('peak_gib'))
    for k, v in (g.get('fastai') or {}).items():
        if v: s[f'gpu_step fastai/plain ({k})'] = round(v['ratio'], 3)
    if g.get('augment'): s['gpu_step augmentation checks'] = g['augment']
    for k, v in res['train'].items():
        s[f'train {k}'] = {x: v.get(x) for x in ('it_s', 'accuracy', 'peak_mem_mib', 'mean_util_pct', 'wall_s', 'rc')}
    s['errors'] = len(res['errors'])

def main(argv=None):
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cpu' if env('DEVICE_CHECK_DRY') == '1' else 'cuda',
                   help="'cuda' (the check) or 'cpu' (dry run: tiny sizes, a generated image folder)")
    p.add_argument('--out', default=env('OUT'), help='folder of device_check.json and device_check.log (default $OUT)')
    p.add_argument('--budget', type=float, default=float(env('DEVICE_CHECK_BUDGET', 450)), help='seconds of work in all')
    p.add_argument('--iters', type=int, default=int(env('DEVICE_CHECK_ITERS')) if env('DEVICE_CHECK_ITERS') else None,
                   help='iterations of each reference command (default 1500; 2 in the dry run)')
    p.add_argument('--gpu-step-s', type=float, default=float(env('DEVICE_CHECK_GPU_STEP_S', 200)), help='budget of gpu_step.py')
    p.add_argument('--workers', type=int, default=int(env('DEVICE_CHECK_WORKERS')) if env('DEVICE_CHECK_WORKERS') else None)
    p.add_argument('--amp', type=int, choices=[0, 1], default=int(env('DEVICE_CHECK_AMP')) if env('DEVICE_CHECK_AMP') else None)
    p.add_argument('--tgz', default=env('DEVICE_CHECK_TGZ', str(ROOT / '.devdata' / 'cifar10-jpeg.tar.gz')))
    p.add_argument('--skip', default=env('DEVICE_CHECK_SKIP', ''), help='comma-separated parts to leave out: gpu_step, train')
    a = p.parse_args(argv)
    a.dry = a.device == 'cpu'
    if a.iters is None: a.iters = 2 if a.dry else 1500
    if a.iters < 1: p.error(f'--iters must be >= 1, got {a.iters}')
    if a.dry: a.gpu_step_s = min(a.gpu_step_s, 60)
    if not a.out: p.error('no output folder: set OUT or pass --out')
    rep, budget = Report(Path(a.out)), Budget(a.budget)
    rep.res['info'].update(dry_run=a.dry, budget_s=a.budget, iters=a.iters, gpu_step_s=a.gpu_step_s,
                           started=time.strftime('%Y-%m-%d %H:%M:%S'))
    work = Path(tempfile.mkdtemp(prefix='device_check_'))
    try:
        info(rep, a.device); rep.save()
        folder = None
        t = time.perf_counter()
        try:
            if a.dry: folder = make_tiny_folder(work); src = 'generated (random 32x32 JPEG images)'
            elif Path(a.tgz).is_file(): folder = extract(Path(a.tgz), work); src = a.tgz
            else: rep.error('data', f'no CIFAR-10 tarball at {a.tgz}: gpu_step.py uses random images, reference commands skipped')
            if folder is not None:
                n = {s: sum(1 for _ in (folder / s).rglob('*.jpg')) for s in ('train', 'test')}
                rep.res['data'] = dict(folder=str(folder), source=src, images=n, extract_s=round(time.perf_counter() - t, 1))
                rep.say(f'data: {rep.res["data"]}')
        except Exception as e: rep.error('data', repr(e)); traceback.print_exc()
        rep.save()
        if 'gpu_step' not in a.skip:
            try: gpu_step(rep, a, budget, folder)
            except Exception as e: rep.error('gpu_step', repr(e)); traceback.print_exc()
            rep.save()
        if 'train' not in a.skip and folder is not None:
            try: reference_runs(rep, a, budget, folder, work / 'runs')
            except Exception as e: rep.error('train', repr(e)); traceback.print_exc()
    finally:
        try: summary(rep)
        except Exception as e: rep.error('summary', repr(e))
        rep.save()
        shutil.rmtree(work, ignore_errors=True)
        rep.say('\n=== summary\n' + json.dumps(rep.res['summary'], indent=1, default=str))
        rep.say(f"total {rep.res['total_s']} s, {len(rep.res['errors'])} error(s): {rep.res['errors']}")
    return rep.res

if __name__ == '__main__': main()
