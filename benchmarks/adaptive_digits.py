"""FlexMatch, FreeMatch and SoftMatch against their debiased versions on scikit-learn's digits.

One CPU budget (LeNet on 16x16 digits, `--iterations` steps, one thread, no loader workers), each method with the
package's defaults (tau = 0.95, EMA momentum 0.999, n_sigma = 2, uniform alignment; lambda = 0.5 with the modified
supervised loss of eq. 52, no ramp), clean labels and 20% of the labelled images' labels replaced by uniform draws,
seeds 0..S-1; the seed fixes the split, the draws and the initial weights, shared by a method and its debiased version.

Every finished run appends one row (the final EMA model on the 500 test images) to NAME_runs.csv and its evaluation
curve (mask ratio or mean weight, the losses, and the state: each class's threshold, or SoftMatch's mean and standard
deviation of the confidence and its class prior) to NAME_curves.csv; runs already there are skipped, so the grid resumes
where it stopped. The command lines, versions and commit go to NAME_runs.json.

    python benchmarks/adaptive_digits.py              # the whole grid, seed by seed
    python benchmarks/adaptive_digits.py --quick      # a tiny grid in a temporary folder (seconds)
"""
import argparse, json, sys, tempfile, time, warnings
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import locked, record_invocation, append_rows, versions  # noqa: E402
from digits_benchmark import metric_fields  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'benchmarks'/'results'
PAIRS = (('flexmatch', 'deflexmatch'), ('freematch', 'defreematch'), ('softmatch', 'desoftmatch'))
KEY = ('method', 'noise', 'seed', 'iterations', 'num_labels', 'size', 'batch', 'uratio', 'ema_m')
FIELDS = KEY + ('lambda_u', 'acc', 'ce', 'ece', 'worst_class_acc', 'per_class_acc', 'mask_ratio_last', 'mask_ratio_mean',
                'status', 'stopped_at', 'wall_s', 'ms_per_step', 'finished')
CURVE_FIELDS = KEY + ('iter', 'top1_acc', 'cross_entropy', 'sup_loss', 'unsup_loss', 'anti_unsup_loss', 'mask_ratio',
                      'mask_ratio_lb', 'state')


def grid(seeds, noises)->list:
    "(method, noise, seed), noise by noise, seed by seed, a method beside its debiased version."
    return [(m, float(n), s) for n in noises for s in seeds for pair in PAIRS for m in pair]


def state_summary(m)->str:
    "The state that sets the weight, as JSON: the class-wise thresholds, or SoftMatch's mean, sd and class prior."
    r = lambda t: [round(float(v), 5) for v in t.flatten()]
    if hasattr(m, 'thresholds'): return json.dumps({'thresholds': r(m.thresholds())})
    return json.dumps({'mu': round(float(m.mu_t), 5), 'sd': round(float(m.var_t) ** 0.5, 5), 'p_model': r(m.p_model)})


def run_one(data, run:tuple, cfg:dict)->tuple:
    "Train one run; return its CSV row and its evaluation curve."
    import torch
    from fastai.callback.core import Callback
    from defixmatch.data import ssl_dataloaders
    from defixmatch.models import get_model
    from defixmatch.learner import ssl_learner
    method, noise, seed = run
    key = dict(zip(KEY, (method, noise, seed, cfg['iterations'], cfg['num_labels'], cfg['size'], cfg['batch'],
                         cfg['uratio'], cfg['ema_m'])))
    start = time.time()
    dls = ssl_dataloaders(data, num_labels=cfg['num_labels'], batch_size=cfg['batch'], uratio=cfg['uratio'],
                          n_iter=cfg['eval_every'], eval_batch_size=len(data.test_y), seed=seed, num_workers=0,
                          device='cpu', label_noise=noise)
    torch.manual_seed(seed)
    model = get_model('LeNet', data.num_classes, in_channels=3, img_size=cfg['size'])
    learn = ssl_learner(dls, model, method, ema_m=cfg['ema_m'], save_dir=None)
    states = []
    class _State(Callback):
        order = 55  # after the recorder's row of the evaluation
        def after_epoch(self): states.append(state_summary(self.learn.ssl_method))
    status, stopped_at = 'ok', cfg['iterations']
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: learn.fit_ssl(cfg['iterations'], num_eval_iter=cfg['eval_every'], cbs=[_State()])
        except FloatingPointError: status, stopped_at = 'nonfinite', int(learn.iteration)
        fit_s = time.time() - t0
        names, values = list(learn.recorder.metric_names[1:]), list(learn.recorder.values)
        preds, targs = learn.get_preds(act=lambda x: x)
    curve = []
    for i, vals in enumerate(values):
        rec = dict(zip(names, vals), cross_entropy=dict(zip(names, vals)).get('valid_loss'),
                   iter=min((i + 1) * cfg['eval_every'], cfg['iterations']), state=states[i] if i < len(states) else None)
        curve.append({**key, **{k: rec.get(k) for k in CURVE_FIELDS if k not in key}})
    status, res = metric_fields(preds, targs, status, data.num_classes)
    ratios = [c['mask_ratio'] for c in curve if c['mask_ratio'] is not None]
    row = {**key, **res, 'lambda_u': learn.ssl_method.lambda_u,
           'mask_ratio_last': ratios[-1] if ratios else None,
           'mask_ratio_mean': sum(ratios) / len(ratios) if ratios else None,
           'status': status, 'stopped_at': stopped_at, 'wall_s': round(time.time() - start, 2),
           'ms_per_step': round(1000 * fit_s / max(stopped_at, 1), 2),
           'finished': datetime.now(timezone.utc).isoformat(timespec='seconds')}
    return row, curve


def done_keys(path:Path)->set:
    import csv
    if not path.exists(): return set()
    with path.open() as f:
        return {(r['method'], float(r['noise']), int(r['seed']), int(r['iterations']), int(r['num_labels']), int(r['size']),
                 int(r['batch']), int(r['uratio']), float(r['ema_m'])) for r in csv.DictReader(f)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, default=None, help='folder of the result files (default benchmarks/results)')
    p.add_argument('--name', default='adaptive_digits', help='file prefix: NAME_runs.csv, NAME_curves.csv, NAME_runs.json')
    p.add_argument('--seeds', type=int, default=5, help='seeds 0..S-1')
    p.add_argument('--noises', nargs='+', type=float, default=[0., 0.2], help="shares of the labelled images' labels replaced")
    p.add_argument('--iterations', type=int, default=1500)
    p.add_argument('--eval_every', type=int, default=100)
    p.add_argument('--num_labels', type=int, default=100)
    p.add_argument('--size', type=int, default=16, help='side of the upsampled digits')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--uratio', type=int, default=7)
    p.add_argument('--ema_m', type=float, default=0.99)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--quick', action='store_true', help='a tiny grid (20 labels, 4 iterations, one seed) in a temporary folder')
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.noises, a.iterations, a.eval_every, a.num_labels, a.batch, a.uratio = 1, [0.], 4, 2, 20, 4, 2
        a.out = Path(tempfile.mkdtemp())
    import torch
    from defixmatch.data import load_dataset
    torch.set_num_threads(a.threads)
    out = a.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    runs_csv, curves_csv, side = out/f'{a.name}_runs.csv', out/f'{a.name}_curves.csv', out/f'{a.name}_runs.json'
    cfg = dict(iterations=a.iterations, eval_every=a.eval_every, num_labels=a.num_labels, size=a.size, batch=a.batch,
               uratio=a.uratio, ema_m=a.ema_m)
    data = load_dataset('digits', size=a.size)
    with locked(runs_csv):
        record_invocation(side, dict(command=' '.join(sys.argv), started=datetime.now(timezone.utc).isoformat(timespec='seconds')),
                          config=cfg, **versions())
        done = done_keys(runs_csv)
        for run in grid(range(a.seeds), a.noises):
            k = (run[0], run[1], run[2], a.iterations, a.num_labels, a.size, a.batch, a.uratio, a.ema_m)
            if k in done: continue
            row, curve = run_one(data, run, cfg)
            append_rows(curves_csv, CURVE_FIELDS, curve)
            append_rows(runs_csv, FIELDS, [row])  # the row last: a run is done once its row is written
            print(f"{row['method']:12s} noise {row['noise']} seed {row['seed']}: acc {row['acc']:.4f} "
                  f"mask {row['mask_ratio_last']} {row['wall_s']} s", flush=True)
    if a.quick: print(f"quick grid written to {out}")


if __name__ == '__main__': main()
