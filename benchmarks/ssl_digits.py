"""The consistency methods and the lambda grid of Pseudo-label on scikit-learn's digits, long enough for the SSL term to act.

Five experiments at one CPU budget (LeNet on 16x16 digits, `--iterations` steps, one thread, no loader workers):

* **A**: the Pi-model, Mean Teacher, VAT and VAT + EntMin against their debiased versions and the complete case
  (lambda = 0: the same supervised loss on two weak views), lambda ramped up over the first 40% of training;
* **B**: Pseudo-label against DePseudo-label over a lambda grid (the paper's Fig. 2 and Fig. 7: plain cross-entropy
  on one weak view, constant lambda), with clean labels and with 20% of the labelled images' labels replaced by
  uniform draws; lambda = 0 is the complete case; DePseudo-label with `AdaptiveLambda` beside them;
* **D**: for the complete case, the Pi-model and VAT, biased and debiased (runs of A, seeds 0-4, re-run): the trained
  network's surrogate H on the labelled images, on the other training images and on the test images, to see whether
  the debiased methods' subtracted term is pushed up on the very images it is computed on;
* **E**: VAT and DeVAT at smaller lambdas than A's (0.03 and 0.1, ramped as in A), seeds 0-4: does the debiased
  version's loss shrink with lambda?
* **C**: time per step (loader and training step) of the Pi-model with the views it reads, ('weak', 'weak'), against
  the same run with a strong (RandAugment) second view, interleaved block by block.

Every finished run of A, B and E appends one row (the final EMA model on the 500 test images) to NAME_runs.csv and its
evaluation curve to NAME_curves.csv; runs already there are skipped, so the grid resumes where it stopped. A run
whose risk becomes non-finite is recorded with status 'nonfinite', not dropped. C writes NAME_views.csv, D (three rows
per run, resuming too) NAME_probe.csv. The
command lines, versions, commit and budget go to NAME_runs.json.

    python benchmarks/ssl_digits.py                  # C, then A (seeds 0-4), then B (seeds 0-2)
    python benchmarks/ssl_digits.py --exp A          # A only
    python benchmarks/ssl_digits.py --exp D          # D only (H by split, seeds 0-4)
    python benchmarks/ssl_digits.py --exp E --name ssl_digits_vat_lambda   # E in its own files
    python benchmarks/ssl_digits.py --quick          # a tiny grid in a temporary folder (seconds)
    python benchmarks/ssl_digits.py --exp B --shard 0 2 & python benchmarks/ssl_digits.py --exp B --shard 1 2
                                                     # B in two processes, each with its half of the grid
"""
import argparse, contextlib, math, sys, tempfile, time, warnings
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import Grid, RESULTS, locked, record_invocation, update_invocation, append_rows, check_header, versions, shown  # noqa: E402
import grid as _grid  # noqa: E402
from digits_benchmark import metric_fields  # noqa: E402

CONSISTENCY = ('pimodel', 'meanteacher', 'vat', 'vatentmin')
DEBIASED = {'pimodel': 'depimodel', 'meanteacher': 'demeanteacher', 'vat': 'devat', 'vatentmin': 'vatdeentmin',
            'pseudolabel': 'depseudolabel'}
METHODS_A = ('complete_case',) + tuple(m for c in CONSISTENCY for m in (c, DEBIASED[c]))
# lambda of each consistency method (and VAT + EntMin's VAT weight), the same for its debiased version: chosen once on
# a pilot run (seed 99, not one of the grid's seeds), see nbs/93_ssl_methods_digits.ipynb
LAMBDA_A = {'pimodel': 20., 'meanteacher': 8., 'vat': 0.3, 'vatentmin': 0.1}
LAMBDA_VAT = 0.3
RAMP_PCT = 0.4
LAMBDAS_B = (0.1, 0.3, 1., 3., 10.)
LAMBDAS_E = (0.03, 0.1)  # E: VAT and DeVAT below A's lambda (0.3)
NOISES_B = (0., 0.2)
KEY = ('exp', 'method', 'lambda_u', 'lam_mode', 'noise', 'seed', 'iterations', 'num_labels', 'size', 'batch', 'uratio',
       'ema_m')
FIELDS = KEY + ('acc', 'ce', 'ece', 'worst_class_acc', 'per_class_acc', 'mask_ratio', 'unsup_share', 'lambda_end',
                'status', 'stopped_at', 'wall_s', 'ms_per_step', 'finished')
CURVE_FIELDS = KEY + ('iter', 'top1_acc', 'cross_entropy', 'ece', 'worst_class_acc', 'sup_loss', 'unsup_loss',
                      'anti_unsup_loss', 'total_loss', 'mask_ratio', 'mask_ratio_lb', 'lambda_logged', 'unsup_share',
                      'train_loss')  # lambda_logged: the lambda of the evaluation period's last step (lambda_u is the run's nominal one)
PROBE_FIELDS = ('method', 'lambda_u', 'seed', 'iterations', 'ema_acc', 'split', 'n', 'h_mean', 'h_median', 'ce', 'acc')
PROBE_METHODS = ('complete_case', 'pimodel', 'depimodel', 'vat', 'devat')
VIEW_FIELDS = ('views', 'block', 'steps', 'wall_s', 'cpu_s', 'loader_wall_s', 'loader_cpu_s', 'batch', 'uratio', 'size')


def grid_a(seeds=range(5))->list:
    "(exp, method, lambda_u, lam_mode, noise, seed) of experiment A, seed by seed."
    runs = []
    for s in seeds:
        runs.append(('A', 'complete_case', 0., 'fixed', 0., s))
        for m in CONSISTENCY: runs += [('A', m, LAMBDA_A[m], 'rampup', 0., s), ('A', DEBIASED[m], LAMBDA_A[m], 'rampup', 0., s)]
    return runs


def lambda_a(method:str)->float:
    "Experiment A's lambda of `method`, biased or debiased (0 for the complete case)."
    if method == 'complete_case': return 0.
    return LAMBDA_A[method if method in LAMBDA_A else {v: k for k, v in DEBIASED.items()}[method]]


def grid_e(seeds=range(5), lambdas=LAMBDAS_E)->list:
    "(exp, method, lambda_u, lam_mode, noise, seed) of experiment E: VAT and DeVAT at each lambda, ramped as in A."
    return [('E', m, lam, 'rampup', 0., s) for s in seeds for lam in lambdas for m in ('vat', 'devat')]


def grid_b(seeds=range(3), lambdas=LAMBDAS_B, noises=NOISES_B)->list:
    "(exp, method, lambda_u, lam_mode, noise, seed) of experiment B, seed by seed: lambda 0, the grid, adaptive lambda."
    runs = []
    for s in seeds:
        for nz in noises:
            runs.append(('B', 'complete_case', 0., 'fixed', nz, s))
            for lam in lambdas: runs += [('B', 'pseudolabel', lam, 'fixed', nz, s), ('B', 'depseudolabel', lam, 'fixed', nz, s)]
            runs.append(('B', 'depseudolabel', 0., 'adaptive', nz, s))
    return runs


def key_of(row:dict)->tuple:
    "The identity of a run in the CSV (numbers normalised so that '0.5' and 0.5 match)."
    return _grid.key_of(row, KEY)


def done_keys(path:Path)->set: return {key_of(r) for r in _grid.read_rows(path)}


def noisy_labels(y, lb_idx, frac:float, seed:int, num_classes:int):
    "A copy of `y` where `round(frac * len(lb_idx))` labelled images, drawn by `seed`, get a uniformly drawn class."
    import torch
    y = y.clone()
    k = round(frac * len(lb_idx))
    if k == 0: return y
    g = torch.Generator().manual_seed(10_000 + seed)
    pick = lb_idx[torch.randperm(len(lb_idx), generator=g)[:k]]
    y[pick] = torch.randint(num_classes, (k,), generator=g)
    return y


def build(data, exp:str, method:str, lambda_u:float, lam_mode:str, noise:float, seed:int, cfg:dict):
    "The learner of one run and the callbacks of its fit."
    import torch
    from fastai.callback.schedule import ParamScheduler
    from defixmatch.data import ssl_dataloaders
    from defixmatch.models import get_model
    from defixmatch.learner import ssl_learner
    from defixmatch.methods import make_method
    from defixmatch.consistency import SchedSigmoidRampup
    from defixmatch.diagnostics import AdaptiveLambda
    dls = ssl_dataloaders(data, num_labels=cfg['num_labels'], batch_size=cfg['batch'], uratio=cfg['uratio'],
                          n_iter=cfg['eval_every'], eval_batch_size=len(data.test_y), seed=seed, num_workers=0, device='cpu')
    if noise: dls.train.dataset.y = noisy_labels(data.train_y, dls.lb_idx, noise, seed, data.num_classes)
    if exp in ('A', 'E'):
        # the complete case of A is any of the four at lambda = 0: L on two weak views, the consistency term logged
        meth = make_method("pimodel" if method == "complete_case" else method, lambda_u=lambda_u, modified=True, lambda_rampup=0)  # ramped below
        if method.startswith('vat'): meth.lambda_vat = LAMBDA_VAT
    else:
        # the paper's Fig. 2 / Fig. 7: plain cross-entropy (no eq. 52), one weak view, threshold 0.95
        meth = make_method('pseudolabel' if method == 'complete_case' else method, lambda_u=lambda_u, modified=False,
                           p_cutoff=0.95)
        # neither L nor H reads a second view: the method asks the loader for the weak view only
    torch.manual_seed(seed)
    model = get_model('LeNet', data.num_classes, in_channels=3, img_size=cfg['size'])
    learn = ssl_learner(dls, model, meth, ema_m=cfg['ema_m'], save_dir=None)
    cbs = []
    if lam_mode == 'rampup':
        sched = {'lambda_u': SchedSigmoidRampup(lambda_u, RAMP_PCT)}
        if method.startswith('vat') and 'entmin' in method: sched['lambda_vat'] = SchedSigmoidRampup(LAMBDA_VAT, RAMP_PCT)
        cbs.append(ParamScheduler(sched))
    elif lam_mode == 'adaptive': cbs.append(AdaptiveLambda(every=16, beta=0.9, lo=0., hi=10.))
    return learn, cbs


def unsup_share(rec:dict, debiased:bool)->float:
    "Share of the unlabelled term in the risk: u / (L + u), u = lambda H_u (+ VAT's term); the debiased anti-term added back."
    try:
        u = rec['total_loss'] - rec['sup_loss'] + (rec['lambda_u'] * rec['anti_unsup_loss'] if debiased else 0.)
        return u / (rec['sup_loss'] + u)
    except (KeyError, TypeError, ZeroDivisionError): return float('nan')


def run_one(data, run:tuple, cfg:dict, keep_learner:bool=False)->tuple:
    "Train one run; return its CSV row and its evaluation curve (list of rows), and its learner if `keep_learner`."
    import torch
    exp, method, lambda_u, lam_mode, noise, seed = run
    key = dict(zip(KEY, (exp, method, float(lambda_u), lam_mode, float(noise), seed, cfg['iterations'], cfg['num_labels'],
                         cfg['size'], cfg['batch'], cfg['uratio'], cfg['ema_m'])))
    start = time.time()
    learn, cbs = build(data, exp, method, lambda_u, lam_mode, noise, seed, cfg)
    debiased = learn.ssl_method.debiased
    status, stopped_at = 'ok', cfg['iterations']
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: learn.fit_ssl(cfg['iterations'], num_eval_iter=cfg['eval_every'], cbs=cbs)
        except FloatingPointError:  # the risk became non-finite: the run is reported as such, not dropped
            status, stopped_at = 'nonfinite', int(learn.iteration)
        fit_s = time.time() - t0
        names, values = list(learn.recorder.metric_names[1:]), list(learn.recorder.values)  # get_preds resets them
        preds, targs = learn.get_preds(act=lambda x: x)  # the EMA model on the test set, logits
    curve = []
    for i, vals in enumerate(values):
        rec = dict(zip(names, vals))
        rec['cross_entropy'] = rec.get('valid_loss')  # the EMA model's test cross-entropy
        rec['iter'] = min((i + 1) * cfg['eval_every'], cfg['iterations'])
        rec['unsup_share'] = unsup_share(rec, debiased)
        rec['lambda_logged'] = rec.get('lambda_u')
        curve.append({**key, **{k: rec.get(k) for k in CURVE_FIELDS if k not in key}})
    status, res = metric_fields(preds, targs, status, data.num_classes)
    last = curve[-1] if curve else {}
    row = {**key, **res,
           'mask_ratio': last.get('mask_ratio'), 'unsup_share': last.get('unsup_share'),
           'lambda_end': learn.ssl_method.hyper('lambda_u'), 'status': status, 'stopped_at': stopped_at,
           'wall_s': round(time.time() - start, 2), 'ms_per_step': round(1000 * fit_s / max(stopped_at, 1), 2),
           'finished': datetime.now(timezone.utc).isoformat(timespec='seconds')}
    return (row, curve, learn) if keep_learner else (row, curve)


def h_by_split(learn, data, seed:int)->list:
    """The trained (not EMA) network's per-image surrogate H of `learn`'s method, cross-entropy and accuracy on three
    sets of images: the labelled images, the training images that are not labelled, and the test images; each image
    under two weak views drawn by `seed` (the views a consistency method compares). One dict per set."""
    import torch, torch.nn.functional as F
    dls, meth, model = learn.dls, learn.ssl_method, learn.model
    lb = torch.as_tensor(dls.lb_idx)
    rest = torch.ones(len(data.train_y), dtype=torch.bool); rest[lb] = False
    sets = {'labelled': (data.train_x[lb], data.train_y[lb]),
            'unlabelled only': (data.train_x[rest], data.train_y[rest]),
            'test': (data.test_x, data.test_y)}
    model.eval()
    out = []
    for name, (x, y) in sets.items():
        g = torch.Generator().manual_seed(seed)
        xs = tuple(dls.train.weak(x, generator=g) for _ in range(2))
        with torch.no_grad(): logits = tuple(model(v) for v in xs)
        h = meth.per_image_h(logits, xs)[0].detach().float()
        ce = F.cross_entropy(logits[0], y, reduction='none')
        out.append(dict(split=name, n=len(y), h_mean=float(h.mean()), h_median=float(h.median()), ce=float(ce.mean()),
                        acc=float((logits[0].argmax(1) == y).float().mean())))
    return out


def time_views(data, cfg:dict, blocks:int=3, steps:int=60)->list:
    """Per-step wall and CPU time of the Pi-model fed ('weak', 'weak') and ('weak', 'strong'), interleaved block by block:
    the loader alone (making the batches) and the loader with the training step."""
    import torch
    from defixmatch.data import ssl_dataloaders
    rows = []
    order = [('weak', 'weak'), ('weak', 'strong')]
    for b in range(blocks + 1):  # block 0 warms up and is dropped
        for views in (order if b % 2 else order[::-1]):
            dls = ssl_dataloaders(data, num_labels=cfg['num_labels'], batch_size=cfg['batch'], uratio=cfg['uratio'],
                                  n_iter=steps, eval_batch_size=len(data.test_y), seed=b, num_workers=0, device='cpu')
            dls.train.views = views
            w, c = time.perf_counter(), time.process_time()
            for _ in dls.train: pass
            lw, lc = time.perf_counter() - w, time.process_time() - c
            learn, _ = build(data, 'A', 'pimodel', LAMBDA_A['pimodel'], 'fixed', 0., b, {**cfg, 'eval_every': steps})
            learn.dls.train.views = views  # after the learner, which sets the method's own views
            with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
                warnings.simplefilter('ignore')
                w, c = time.perf_counter(), time.process_time()
                learn.fit_ssl(steps, num_eval_iter=steps)
                fw, fc = time.perf_counter() - w, time.process_time() - c
            if b: rows.append(dict(views='+'.join(views), block=b, steps=steps, wall_s=round(fw, 4), cpu_s=round(fc, 4),
                                   loader_wall_s=round(lw, 4), loader_cpu_s=round(lc, 4), batch=cfg['batch'],
                                   uratio=cfg['uratio'], size=cfg['size']))
    return rows


def replay(data, method:str, seed:int, cfg:dict, start:int=0, out=print):
    """Re-run run (A, `method`, seed) and print, at every step from `start` until it ends or stops, the step's L, H on
    the unlabelled and on the labelled images, the risk, lambda, the largest |logit| and the norm of the weights."""
    import torch
    from fastai.callback.core import Callback
    class _Trace(Callback):
        order = 100
        def after_loss(self):
            it = self.learn.iteration
            if not self.training or it < start: return
            sup, hu, hl, total = self.learn.ssl_method.last[:4].tolist()
            w = sum(float(p.detach().norm() ** 2) for p in self.learn.model.parameters()) ** 0.5
            out(f"step {it}: L {sup:.4g}  H_u {hu:.4g}  H_l {hl:.4g}  risk {total:.4g}  lambda "
                f"{self.learn.ssl_method.hyper('lambda_u'):.4f}  max|logit| {float(self.learn.pred.detach().abs().max()):.4g}  |w| {w:.4g}")
    lam = lambda_a(method)
    learn, cbs = build(data, 'A', method, lam, 'fixed' if method == 'complete_case' else 'rampup', 0., seed, cfg)
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: learn.fit_ssl(cfg['iterations'], num_eval_iter=cfg['eval_every'], cbs=cbs + [_Trace()])
        except FloatingPointError as e: out(f"stopped: {e}")


def trace_lambda_opt(data, lambda_u:float, noise:float, seed:int, cfg:dict, out=print):
    """Re-run DePseudo-label of B at a fixed `lambda_u` with `LambdaOptLogger` on every step, and print, per evaluation
    period, the mean and spread of the one-batch plug-in lambda_opt (Theorem 3.1), the share of steps where it is
    undefined, and the correlation of L and H on the labelled images."""
    from defixmatch.diagnostics import LambdaOptLogger
    learn, cbs = build(data, 'B', 'depseudolabel', lambda_u, 'fixed', noise, seed, cfg)
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit_ssl(cfg['iterations'], num_eval_iter=cfg['eval_every'], cbs=cbs + [LambdaOptLogger(every=1)])
    names = list(learn.recorder.metric_names[1:])
    for i, v in enumerate(learn.recorder.values):
        r = dict(zip(names, v))
        out(f"iter {(i + 1) * cfg['eval_every']}: lambda_opt mean {r['lambda_opt']:+.4f} sd {r['lambda_opt_std']:.4f} "
            f"undefined {r['lambda_opt_nan']:.2f}  rho(L,H) {r['rho_lh']:+.3f}  mask ratio {r['mask_ratio']:.3f}  "
            f"labelled mask ratio {r['mask_ratio_lb']:.3f}")


def t_ci(x, level:float=0.95)->float:
    "Half-width of the Student-t confidence interval of the mean of `x` (NaNs dropped; NaN for fewer than 2 values)."
    import numpy as np
    from scipy import stats
    x = np.asarray(x, dtype=float); x = x[~np.isnan(x)]
    return float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float('nan')


def paired(wide, a:str, b:str, metric:str)->dict:
    """Seed-paired difference `a - b` of `metric` in `wide` (rows: seeds; columns: (metric, method)): its mean, 95%
    t-interval, how many seeds are positive, and how many seeds it is taken over (seeds where both finished)."""
    import numpy as np
    d = (wide[(metric, a)] - wide[(metric, b)]).to_numpy(dtype=float)
    d = d[~np.isnan(d)]
    return dict(mean=float(d.mean()) if len(d) else float('nan'), ci=t_ci(d), pos=int((d > 0).sum()), n=len(d))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', type=Path, default=None, help='folder of the result files (default benchmarks/results)')
    p.add_argument('--name', default='ssl_digits', help='file prefix: NAME_runs.csv, NAME_curves.csv, NAME_views.csv, NAME_runs.json')
    p.add_argument('--exp', nargs='+', default=['C', 'A', 'B'], choices=['A', 'B', 'C', 'D', 'E'], help='experiments, in this order')
    p.add_argument('--seeds_a', type=int, default=5, help='seeds 0..S-1 of experiment A')
    p.add_argument('--seeds_b', type=int, default=3, help='seeds 0..S-1 of experiment B')
    p.add_argument('--lambdas_b', nargs='+', type=float, default=list(LAMBDAS_B), help='lambda grid of experiment B')
    p.add_argument('--lambdas_e', nargs='+', type=float, default=list(LAMBDAS_E), help='lambda grid of experiment E')
    p.add_argument('--iterations', type=int, default=1500, help='K, training iterations of every run')
    p.add_argument('--eval_every', type=int, default=100, help='N, iterations between evaluations of the EMA model')
    p.add_argument('--num_labels', type=int, default=100)
    p.add_argument('--size', type=int, default=16, help='side of the upsampled digits')
    p.add_argument('--batch', type=int, default=16, help='labelled images per step')
    p.add_argument('--uratio', type=int, default=7, help='unlabelled images per labelled image in a step')
    p.add_argument('--ema_m', type=float, default=0.99, help='EMA decay of the evaluated model (and Mean Teacher)')
    p.add_argument('--view_steps', type=int, default=60, help='C: steps per timed block')
    p.add_argument('--view_blocks', type=int, default=3, help='C: timed blocks per view setting')
    p.add_argument('--threads', type=int, default=1, help='torch threads of this process')
    p.add_argument('--max_runs', type=int, default=None, help='stop after this many new runs')
    p.add_argument('--shard', nargs=2, type=int, metavar=('I', 'N'), default=None,
                   help='run only the grid runs I, I+N, I+2N, ... (0 <= I < N): N processes share the grid without overlap')
    p.add_argument('--replay', nargs=3, metavar=('METHOD', 'SEED', 'FROM'), default=None,
                   help='re-run one run of A and print each step from step FROM (e.g. devat 0 340), then stop')
    p.add_argument('--trace_lambda_opt', nargs=3, type=float, metavar=('LAMBDA', 'NOISE', 'SEED'), default=None,
                   help="re-run B's DePseudo-label at LAMBDA and print the plug-in lambda_opt per evaluation period")
    p.add_argument('--quick', action='store_true', help='a tiny grid (20 labels, 4 iterations, one seed) in a temporary folder')
    a = p.parse_args(argv)
    lambdas_b = tuple(a.lambdas_b)
    if a.quick:
        a.out = a.out or Path(tempfile.mkdtemp(prefix='ssl_digits_quick_'))
        a.seeds_a, a.seeds_b, a.iterations, a.eval_every, a.num_labels, a.batch, a.uratio = 1, 1, 4, 2, 20, 4, 2
        a.view_steps, a.view_blocks, lambdas_b = 2, 1, (1.,)
    out = a.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    if a.eval_every > a.iterations: raise ValueError(f"--eval_every ({a.eval_every}) must be <= --iterations ({a.iterations})")
    if a.shard and not 0 <= a.shard[0] < a.shard[1]: raise ValueError(f"--shard I N needs 0 <= I < N, got {a.shard}")

    import torch
    torch.set_num_threads(a.threads)
    with contextlib.suppress(RuntimeError): torch.set_num_interop_threads(1)
    warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
    from defixmatch.data import load_digits_data
    data = load_digits_data(size=a.size)

    cfg = dict(iterations=a.iterations, eval_every=a.eval_every, num_labels=a.num_labels, size=a.size, batch=a.batch,
               uratio=a.uratio, ema_m=a.ema_m)
    if a.replay:
        method, seed, start = a.replay
        if method not in METHODS_A: raise ValueError(f"--replay: METHOD must be one of {METHODS_A}, got {method!r}")
        replay(data, method, int(seed), cfg, int(start), out=lambda s: print(s, flush=True))
        return None
    if a.trace_lambda_opt:
        lam, noise, seed = a.trace_lambda_opt
        trace_lambda_opt(data, lam, noise, int(seed), cfg, out=lambda s: print(s, flush=True))
        return None
    runs_csv, curves_csv, views_csv = out/f'{a.name}_runs.csv', out/f'{a.name}_curves.csv', out/f'{a.name}_views.csv'
    probe_csv = out/f'{a.name}_probe.csv'
    side = out/f'{a.name}_runs.json'
    budget = dict(cfg, threads=a.threads, num_workers=0, net='LeNet (in_channels=3)', data='sklearn digits, 1297 train / 500 test',
                  optimiser='SGD nesterov lr=0.03 mom=0.9 wd=5e-4, lr*cos(7 pi k/16K)', lambda_a=LAMBDA_A,
                  lambda_vat=LAMBDA_VAT, ramp_pct=RAMP_PCT, lambdas_b=list(lambdas_b), noises_b=list(NOISES_B), lambdas_e=list(a.lambdas_e),
                  adaptive='AdaptiveLambda(every=16, beta=0.9, lo=0, hi=10), lambda starts at 0',
                  sup_loss_a='mean CE of two weak views (eq. 52 with two weak views)', sup_loss_b='plain CE, one weak view',
                  p_cutoff_b=0.95)
    todo = (grid_a(range(a.seeds_a)) if 'A' in a.exp else []) + (grid_b(range(a.seeds_b), lambdas_b) if 'B' in a.exp else [])
    todo += grid_e(range(a.seeds_a), tuple(a.lambdas_e)) if 'E' in a.exp else []
    todo = sorted(todo, key=lambda r: [e for e in a.exp if e != 'C'].index(r[0]))  # the experiments in the order given
    if a.shard: todo = todo[a.shard[0]::a.shard[1]]
    args = sys.argv[1:] if argv is None else list(argv)
    entry = dict(command=' '.join(['python', 'benchmarks/ssl_digits.py', *args]),
                 started=datetime.now(timezone.utc).isoformat(timespec='seconds'), versions=versions())
    with locked(runs_csv):
        record_invocation(side, entry, grid_size=len(todo), budget=budget, versions=versions())

    def finish(**info):
        with locked(runs_csv): update_invocation(side, entry, **info)

    for path, fields in ((views_csv, VIEW_FIELDS), (probe_csv, PROBE_FIELDS)): check_header(path, fields)
    g = Grid(runs_csv, KEY, FIELDS, extra={'curves': (curves_csv, CURVE_FIELDS)})
    done = done_keys(runs_csv)
    kfull = lambda r: key_of(dict(zip(KEY, (*r, a.iterations, a.num_labels, a.size, a.batch, a.uratio, a.ema_m))))
    print(f"# {' '.join(sys.argv)}\n# grid: {len(todo)} runs, already in {shown(runs_csv)}: {sum(kfull(r) in done for r in todo)}",
          flush=True)
    if 'C' in a.exp:
        if views_csv.exists(): print(f"# C: {views_csv} exists, not re-measured", flush=True)
        else:
            t = time.time()
            rows = time_views(data, cfg, a.view_blocks, a.view_steps)
            with locked(runs_csv): append_rows(views_csv, VIEW_FIELDS, rows)
            finish(views_s=round(time.time() - t, 1))
            for r in rows: print(f"# C: {r['views']:<12} block {r['block']}: {1000 * r['wall_s'] / r['steps']:.1f} ms/step "
                                 f"(loader {1000 * r['loader_wall_s'] / r['steps']:.1f})", flush=True)
    keys = [dict(zip(KEY, (*r, a.iterations, a.num_labels, a.size, a.batch, a.uratio, a.ema_m))) for r in todo]
    def one(k):
        row, curve = run_one(data, tuple(k[c] for c in KEY[:6]), cfg)
        return row, {'curves': curve}
    label = lambda k, row: (f"{k['exp']} {k['method']:>14} lambda={k['lambda_u']:<5g} {k['lam_mode']:<8} noise={k['noise']:<4g} "
                            f"seed={k['seed']}  acc={row['acc']:.4f} ce={row['ce']:.4f} ece={row['ece']:.4f} "
                            f"worst={row['worst_class_acc']:.3f} mask={row['mask_ratio']:.3f} share={row['unsup_share']:.3f} "
                            f"{row['status']} {row['wall_s']:.1f}s")
    new = g.run(keys, one, a.max_runs, label)
    if 'D' in a.exp:
        import csv
        probes = [(m, s) for s in range(a.seeds_a) for m in PROBE_METHODS]
        if a.shard: probes = probes[a.shard[0]::a.shard[1]]
        for m, s in probes:
            lam = lambda_a(m)
            pkey = lambda r: (r['method'], int(float(r['seed'])), int(float(r['iterations'])))
            have = {pkey(r) for r in csv.DictReader(probe_csv.open())} if probe_csv.exists() else set()
            if (m, s, a.iterations) in have: continue
            t = time.time()
            row, _, learn = run_one(data, ('A', m, lam, 'fixed' if m == 'complete_case' else 'rampup', 0., s), cfg, keep_learner=True)
            rows = [dict(method=m, lambda_u=lam, seed=s, iterations=a.iterations, ema_acc=row['acc'], **r)
                    for r in h_by_split(learn, data, seed=1000 + s)]
            with locked(runs_csv): append_rows(probe_csv, PROBE_FIELDS, rows)
            new += 1
            print(f"D {m:>14} seed={s}  EMA acc={row['acc']:.4f}  H: " +
                  '  '.join(f"{r['split']} {r['h_mean']:.4g}" for r in rows) + f"  {time.time() - t:.1f}s", flush=True)
    finish(finished=datetime.now(timezone.utc).isoformat(timespec='seconds'), new_runs=new)
    print(f"# {new} new runs; results in {shown(runs_csv)}", flush=True)
    return runs_csv


if __name__ == '__main__': main()
