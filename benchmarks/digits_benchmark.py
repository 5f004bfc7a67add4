"""Complete case, FixMatch, DeFixMatch, Pseudo-label and DePseudo-label on scikit-learn's digits, at CPU scale.

Runs a grid of (method, lambda, labels, seed) at one fixed budget and appends one CSV row per finished run: the
final EMA model's test accuracy, cross-entropy, ECE, worst-class and per-class accuracy, and the wall time. Runs
already in the CSV are skipped, so an interrupted grid resumes where it stopped; `--shard i/n` splits the grid
between processes that append to the same files (under a file lock). The evaluation curve of every run (one row
per evaluation) goes to a second CSV, and the command line, versions and budget to a sidecar JSON.

    python benchmarks/digits_benchmark.py                     # the main table and the lambda sweep
    python benchmarks/digits_benchmark.py --shard 0/2 &       # the same grid in two processes
    python benchmarks/digits_benchmark.py --shard 1/2 &
    python benchmarks/digits_benchmark.py --quick             # a few iterations per method, in a temporary folder
"""
import argparse, contextlib, json, sys, tempfile, time, warnings
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import Grid, RESULTS, locked, record_invocation, update_invocation, versions, shown  # noqa: E402
import grid as _grid  # noqa: E402
METHODS = ('complete_case', 'fixmatch', 'defixmatch', 'pseudolabel', 'depseudolabel')
KEY = ('method', 'lambda_u', 'num_labels', 'seed', 'iterations', 'batch', 'uratio', 'width', 'ema_m')
FIELDS = KEY + ('acc', 'ce', 'ece', 'worst_class_acc', 'per_class_acc', 'mask_ratio', 'mask_ratio_lb',
                'status', 'stopped_at', 'wall_s', 'finished')
CURVE_FIELDS = KEY + ('iter', 'top1_acc', 'cross_entropy', 'ece', 'worst_class_acc', 'sup_loss', 'unsup_loss',
                      'anti_unsup_loss', 'total_loss', 'mask_ratio', 'mask_ratio_lb', 'train_loss')


def grid(methods=METHODS, labels=(50, 100), seeds=range(5), lam=0.5, sweep_methods=('fixmatch', 'defixmatch'),
         sweep_lams=(0.1, 0.25, 0.5, 1.0, 2.0), sweep_labels=50, sweep_seeds=range(3)):
    "The (method, lambda_u, num_labels, seed) of the main table, then of the lambda sweep (duplicates dropped)."
    runs = [(m, 0.0 if m == 'complete_case' else lam, n, s) for n in labels for s in seeds for m in methods]
    runs += [(m, l, sweep_labels, s) for s in sweep_seeds for l in sweep_lams for m in sweep_methods]
    return list(dict.fromkeys(runs))


def key_of(row:dict)->tuple:
    "The identity of a run in the CSV (numbers normalised so that '0.5' and 0.5 match)."
    return _grid.key_of(row, KEY)


def run_one(data, method:str, lambda_u:float, num_labels:int, seed:int, iterations:int, eval_every:int, batch:int,
            uratio:int, width:int, ema_m:float)->tuple:
    "Train one run; return its CSV row and its evaluation curve (list of rows)."
    import torch
    from defixmatch.data import ssl_dataloaders
    from defixmatch.models import SmallCNN
    from defixmatch.learner import ssl_learner
    key = dict(method=method, lambda_u=float(lambda_u), num_labels=num_labels, seed=seed, iterations=iterations,
               batch=batch, uratio=uratio, width=width, ema_m=ema_m)
    start = time.time()
    dls = ssl_dataloaders(data, num_labels=num_labels, batch_size=batch, uratio=uratio, n_iter=eval_every,
                          eval_batch_size=len(data.test_y), seed=seed, num_workers=0, device='cpu')
    torch.manual_seed(seed)
    learn = ssl_learner(dls, SmallCNN(data.num_classes, width=width), method,
                        lambda_u=None if method == 'complete_case' else lambda_u, ema_m=ema_m, save_dir=None)
    status, stopped_at = 'ok', iterations
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: learn.fit_ssl(iterations)
        except FloatingPointError:  # the risk became non-finite: the run is reported as such, not dropped
            status, stopped_at = 'nonfinite', int(learn.iteration)
        names, values = list(learn.recorder.metric_names[1:]), list(learn.recorder.values)  # get_preds resets them
        preds, targs = learn.get_preds(act=lambda x: x)  # the EMA model on the test set, logits
    curve = []
    for vals in values:
        rec = dict(zip(names, vals))
        rec.setdefault('cross_entropy', rec.get('valid_loss'))  # the EMA model's test cross-entropy
        curve.append({**key, **{k: rec.get(k) for k in CURVE_FIELDS if k not in key}})
    status, res = metric_fields(preds, targs, status, data.num_classes)
    last = curve[-1] if curve else {}
    row = {**key, **res,
           'mask_ratio': last.get('mask_ratio'), 'mask_ratio_lb': last.get('mask_ratio_lb'),
           'status': status, 'stopped_at': stopped_at, 'wall_s': round(time.time() - start, 2),
           'finished': datetime.now(timezone.utc).isoformat(timespec='seconds')}
    return row, curve


def metric_fields(preds, # test logits of the final EMA model
                 targs, # test labels
                 status:str, # 'ok', or 'nonfinite' for a run whose risk became non-finite
                 num_classes:int,
                )->tuple:
    "`(status, fields)`: the run's test metrics as CSV fields; a non-finite run is reported with NaN metrics, not dropped."
    import torch
    from defixmatch.metrics import evaluation_metrics
    if status == 'ok' and torch.isfinite(preds).all(): res = evaluation_metrics(preds, targs, num_classes=num_classes)
    else:
        status, res = 'nonfinite', {k: float('nan') for k in ('acc', 'ce', 'ece', 'worst_class_acc')}
        res['per_class_acc'] = [float('nan')] * num_classes
    return status, {**{k: res[k] for k in ('acc', 'ce', 'ece', 'worst_class_acc')},
                    'per_class_acc': json.dumps([round(v, 6) for v in res['per_class_acc']])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', type=Path, default=None, help='folder of the CSVs (default benchmarks/results)')
    p.add_argument('--name', default='digits', help='file prefix: NAME_runs.csv, NAME_curves.csv, NAME_runs.json')
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    p.add_argument('--labels', nargs='+', type=int, default=[50, 100])
    p.add_argument('--seeds', type=int, default=5, help='seeds 0..S-1 of the main table')
    p.add_argument('--lambda_u', type=float, default=0.5, help='lambda of every SSL method in the main table')
    p.add_argument('--sweep_methods', nargs='*', default=['fixmatch', 'defixmatch'], choices=METHODS[1:])
    p.add_argument('--sweep_lambdas', nargs='*', type=float, default=[0.1, 0.25, 0.5, 1.0, 2.0])
    p.add_argument('--sweep_labels', type=int, default=50)
    p.add_argument('--sweep_seeds', type=int, default=3)
    p.add_argument('--iterations', type=int, default=500, help='K, training iterations of every run')
    p.add_argument('--eval_every', type=int, default=50, help='N, iterations between evaluations of the EMA model')
    p.add_argument('--batch', type=int, default=16, help='labelled images per step')
    p.add_argument('--uratio', type=int, default=7, help='unlabelled images per labelled image in a step')
    p.add_argument('--width', type=int, default=16, help='SmallCNN width')
    p.add_argument('--ema_m', type=float, default=0.99)
    p.add_argument('--threads', type=int, default=1, help='torch threads of this process')
    p.add_argument('--shard', default='0/1', help='i/n: run every n-th run of the grid, starting at the i-th')
    p.add_argument('--max_runs', type=int, default=None, help='stop after this many new runs')
    p.add_argument('--quick', action='store_true', help='tiny smoke run (2 labels per class, 4 iterations) in a temporary folder')
    a = p.parse_args(argv)
    if a.quick:
        a.out = a.out or Path(tempfile.mkdtemp(prefix='digits_quick_'))
        a.labels, a.seeds, a.iterations, a.eval_every, a.batch, a.uratio, a.width = [20], 1, 4, 2, 4, 2, 4
        a.sweep_lambdas, a.sweep_seeds, a.sweep_labels = [1.0], 1, 20
    out = a.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    i, n = (int(v) for v in a.shard.split('/'))
    if not 0 <= i < n: raise ValueError(f"--shard must be i/n with 0 <= i < n, got {a.shard}")

    import torch
    torch.set_num_threads(a.threads)
    with contextlib.suppress(RuntimeError): torch.set_num_interop_threads(1)
    warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
    from defixmatch.data import load_dataset
    data = load_dataset('digits')

    runs_csv, curves_csv, side = out/f'{a.name}_runs.csv', out/f'{a.name}_curves.csv', out/f'{a.name}_runs.json'
    budget = dict(iterations=a.iterations, eval_every=a.eval_every, batch=a.batch, uratio=a.uratio, width=a.width,
                  ema_m=a.ema_m, threads=a.threads, num_workers=0, net='SmallCNN', optimiser='SGD nesterov lr=0.03 '
                  'mom=0.9 wd=5e-4, lr*cos(7 pi k/16K)', p_cutoff=0.95, modified_sup_loss=True)
    todo = grid(a.methods, a.labels, range(a.seeds), a.lambda_u, a.sweep_methods, a.sweep_lambdas, a.sweep_labels,
                range(a.sweep_seeds))
    args = sys.argv[1:] if argv is None else list(argv)
    entry = dict(command=' '.join(['python', 'benchmarks/digits_benchmark.py', *args]),
                 started=datetime.now(timezone.utc).isoformat(timespec='seconds'), shard=a.shard, versions=versions())
    with locked(runs_csv):
        record_invocation(side, entry, grid_size=len(todo), budget=budget, versions=versions())
    g = Grid(runs_csv, KEY, FIELDS, extra={'curves': (curves_csv, CURVE_FIELDS)})
    mine = [dict(zip(KEY, (*r, a.iterations, a.batch, a.uratio, a.width, a.ema_m))) for j, r in enumerate(todo) if j % n == i]
    print(f"# {' '.join(sys.argv)}\n# grid: {len(todo)} runs, this shard: {len(mine)}, already in {shown(runs_csv)}: "
          f"{len(mine) - len(g.todo(mine))}", flush=True)
    def one(k):
        row, curve = run_one(data, k['method'], k['lambda_u'], k['num_labels'], k['seed'], a.iterations, a.eval_every,
                             a.batch, a.uratio, a.width, a.ema_m)
        return row, {'curves': curve}
    label = lambda k, row: (f"{k['method']:>14} lambda={k['lambda_u']:<5} labels={k['num_labels']:<4} seed={k['seed']}  "
                            f"acc={row['acc']:.4f} ce={row['ce']:.4f} ece={row['ece']:.4f} worst={row['worst_class_acc']:.3f} "
                            f"{row['status']} {row['wall_s']:.1f}s")
    new = g.run(mine, one, a.max_runs, label)
    with locked(runs_csv):
        update_invocation(side, entry, finished=datetime.now(timezone.utc).isoformat(timespec='seconds'), new_runs=new)
    print(f"# {new} new runs; results in {shown(runs_csv)}", flush=True)
    return runs_csv


if __name__ == '__main__': main()
