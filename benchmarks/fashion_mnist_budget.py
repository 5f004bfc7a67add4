"""FixMatch, DeFixMatch and the complete case on Fashion-MNIST at a long budget, through the Python API.

The FM experiment of `fashion_mnist.py` (LeNet on the 28 x 28 images, the modified supervised loss of eq. 52 on a
weak and a strong view, threshold 0.95, lambda 0.5; the complete case is the same loss at lambda = 0) run for many
more iterations, at several numbers of labelled images (`--labels`, validation images included). Every
`--eval_every` iterations the EMA model is scored on the validation images (which choose `model_best.pth`) and on
all 10,000 test images, and the step's mask ratio is logged: the curves of test accuracy and mask ratio over the
iterations go to NAME_curves.csv, the test metrics of the best validation checkpoint and of the last one to
NAME_runs.csv, the command lines, versions and budget to NAME_runs.json.

Long runs are made to be stopped: each run trains in its own folder under `--work_dir` and checkpoints at every
evaluation; a run found there with a checkpoint continues from it. Several processes may share one grid: each
takes the first run nobody holds (a lock per run, released when its process ends) and records it when finished.

    python benchmarks/fashion_mnist_budget.py --labels 1000 250 --seeds 3 --iterations 4000 --eval_every 250
    python benchmarks/fashion_mnist_budget.py --quick        # a tiny grid on generated data, in a temporary folder
"""
import argparse, contextlib, csv, fcntl, math, os, sys, tempfile, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import Grid, RESULTS, locked, record_invocation, update_invocation, versions, now, shown  # noqa: E402
import fashion_mnist as fm  # noqa: E402

METHODS = ('complete_case', 'fixmatch', 'defixmatch')
LAMBDA = fm.LAMBDA_FM
KEY = ('method', 'lambda_u', 'num_labels', 'seed', 'iterations', 'eval_every', 'num_val', 'size', 'batch', 'uratio', 'ema_m')
METRICS = fm.METRICS
FIELDS = KEY + METRICS + ('best_it', 'best_val_acc') + tuple(f'last_{m}' for m in METRICS) + \
         ('mask_ratio', 'mask_ratio_max', 'status', 'stopped_at', 'resumed_from', 'wall_s', 'ms_per_step', 'finished')
CURVE_FIELDS = KEY + ('iter', 'val_acc', 'val_ce', 'test_acc', 'test_ce', 'sup_loss', 'unsup_loss', 'anti_unsup_loss',
                      'total_loss', 'mask_ratio', 'mask_ratio_lb', 'train_loss', 'lr')
TEST_FIELDS = ('iter', 'test_acc', 'test_ce')


def grid(labels=(1000, 250), seeds=range(3), methods=METHODS)->list:
    "(method, lambda_u, num_labels, seed) of every run: label budget by label budget, then seed by seed."
    return [(m, 0. if m == 'complete_case' else LAMBDA, nl, s) for nl in labels for s in seeds for m in methods]


def val_count(num_labels:int, frac:float=0.1, num_classes:int=10)->int:
    "Validation images held out of `num_labels`: `frac` of them, rounded to a multiple of `num_classes` (stratified), at least one per class."
    return max(num_classes, num_classes * round(frac * num_labels / num_classes))


def run_name(k:dict)->str:
    "The folder name of the run `k` under `--work_dir`: every key column, so that no two runs share a folder."
    return (f"{k['method']}_lam{k['lambda_u']:g}_nl{k['num_labels']}_s{k['seed']}_K{k['iterations']}_N{k['eval_every']}"
            f"_v{k['num_val']}_px{k['size']}_b{k['batch']}_u{k['uratio']}_ema{k['ema_m']:g}")


@contextlib.contextmanager
def held(path:Path):
    "Hold the lock file `path` (True) or find it held by another live process (False); the lock ends with its process."
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); got = True
        except BlockingIOError: got = False
        try: yield got
        finally:
            if got: fcntl.flock(fd, fcntl.LOCK_UN)
    finally: os.close(fd)


def read_csv(path:Path)->list:
    if not path.exists(): return []
    with path.open(newline='') as f: return list(csv.DictReader(f))


def keep_until(path:Path, it:int):
    "Keep only the rows of the curve CSV `path` up to iteration `it` (a resumed run writes the rest again)."
    rows = [r for r in read_csv(path) if int(r['iter']) <= it]
    tmp = path.with_name(f'.{path.name}.tmp')
    with tmp.open('w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=TEST_FIELDS); w.writeheader(); w.writerows(rows)
    os.replace(tmp, path)


def test_scorer(path:Path, dl):
    "A callback that scores the EMA model on `dl` after every evaluation and appends (iter, accuracy, cross-entropy) to `path`."
    import torch
    import torch.nn.functional as F
    from fastai.callback.core import Callback

    class TestCurve(Callback):
        order = 80  # after the recorder, the loggers and the checkpoint
        def after_epoch(self):
            ema = self.learn.ema.module
            was = ema.training
            ema.eval()
            n, correct, ce = 0, 0, 0.
            with torch.no_grad():
                for xb, yb in dl:
                    xb, yb = xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor)  # plain tensors (fastai's types dispatch otherwise)
                    out = ema(xb).as_subclass(torch.Tensor)
                    correct += (out.argmax(1) == yb).sum().item(); ce += F.cross_entropy(out, yb, reduction='sum').item()
                    n += len(yb)
            ema.train(was)
            new = not path.exists() or path.stat().st_size == 0
            with path.open('a', newline='') as f:
                w = csv.DictWriter(f, fieldnames=TEST_FIELDS)
                if new: w.writeheader()
                w.writerow(dict(iter=self.learn.iteration, test_acc=correct / n, test_ce=ce / n))
                f.flush(); os.fsync(f.fileno())
    return TestCurve()


def run_one(data, k:dict, work:Path):
    "Train the run `k` in `work/run_name(k)` (continuing from its checkpoint if there is one); its row and its curve."
    from defixmatch.learner import ssl_test_metrics
    start = time.time()
    folder = work/run_name(k)
    dls, learn = fm.build(data, dict(k, exp='FM', noise=0.), folder)
    ckpt, tcurve = folder/'run'/'latest_model.pth', folder/'test_curve.csv'
    resume = ckpt.is_file()
    if not resume:
        learn.overwrite = True  # a folder without a checkpoint holds nothing to keep
        if tcurve.exists(): tcurve.unlink()
    status, stopped_at = 'ok', k['iterations']
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if resume:
            from defixmatch.checkpoint import read_checkpoint
            keep_until(tcurve, int(read_checkpoint(ckpt).get('it', 0)))
        t0 = time.time()
        try:
            learn.fit_ssl(k['iterations'], num_eval_iter=k['eval_every'], resume=resume,
                          cbs=[test_scorer(tcurve, dls.test)])
        except FloatingPointError: status, stopped_at = 'nonfinite', int(learn.iteration)  # reported, not dropped
        fit_s = time.time() - t0
        res = ssl_test_metrics(learn) if status == 'ok' else None
    resumed_from = _resumed_from(folder) if resume else 0
    log = read_csv(folder/'run'/'log.csv')
    tests = {int(r['iter']): r for r in read_csv(tcurve)}
    curve = []
    for r in log:
        it = int(float(r['iter']))
        c = {f: r.get(f) for f in CURVE_FIELDS if f in r}
        t = tests.get(it, {})
        c.update(iter=it, val_acc=r.get('top1_acc'), val_ce=r.get('valid_loss'), test_acc=t.get('test_acc'), test_ce=t.get('test_ce'))
        curve.append(c)
    row = dict(status=status, stopped_at=stopped_at, resumed_from=resumed_from, wall_s=round(time.time() - start, 2),
               ms_per_step=round(1000 * fit_s / max(stopped_at - resumed_from, 1), 2), finished=now())
    masks = [float(c['mask_ratio']) for c in curve if c.get('mask_ratio') not in (None, '')]
    row.update(mask_ratio=masks[-1] if masks else None, mask_ratio_max=max(masks) if masks else None)
    nan = float('nan')
    best, last = ((res or {}).get('best') or {}), ((res or {}).get('last') or {})
    row.update({m: best.get(m, nan) for m in METRICS})
    row.update({f'last_{m}': last.get(m, nan) for m in METRICS})
    if best: row.update(best_it=best['iteration'], best_val_acc=best['selected_on'])
    if status == 'ok' and not all(math.isfinite(row[m]) for m in METRICS): row['status'] = 'nonfinite'
    return row, {'curves': curve}


def _resumed_from(folder:Path)->int:
    "The iteration the last continuation of the run in `folder` started from (written before it trains)."
    p = folder/'resumed_from'
    return int(p.read_text()) if p.exists() else 0


def run_held(data, k:dict, work:Path):
    "`run_one` when no other process holds the run `k`; None (not recorded, left to its holder) otherwise."
    with held(work/f'{run_name(k)}.lock') as got:
        if not got: return None
        folder = work/run_name(k)
        ckpt = folder/'run'/'latest_model.pth'
        if ckpt.is_file():
            from defixmatch.checkpoint import read_checkpoint
            folder.joinpath('resumed_from').write_text(str(int(read_checkpoint(ckpt).get('it', 0))))
        elif (folder/'resumed_from').exists(): (folder/'resumed_from').unlink()
        return run_one(data, k, work)


CONFIGS = Path(__file__).resolve().parent/'configs'/'fashion_mnist_budget'


def cell_config(k:dict)->str:
    "The `defixmatch-train --config` YAML of the run `k`: the same training from the command line."
    lines = [f"# defixmatch-train --config benchmarks/configs/fashion_mnist_budget/{run_name(k)}.yaml",
             "# the run of benchmarks/fashion_mnist_budget.py with these settings (the results were trained through the Python API)",
             'dataset: fashion_mnist', 'data_dir: ./data', f"img_size: {k['size']}", 'hflip: false',
             f"method: {'fixmatch' if k['method'] == 'complete_case' else k['method']}",
             f"ulb_loss_ratio: {k['lambda_u']}", 'modified_fixmatch: true', 'p_cutoff: 0.95', 'net: LeNet',
             f"num_labels: {k['num_labels']}", f"num_val: {k['num_val']}", f"batch_size: {k['batch']}", f"uratio: {k['uratio']}",
             f"num_train_iter: {k['iterations']}", f"num_eval_iter: {k['eval_every']}", 'eval_batch_size: 1000',
             f"ema_m: {k['ema_m']}", 'lr: 0.03', 'momentum: 0.9', 'weight_decay: 0.0005', f"seed: {k['seed']}",
             'num_workers: 0', 'cpu: true', f"save_name: {run_name(k)}"]
    return '\n'.join(lines) + '\n'


def write_configs(runs, folder:Path=CONFIGS)->list:
    "Write `cell_config` of every run to `folder/run_name.yaml`; the paths."
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in runs:
        p = folder/f'{run_name(k)}.yaml'
        p.write_text(cell_config(k)); paths.append(p)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', type=Path, default=None, help='folder of the result files (default benchmarks/results)')
    p.add_argument('--name', default='fashion_mnist_budget', help='file prefix: NAME_runs.csv, NAME_curves.csv, NAME_runs.json')
    p.add_argument('--work_dir', type=Path, default=None, help='folder of the runs in progress (default: NAME_work in the temporary folder)')
    p.add_argument('--data_dir', default='./data', help="where the idx files are looked for first (see defixmatch.datasets.idx_files)")
    p.add_argument('--labels', nargs='+', type=int, default=None, help='n_l of each part of the grid, validation images included (default 1000 250; --quick: 40 20)')
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    p.add_argument('--seeds', type=int, default=3, help='seeds first_seed..first_seed+S-1 (each its own labelled split)')
    p.add_argument('--first_seed', type=int, default=0)
    p.add_argument('--iterations', type=int, default=4000, help='K, training iterations of every run')
    p.add_argument('--eval_every', type=int, default=250, help='N, iterations between evaluations of the EMA model')
    p.add_argument('--val_frac', type=float, default=0.1, help='fraction of the labelled images held out for validation')
    p.add_argument('--size', type=int, default=28)
    p.add_argument('--batch', type=int, default=16, help='labelled images per step')
    p.add_argument('--uratio', type=int, default=7, help='unlabelled images per labelled image in a step')
    p.add_argument('--ema_m', type=float, default=0.99, help='EMA decay of the evaluated model')
    p.add_argument('--threads', type=int, default=1, help='torch threads of this process')
    p.add_argument('--max_runs', type=int, default=None, help='stop after this many new runs')
    p.add_argument('--quick', action='store_true', help='a tiny grid on generated idx files, in a temporary folder')
    p.add_argument('--configs', type=Path, default=None, metavar='FOLDER',
                   help='write the --config YAML of every run of the grid to FOLDER (e.g. benchmarks/configs/fashion_mnist_budget) and stop')
    a = p.parse_args(argv)
    if a.quick:
        a.out = a.out or Path(tempfile.mkdtemp(prefix='fashion_mnist_budget_quick_'))
        a.seeds, a.iterations, a.eval_every, a.batch, a.uratio = 1, 4, 2, 4, 2
        a.labels = a.labels or [40, 20]
    a.labels = a.labels or [1000, 250]
    out = a.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    work = a.work_dir or Path(tempfile.gettempdir())/f'{a.name}_work'
    runs = [dict(method=m, lambda_u=lam, num_labels=nl, seed=s, num_val=val_count(nl, a.val_frac), iterations=a.iterations,
                 eval_every=a.eval_every, size=a.size, batch=a.batch, uratio=a.uratio, ema_m=a.ema_m)
            for m, lam, nl, s in grid(a.labels, range(a.first_seed, a.first_seed + a.seeds), a.methods)]
    if a.configs is not None:
        for p_ in write_configs(runs, a.configs): print(shown(p_))
        return a.configs
    if a.eval_every > a.iterations: raise SystemExit(f"--eval_every ({a.eval_every}) must be <= --iterations ({a.iterations})")
    if not 0 < a.val_frac < 1: raise SystemExit(f"--val_frac must be between 0 and 1, got {a.val_frac}")

    data, load_s = fm.load_data(a, out)
    runs_csv, curves_csv, side = out/f'{a.name}_runs.csv', out/f'{a.name}_curves.csv', out/f'{a.name}_runs.json'
    g = Grid(runs_csv, KEY, FIELDS, extra={'curves': (curves_csv, CURVE_FIELDS)})
    fixed = dict(iterations=a.iterations, eval_every=a.eval_every, size=a.size, batch=a.batch, uratio=a.uratio, ema_m=a.ema_m)
    budget = dict(fixed, labels=list(a.labels), val_frac=a.val_frac, threads=a.threads, num_workers=0,
                  net='LeNet (in_channels=3)', lambda_u=LAMBDA, p_cutoff=0.95, eval_batch_size=1000,
                  **fm.setup_record(data, a.size),
                  sup_loss='eq. 52: CE of a weak and a strong view', complete_case='the same loss, lambda = 0',
                  curves='validation and test metrics of the EMA model every eval_every iterations (all the test images)')
    args = sys.argv[1:] if argv is None else [str(v) for v in argv]
    entry = dict(command=' '.join(['python', 'benchmarks/fashion_mnist_budget.py', *args]), started=now(), versions=versions(),
                 load_s=round(load_s, 1), pid=os.getpid())
    with locked(runs_csv): record_invocation(side, entry, budget=budget, versions=versions())
    print(f"# {entry['command']}\n# data loaded in {load_s:.1f} s; grid: {len(runs)} runs, already in {shown(runs_csv)}: "
          f"{len(runs) - len(g.todo(runs))}", flush=True)
    label = lambda k, r: (f"{k['method']:>14} n_l={k['num_labels']:<5} seed={k['seed']}  acc={r['acc']:.4f} ce={r['ce']:.4f} "
                          f"(last acc={r['last_acc']:.4f}) best_it={r.get('best_it')} mask={float('nan') if r['mask_ratio'] is None else r['mask_ratio']:.3f} "
                          f"{r['status']} from {r['resumed_from']} {r['wall_s']:.1f}s ({r['ms_per_step']} ms/step) {r['finished']}")
    new = g.run(runs, lambda k: run_held(data, k, work), a.max_runs, label)
    with locked(runs_csv): update_invocation(side, entry, finished=now(), new_runs=new)
    print(f"# {new} new runs; results in {shown(runs_csv)}", flush=True)
    return runs_csv


if __name__ == '__main__': main()
