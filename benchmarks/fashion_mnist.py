"""The paper's MNIST protocol (Sec. 4.1, App. J) on Fashion-MNIST, at CPU scale, through the Python API.

Two experiments, LeNet on the 28 x 28 images (three equal channels), n_l = 1,000 labelled images of which
`--num_val` (10 %) are held out as a stratified validation set; every run is evaluated on the validation set every
`--eval_every` iterations, `model_best.pth` is the EMA model of best validation accuracy, and the row gives the test
metrics (all 10,000 test images) of that checkpoint beside those of the last one:

* **PL**: Pseudo-label against DePseudo-label over a lambda grid (the paper's Fig. 2, 6, 7: plain cross-entropy on
  one weak view, threshold 0.95, constant lambda), with clean labels and with 20 % label noise (20 % of the labelled
  images' labels, validation included, and 20 % of the test labels replaced by uniform draws, as the paper does; the
  test metrics on the clean test labels are kept beside them); lambda = 0 is the complete case;
* **FM**: FixMatch against DeFixMatch (lambda 0.5, the modified supervised loss of eq. 52 on a weak and a strong
  view, threshold 0.95) and the complete case (the same loss, lambda = 0), clean labels.
* **AT** (not in the default grid: `--exp AT`): the adaptive-threshold methods against their debiased versions
  (FlexMatch, FreeMatch, SoftMatch with their CIFAR-10 defaults, lambda 0.5, the supervised loss of FM), with clean
  labels and with the label noise of PL.

Every finished run appends one row to NAME_runs.csv and its validation curve (with the mask ratio) to
NAME_curves.csv; runs already there are skipped, so the grid resumes where it stopped (a run that is stopped midway
starts again). The command lines, versions and budget go to NAME_runs.json.

    python benchmarks/fashion_mnist.py                        # the whole grid, seed by seed
    python benchmarks/fashion_mnist.py --exp PL --seeds 3     # a part of it
    python benchmarks/fashion_mnist.py --exp AT --seeds 3     # the adaptive-threshold methods
    python benchmarks/fashion_mnist.py --quick                # a tiny grid on generated data, in a temporary folder
"""
import argparse, contextlib, json, sys, tempfile, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import Grid, RESULTS, locked, record_invocation, update_invocation, versions, now, shown  # noqa: E402

LAMBDAS = (0.3, 1., 3., 10.)  # with lambda = 0 (the complete case): five values from 0 to 10
NOISES = (0., 0.2)
LAMBDA_FM = 0.5
ADAPTIVE = ('flexmatch', 'deflexmatch', 'freematch', 'defreematch', 'softmatch', 'desoftmatch')
KEY = ('exp', 'method', 'lambda_u', 'noise', 'seed', 'iterations', 'eval_every', 'num_labels', 'num_val', 'size',
       'batch', 'uratio', 'ema_m')
METRICS = ('acc', 'ce', 'ece', 'worst_class_acc')
FIELDS = KEY + METRICS + ('per_class_acc', 'best_it', 'best_val_acc') + tuple(f'last_{m}' for m in METRICS) + \
         tuple(f'clean_{m}' for m in METRICS) + tuple(f'clean_last_{m}' for m in METRICS) + \
         ('mask_ratio', 'mask_ratio_max', 'status', 'stopped_at', 'wall_s', 'ms_per_step', 'finished')
CURVE_FIELDS = KEY + ('iter', 'val_acc', 'val_ce', 'val_ece', 'sup_loss', 'unsup_loss', 'anti_unsup_loss', 'total_loss',
                      'mask_ratio', 'mask_ratio_lb', 'train_loss')


def grid(seeds=range(5), exps=('PL', 'FM'), lambdas=LAMBDAS, noises=NOISES)->list:
    "(exp, method, lambda_u, noise, seed) of every run, seed by seed (a stopped grid leaves whole seeds behind it)."
    runs = []
    for s in seeds:
        if 'PL' in exps:
            for nz in noises:
                runs.append(('PL', 'complete_case', 0., nz, s))
                for lam in lambdas: runs += [('PL', 'pseudolabel', lam, nz, s), ('PL', 'depseudolabel', lam, nz, s)]
        if 'FM' in exps:
            runs += [('FM', 'complete_case', 0., 0., s), ('FM', 'fixmatch', LAMBDA_FM, 0., s), ('FM', 'defixmatch', LAMBDA_FM, 0., s)]
        if 'AT' in exps: runs += [('AT', m, LAMBDA_FM, nz, s) for nz in noises for m in ADAPTIVE]
    return runs


def build(data, k:dict, save_dir:Path):
    "The loaders and the learner of the run `k`, its checkpoints in `save_dir`."
    import torch
    from defixmatch.data import ssl_dataloaders
    from defixmatch.models import get_model
    from defixmatch.learner import ssl_learner
    from defixmatch.methods import make_method
    dls = ssl_dataloaders(data, num_labels=k['num_labels'], batch_size=k['batch'], uratio=k['uratio'], n_iter=k['eval_every'],
                          eval_batch_size=1000, seed=k['seed'], num_workers=0, device='cpu', num_val=k['num_val'],
                          label_noise=k['noise'], test_label_noise=k['noise'])
    if k['exp'] == 'PL':  # the paper's Fig. 2 / 7: plain cross-entropy on one weak view; lambda = 0 is the complete case
        meth = make_method('pseudolabel' if k['method'] == 'complete_case' else k['method'], lambda_u=k['lambda_u'],
                           modified=False, p_cutoff=0.95)
    elif k['exp'] == 'FM':  # eq. 52 on a weak and a strong view; lambda = 0 is the complete case
        meth = make_method(k['method'], lambda_u=k['lambda_u'], modified=True, p_cutoff=0.95)
    else:                   # AT: the same loss, each method's own threshold rule and defaults
        meth = make_method(k['method'], lambda_u=k['lambda_u'], modified=True)
    torch.manual_seed(k['seed'])
    model = get_model('LeNet', data.num_classes, in_channels=3, img_size=k['size'])
    learn = ssl_learner(dls, model, meth, ema_m=k['ema_m'], save_dir=save_dir, save_name='run')
    return dls, learn


def clean_test_dl(data):
    "The test set with its own (clean) labels, read as the loaders read it."
    from defixmatch.data import eval_dataloader
    return eval_dataloader(data.test_x, data.test_y, data.classes, data.mean, data.std, bs=1000, device='cpu')


def run_one(data, k:dict, clean_dl=None)->tuple:
    "Train the run `k`; its CSV row and its validation curve."
    import math
    from defixmatch.learner import ssl_test_metrics
    start = time.time()
    with tempfile.TemporaryDirectory(prefix='fmnist_run_') as tmp:
        dls, learn = build(data, k, Path(tmp))
        status, stopped_at = 'ok', k['iterations']
        with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            t0 = time.time()
            try: learn.fit_ssl(k['iterations'], num_eval_iter=k['eval_every'])
            except FloatingPointError: status, stopped_at = 'nonfinite', int(learn.iteration)  # reported, not dropped
            fit_s = time.time() - t0
            names, values = list(learn.recorder.metric_names[1:]), list(learn.recorder.values)  # get_preds resets them
            res = ssl_test_metrics(learn) if status == 'ok' else None
            clean = ssl_test_metrics(learn, dl=clean_dl) if status == 'ok' and k['noise'] and clean_dl is not None else res
    curve = []
    for i, vals in enumerate(values):
        r = dict(zip(names, vals))
        c = {f: r.get(f) for f in CURVE_FIELDS if f in r}
        c.update(iter=min((i + 1) * k['eval_every'], k['iterations']), val_acc=r.get('top1_acc'), val_ce=r.get('valid_loss'),
                 val_ece=r.get('ece'))
        curve.append(c)
    row = dict(status=status, stopped_at=stopped_at, wall_s=round(time.time() - start, 2),
               ms_per_step=round(1000 * fit_s / max(stopped_at, 1), 2), finished=now())
    masks = [c['mask_ratio'] for c in curve if c.get('mask_ratio') is not None]
    row.update(mask_ratio=masks[-1] if masks else None, mask_ratio_max=max(masks) if masks else None)
    nan = float('nan')
    for pre, r in (('', res), ('clean_', clean)):
        best = (r or {}).get('best') or {}
        last = (r or {}).get('last') or {}
        row.update({f'{pre}{m}': best.get(m, nan) for m in METRICS})
        row.update({f'{pre}last_{m}': last.get(m, nan) for m in METRICS})
    if res and res['best']:
        row.update(per_class_acc=json.dumps([round(v, 6) for v in res['best']['per_class_acc']]),
                   best_it=res['best']['iteration'], best_val_acc=res['best']['selected_on'])
    if status == 'ok' and not all(math.isfinite(row[m]) for m in METRICS): row['status'] = 'nonfinite'
    return row, {'curves': curve}


def load_data(a, out:Path):
    "Torch on `a.threads` threads, then Fashion-MNIST from `a.data_dir` (with `a.quick`, small idx files written in `out/idx`); the data and the seconds it took."
    import torch
    torch.set_num_threads(a.threads)
    with contextlib.suppress(RuntimeError): torch.set_num_interop_threads(1)
    warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
    from defixmatch.data import load_dataset
    t = time.time()
    if a.quick:
        from defixmatch.datasets import load_idx_dataset
        a.data_dir = str(out/'idx')
        _write_quick_idx(Path(a.data_dir))
        data = load_idx_dataset('fashion_mnist', a.data_dir, size=a.size)
    else: data = load_dataset('fashion_mnist', a.data_dir, size=a.size)
    return data, time.time() - t

def setup_record(data, size:int)->dict:
    "What every Fashion-MNIST grid records of its data, optimiser and checkpoint selection."
    return dict(data=f"fashion_mnist: {len(data.train_y)} train / {len(data.test_y)} test, {size}x{size}, hflip=False",
                optimiser='SGD nesterov lr=0.03 mom=0.9 wd=5e-4 (not on BatchNorm), lr*cos(7 pi k/16K)',
                selection='model_best.pth at the best validation accuracy (first iteration reaching it)')

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', type=Path, default=None, help='folder of the result files (default benchmarks/results)')
    p.add_argument('--name', default='fashion_mnist', help='file prefix: NAME_runs.csv, NAME_curves.csv, NAME_runs.json')
    p.add_argument('--data_dir', default='./data', help="where the idx files are looked for first (see defixmatch.datasets.idx_files)")
    p.add_argument('--exp', nargs='+', default=['PL', 'FM'], choices=['PL', 'FM', 'AT'])
    p.add_argument('--methods', nargs='+', default=None, help='only these methods (default: all of each experiment)')
    p.add_argument('--seeds', type=int, default=5, help='seeds 0..S-1 (each its own labelled split)')
    p.add_argument('--first_seed', type=int, default=0, help='seeds first_seed..first_seed+S-1 (a pilot uses others than the grid)')
    p.add_argument('--lambdas', nargs='+', type=float, default=list(LAMBDAS), help='lambdas of PL besides 0')
    p.add_argument('--noises', nargs='+', type=float, default=list(NOISES), help='label noise of PL and AT')
    p.add_argument('--iterations', type=int, default=2000, help='K, training iterations of every run')
    p.add_argument('--eval_every', type=int, default=100, help='N, iterations between validations of the EMA model')
    p.add_argument('--num_labels', type=int, default=1000, help='n_l, validation images included')
    p.add_argument('--num_val', type=int, default=100, help='labelled images held out for validation')
    p.add_argument('--size', type=int, default=28, help='side of the images (28: as stored)')
    p.add_argument('--batch', type=int, default=32, help='labelled images per step')
    p.add_argument('--uratio', type=int, default=7, help='unlabelled images per labelled image in a step')
    p.add_argument('--ema_m', type=float, default=0.99, help='EMA decay of the evaluated model')
    p.add_argument('--threads', type=int, default=1, help='torch threads of this process')
    p.add_argument('--max_runs', type=int, default=None, help='stop after this many new runs')
    p.add_argument('--quick', action='store_true', help='a tiny grid on generated idx files, in a temporary folder')
    a = p.parse_args(argv)
    if a.quick:
        a.out = a.out or Path(tempfile.mkdtemp(prefix='fashion_mnist_quick_'))
        a.seeds, a.iterations, a.eval_every, a.num_labels, a.num_val, a.batch, a.uratio = 1, 4, 2, 40, 10, 4, 2
        a.lambdas, a.size = [1.], 28
    out = a.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    if a.eval_every > a.iterations: raise ValueError(f"--eval_every ({a.eval_every}) must be <= --iterations ({a.iterations})")

    data, load_s = load_data(a, out)
    runs_csv, curves_csv, side = out/f'{a.name}_runs.csv', out/f'{a.name}_curves.csv', out/f'{a.name}_runs.json'
    g = Grid(runs_csv, KEY, FIELDS, extra={'curves': (curves_csv, CURVE_FIELDS)})
    fixed = dict(iterations=a.iterations, eval_every=a.eval_every, num_labels=a.num_labels, num_val=a.num_val,
                 size=a.size, batch=a.batch, uratio=a.uratio, ema_m=a.ema_m)
    runs = [dict(zip(('exp', 'method', 'lambda_u', 'noise', 'seed'), r), **fixed)
            for r in grid(range(a.first_seed, a.first_seed + a.seeds), a.exp, tuple(a.lambdas), tuple(a.noises))]
    if a.methods: runs = [k for k in runs if k['method'] in a.methods]
    budget = dict(fixed, threads=a.threads, num_workers=0, net='LeNet (in_channels=3)', lambdas_pl=[0.] + list(a.lambdas),
                  noises_pl=list(a.noises), lambda_fm=LAMBDA_FM, p_cutoff=0.95, eval_batch_size=1000,
                  **setup_record(data, a.size),
                  sup_loss_pl='plain CE, one weak view', sup_loss_fm='eq. 52: CE of a weak and a strong view',
                  noise='label_noise and test_label_noise of ssl_dataloaders (uniform labels, seeded by the split seed)')
    args = sys.argv[1:] if argv is None else [str(v) for v in argv]
    entry = dict(command=' '.join(['python', 'benchmarks/fashion_mnist.py', *args]), started=now(), versions=versions(),
                 load_s=round(load_s, 1))
    if any(k['exp'] == 'AT' for k in runs):  # the hyper-parameters of the adaptive methods are their defaults: record them
        from defixmatch.methods import method_class
        entry['hyperparams_at'] = {m: {n: h.default for n, h in method_class(m).hyperparams().items()
                                       if n not in ('lambda_u', 'modified', 'lambda_rampup')}
                                   for m in dict.fromkeys(k['method'] for k in runs if k['exp'] == 'AT')}
    with locked(runs_csv): record_invocation(side, entry, budget=budget, versions=versions())
    print(f"# {entry['command']}\n# data loaded in {load_s:.1f} s; grid: {len(runs)} runs, already in {shown(runs_csv)}: "
          f"{len(runs) - len(g.todo(runs))}", flush=True)
    clean_dl = clean_test_dl(data)
    label = lambda k, r: (f"{k['exp']} {k['method']:>14} lambda={k['lambda_u']:<4g} noise={k['noise']:<4g} seed={k['seed']}  "
                          f"acc={r['acc']:.4f} ce={r['ce']:.4f} ece={r['ece']:.4f} (last acc={r['last_acc']:.4f}) "
                          f"best_it={r.get('best_it')} mask={r['mask_ratio'] if r['mask_ratio'] is not None else float('nan'):.3f} "
                          f"{r['status']} {r['wall_s']:.1f}s ({r['ms_per_step']} ms/step)")
    new = g.run(runs, lambda k: run_one(data, k, clean_dl), a.max_runs, label)
    with locked(runs_csv): update_invocation(side, entry, finished=now(), new_runs=new)
    print(f"# {new} new runs; results in {shown(runs_csv)}", flush=True)
    return runs_csv


def _write_quick_idx(folder:Path, n=(300, 50), seed=0):
    "Small idx files with learnable classes (a bright square whose place is the class) for --quick."
    import gzip, struct
    import numpy as np
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for s, k in zip(('train', 't10k'), n):
        y = (np.arange(k) % 10).astype(np.uint8)
        x = rng.integers(0, 60, (k, 28, 28), dtype=np.uint8)
        for i, c in enumerate(y): x[i, 2 + 2 * c:8 + 2 * c, 4:24] = 255
        for arr, kind in ((x, 'images-idx3'), (y, 'labels-idx1')):
            with gzip.open(folder/f'{s}-{kind}-ubyte.gz', 'wb') as f:
                f.write(bytes([0, 0, 8, arr.ndim]) + struct.pack(f'>{arr.ndim}I', *arr.shape) + arr.tobytes())


if __name__ == '__main__': main()
