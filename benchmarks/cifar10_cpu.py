"""Complete case, FixMatch, DeFixMatch and a fully supervised reference on CIFAR-10 with 4,000 labels, at CPU scale.

This is a REDUCED-SCALE PROXY of the paper's CIFAR-10 experiment (App. L, Table 4: WRN-28-2, K = 2^20 iterations of
64 labelled + 448 unlabelled images, 5 folds), sized so that one run takes about an hour on one core of a 2-core CPU.
Every run has the same seed (so the same 4,000 labels for the three SSL runs, the same initial weights) and the same
budget; nothing is tuned for any method.

Runs (`--methods`):

| name            | risk (`ssl_learner` method, lambda)       | labels                                   |
|-----------------|-------------------------------------------|------------------------------------------|
| `complete_case` | `complete_case`, lambda = 0               | 4,000 (400 per class)                    |
| `fixmatch`      | `fixmatch`, lambda = 0.5                  | 4,000                                    |
| `defixmatch`    | `defixmatch`, lambda = 0.5 (eq. 5)        | 4,000                                    |
| `supervised`    | `complete_case`, lambda = 0               | all 50,000: the fully supervised model of the benefit ratio (eq. 51) |

All four use the modified supervised loss of eq. 52 (weak and strong view of each labelled image), tau = 0.95,
SGD with Nesterov momentum, lr 0.03, weight decay 5e-4, the cosine lr * cos(7 pi k / 16 K) over K, and evaluate the
EMA model. "Fully supervised" is the complete-case risk with every training label: the same loop, the same
augmentations and the same per-step cost (the unlabelled batch still goes through the network, and through
BatchNorm, but carries no loss), trained for the same K iterations, so the four runs differ only by the risk and
by how many labels it sees.

Default schedule: `SmallCNN` of width 32 (94,762 parameters), B = 32 labelled + 7 x 32 = 224 unlabelled images per
step (weak and strong views: 512 images through the network), K = 8,192 iterations (2^13), evaluation and
checkpoint every N = 512, EMA decay 0.999, one thread, no loader worker. Over K that is 65 passes over the 4,000
labelled images and 37 over the 50,000 unlabelled ones.

Measured on the project's 2-vCPU machine while other jobs held both cores (load average 5-6), `--threads 1`,
median CPU time of the process per DeFixMatch step on CIFAR-10 images (wall time was 1.5-2x higher because of the
other jobs; on a free core it is about the CPU time):

| network, batch (images through the network per step) | CPU ms per step | steps per hour |
|---|---|---|
| SmallCNN w32, B=64, uratio 7 (1,024)  | 1,044 | 3,450 |
| SmallCNN w32, B=32, uratio 7 (512)    |   474-478 | 7,500 |
| SmallCNN w16, B=64, uratio 7 (1,024)  |   404 | 8,900 |
| SmallCNN w16, B=32, uratio 7 (512)    |   179 | 20,100 |

With width 32 and B = 32, a complete-case step (`complete_case`, `supervised`) costs 363 ms (no gradient through
the unlabelled term), one evaluation of the EMA model on the 10,000 test images 2.6-2.9 s, and the loader's
augmentations about 6 % of a step (a loader worker did not lower the main process's CPU time, so there is none).
Estimate for K = 8,192 with 17 evaluations: FixMatch and DeFixMatch 8,192 x 0.474 s + 17 x 2.9 s = 65 min each,
the complete case and the supervised run 8,192 x 0.363 s + 49 s = 50 min each: 3 h 50 min one after the other, or
about 1 h 55 min as two processes at once (one core each, one SSL run and one complete-case run in each, as below;
two threads on two cores shared with anything else spend most of their time waiting for each other). Extracting
the tarball once takes 14 s and decoding the 60,000 JPEGs 9-10 s at the start of each invocation. A quiet machine
may be faster (RESULTS.md measured 1.5x lower CPU time per step when the machine was quiet); each CSV row records
the measured time of its run. Width 16 would allow 2.4x more steps with a quarter of the parameters; B = 64 halves
the number of SGD steps for the same images: width 32 with B = 32 keeps the capacity and the most steps per hour.

Outputs:
- `--out/cifar10_cpu.csv`: one row per finished run: the final EMA model's test accuracy, cross-entropy, ECE (15
  bins), worst-class accuracy and per-class accuracies (a JSON list, in the order of the sidecar's `classes`),
  the last epoch's mask ratios, the measured time; `--out/cifar10_cpu_curves.csv`: the loop's log (one row per
  evaluation) of every finished run; `--out/cifar10_cpu.json`: the command lines, the budget, the data and versions.
- `--out/cifar10_cpu_logits/<run name>.npz`: the test-set logits (float16) and targets of every finished run's final
  EMA model, evaluated again from its checkpoint and checked against its CSV row (for paired comparisons over the
  test images and reliability diagrams).
- `--save-dir/<run name>/`: the loop's `latest_model.pth`, `model_best.pth` and `log.csv`.

Resumable: runs already in the CSV are skipped; a run with a checkpoint but no row (killed, or stopped by
`--until`) continues from its `latest_model.pth` with the loop's `fit_ssl(resume=True)` (same schedule, EMA,
optimiser state and data draws as an uninterrupted run).

    python benchmarks/cifar10_cpu.py                                            # the four runs, one after the other
    python benchmarks/cifar10_cpu.py --methods fixmatch complete_case &         # or in two processes, one core each
    python benchmarks/cifar10_cpu.py --methods defixmatch supervised &
    python benchmarks/cifar10_cpu.py --until 4096                               # stop every run at half way (resume later)
    python benchmarks/cifar10_cpu.py --quick --out /tmp/cifar_quick              # CI: a tiny run on an extracted slice
"""
import argparse, contextlib, json, os, shutil, sys, tarfile, tempfile, time, warnings
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import Grid, RESULTS, locked, read_rows, versions, shown  # noqa: E402
import grid as _grid  # noqa: E402
NAME = 'cifar10_cpu'
METHODS = ('complete_case', 'fixmatch', 'defixmatch', 'supervised')
KEY = ('method', 'risk', 'lambda_u', 'num_labels', 'seed', 'iterations', 'eval_every', 'batch', 'uratio', 'net',
       'width', 'ema_m')
FIELDS = KEY + ('acc', 'ce', 'ece', 'worst_class_acc', 'worst_class', 'per_class_acc', 'best_acc', 'best_it',
                'mask_ratio', 'mask_ratio_lb', 'status', 'stopped_at', 'train_s', 'cpu_s', 's_per_iter', 'segments',
                'threads', 'run_dir', 'finished')
CURVE_FIELDS = KEY + ('epoch', 'iter', 'lr', 'train_loss', 'valid_loss', 'top1_acc', 'cross_entropy', 'ece',
                      'worst_class_acc', 'sup_loss', 'unsup_loss', 'anti_unsup_loss', 'total_loss', 'mask_ratio',
                      'mask_ratio_lb', 'time')
QUICK = dict(iters=4, eval_every=2, batch_size=4, uratio=2, width=4, labels=40, ema_m=0.5, n_train=10, n_test=5)


def risk_of(method:str, lambda_u:float, num_labels:int, n_train:int)->tuple:
    "`(ssl_learner method, lambda_u, labels)` of a run name: 'supervised' is the complete case with every label."
    if method == 'supervised': return 'complete_case', 0.0, n_train
    if method == 'complete_case': return 'complete_case', 0.0, num_labels
    return method, float(lambda_u), num_labels


def key_of(row:dict)->tuple:
    "The identity of a run in the CSV (numbers normalised so that '0.5' and 0.5 match)."
    return _grid.key_of(row, KEY)


def run_name(k:dict)->str:
    "Folder of a run under `--save-dir`: every field of its key."
    return (f"{k['method']}-n{k['num_labels']}-s{k['seed']}-{k['net'].lower()}{k['width']}-K{k['iterations']}"
            f"-N{k['eval_every']}-B{k['batch']}-u{k['uratio']}-lam{k['lambda_u']:g}-ema{k['ema_m']:g}")


def _image_root(folder:Path)->Path:
    "The folder under `folder` that holds `train/` and `test/`."
    for d in [folder, *sorted(folder.glob('*/')), *sorted(folder.glob('*/*/'))]:
        if (d/'train').is_dir() and (d/'test').is_dir(): return d
    raise FileNotFoundError(f"no '<root>/train/' and '<root>/test/' folders were extracted into '{folder}'")


def extract_once(tgz, # the image-folder tarball (members <root>/train/<class>/*, <root>/test/<class>/*)
                 dest, # folder that will hold train/ and test/
                 n_train:int|None=None, # None: the whole tarball; else `untar_slice`'s images per class
                 n_test:int|None=None,
                )->Path:
    "Extract `tgz` into `dest` unless it is already there; atomic: into a temporary folder, then renamed."
    from workspace import untar_slice
    dest = Path(dest).expanduser().resolve()
    if (dest/'train').is_dir() and (dest/'test').is_dir(): return dest
    if tgz is None or not Path(tgz).is_file():
        raise FileNotFoundError(f"tgz: no CIFAR-10 tarball at {tgz!r} (set DEFIXMATCH_CIFAR10_TGZ or pass --tarball)")
    with locked(dest.parent/dest.name):
        if (dest/'train').is_dir() and (dest/'test').is_dir(): return dest  # another process extracted it meanwhile
        if dest.exists(): raise FileExistsError(f"dest: '{dest}' exists but has no train/ and test/: remove it")
        tmp = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.tmp-', dir=dest.parent))
        try:
            start = time.time()
            if n_train is None:
                kw = dict(filter='data') if hasattr(tarfile, 'data_filter') else {}
                with tarfile.open(tgz, 'r:*') as tf:
                    for m in tf.getmembers():
                        if Path(m.name).is_absolute() or '..' in Path(m.name).parts:
                            raise ValueError(f"tgz: refusing to extract '{m.name}' (absolute path or '..')")
                    tf.extractall(tmp, **kw)
                root = _image_root(tmp)
            else: root = untar_slice(tgz, tmp, n_train=n_train, n_test=n_test)
            os.rename(root, dest)
            print(f"# extracted {tgz} into {dest} in {time.time() - start:.1f} s", flush=True)
        finally: shutil.rmtree(tmp, ignore_errors=True)
    return dest


def run_clock(run_dir:Path, K:int, until:int|None, label:str):
    "Callback of one fit: measured time (kept beside the checkpoint, for resumed runs), a line per evaluation, --until."
    from fastai.callback.core import Callback, CancelFitException

    class RunClock(Callback):
        order = 75  # after the checkpoint (70): the time file matches latest_model.pth
        def __init__(self):
            f = run_dir/'time.json'
            st = json.loads(f.read_text()) if f.exists() else {}
            self.base, self.base_cpu, self.segments = st.get('train_s', 0.), st.get('cpu_s', 0.), st.get('segments', 0) + 1
        def before_fit(self): self.t0, self.c0, self.it0 = time.perf_counter(), time.process_time(), self.learn.iteration
        def now(self): return self.base + time.perf_counter() - self.t0, self.base_cpu + time.process_time() - self.c0
        def after_epoch(self):
            wall, cpu = self.now()
            it = int(self.learn.iteration)
            tmp = run_dir/'time.json.tmp'
            tmp.write_text(json.dumps(dict(it=it, train_s=round(wall, 2), cpu_s=round(cpu, 2), segments=self.segments)))
            os.replace(tmp, run_dir/'time.json')
            rec = dict(zip(self.learn.recorder.metric_names[1:], self.learn.recorder.values[-1]))
            pace = (time.perf_counter() - self.t0) / max(it - self.it0, 1)
            print(f"{label:>14} it {it:>6}/{K}  acc {rec.get('top1_acc', float('nan')):.4f}  "
                  f"ce {rec.get('valid_loss', float('nan')):.4f}  mask {rec.get('mask_ratio', float('nan')):.3f}  "
                  f"{wall:8.1f} s  ({pace:.3f} s/it)", flush=True)
            if until is not None and it >= until and it < K: raise CancelFitException()

    return RunClock()


def build_net(k:dict, num_classes:int):
    "The network of run `k`: `SmallCNN` of width `k['width']`, WRN-28-`k['width']`, or `LeNet` on 32x32 RGB."
    from defixmatch.models import get_model
    net = k['net'].lower()
    kw = (dict(width=k['width']) if net == 'smallcnn' else dict(depth=28, widen_factor=k['width']) if net == 'wideresnet'
          else dict(in_channels=3, img_size=32))
    return get_model(k['net'], num_classes, **kw)


def run_one(data, k:dict, save_dir:Path, until:int|None, threads:int)->dict|None:
    "Train (or resume) one run; return its CSV row, or None when `until` stopped it before the end."
    import torch
    from defixmatch.data import ssl_dataloaders
    from defixmatch.learner import ssl_learner
    from defixmatch.metrics import evaluation_metrics
    K, N = k['iterations'], k['eval_every']
    dls = ssl_dataloaders(data, num_labels=k['num_labels'], batch_size=k['batch'], uratio=k['uratio'], n_iter=N,
                          eval_batch_size=1000, seed=k['seed'], num_workers=0, device='cpu')
    torch.manual_seed(k['seed'])
    learn = ssl_learner(dls, build_net(k, data.num_classes), k['risk'],
                        lambda_u=None if k['risk'] == 'complete_case' else k['lambda_u'], ema_m=k['ema_m'],
                        save_dir=save_dir, save_name=run_name(k), overwrite=True)  # a folder without a checkpoint: start afresh
    run_dir = learn.save_path
    ckpt = run_dir/'latest_model.pth'
    resume = ckpt.exists()
    if resume:
        it0 = int(json.loads((run_dir/'time.json').read_text())['it']) if (run_dir/'time.json').exists() else None
        print(f"{k['method']:>14} resuming from {ckpt} (iteration {it0 if it0 is not None else '?'})", flush=True)
    clock = run_clock(run_dir, K, until, k['method'])
    status = 'ok'
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='nothing to do')  # resumed from the final checkpoint
        try: learn.fit_ssl(K, N, resume=resume, cbs=clock)
        except FloatingPointError as e:  # a non-finite risk stops the run; it is reported as such, not dropped
            status = 'nonfinite'
            print(f"{k['method']:>14} {e}", flush=True)
    stopped_at = int(learn.iteration)
    if status == 'ok' and stopped_at < K:
        print(f"{k['method']:>14} stopped at iteration {stopped_at} (--until); run again to resume", flush=True)
        return None
    with learn.no_bar(), learn.no_logging(): preds, targs = learn.get_preds(act=lambda x: x)  # EMA model, logits
    if status == 'ok' and torch.isfinite(preds).all():
        res = evaluation_metrics(preds.float(), targs, num_classes=data.num_classes)
    else:
        status = 'nonfinite'
        res = {m: float('nan') for m in ('acc', 'ce', 'ece', 'worst_class_acc')}
        res['per_class_acc'] = [float('nan')] * data.num_classes
    log = read_rows(run_dir/'log.csv')
    for r in log: r.setdefault('cross_entropy', r.get('valid_loss'))  # the EMA model's test cross-entropy
    accs = [(float(r['top1_acc']), int(float(r['iter']))) for r in log if r.get('top1_acc') not in (None, '', 'nan')]
    best = max(accs) if accs else (float('nan'), -1)
    t = json.loads((run_dir/'time.json').read_text()) if (run_dir/'time.json').exists() else {}
    pc = [float(v) for v in res['per_class_acc']]
    worst = min(range(len(pc)), key=lambda i: pc[i]) if status == 'ok' else None
    last = log[-1] if log else {}
    row = {**k, **{m: float(res[m]) for m in ('acc', 'ce', 'ece', 'worst_class_acc')},
           'worst_class': data.classes[worst] if worst is not None else '',
           'per_class_acc': json.dumps([round(v, 6) for v in pc]), 'best_acc': best[0], 'best_it': best[1],
           'mask_ratio': last.get('mask_ratio'), 'mask_ratio_lb': last.get('mask_ratio_lb'), 'status': status,
           'stopped_at': stopped_at, 'train_s': t.get('train_s'), 'cpu_s': t.get('cpu_s'),
           's_per_iter': round(t['train_s'] / stopped_at, 4) if t.get('train_s') and stopped_at else None,
           'segments': t.get('segments'), 'threads': threads, 'run_dir': str(run_dir),
           'finished': datetime.now(timezone.utc).isoformat(timespec='seconds')}
    row['_curve'] = [{**k, **r} for r in log]
    return row


def logits_file(out:Path, k:dict)->Path:
    "Where the test-set logits of run `k` are kept: `OUT/cifar10_cpu_logits/<run name>.npz`."
    return out/f'{NAME}_logits'/f'{run_name(k)}.npz'


def export_logits(data, k:dict, row:dict, save_dir:Path, out:Path)->Path:
    """Test-set logits of a finished run's final EMA model (its `latest_model.pth`), written atomically as float16 with
    the targets; the model is evaluated again and must give the CSV row's accuracy and cross-entropy."""
    import numpy as np
    from defixmatch.checkpoint import load_checkpoint
    from defixmatch.cli import predict_logits
    from defixmatch.metrics import evaluation_metrics
    ckpt = save_dir/run_name(k)/'latest_model.pth'
    model = load_checkpoint(ckpt, build_net(k, data.num_classes))
    logits = predict_logits(model, data, batch_size=1000, device='cpu')
    res = evaluation_metrics(logits, data.test_y, num_classes=data.num_classes)
    # the same weights on the same images: equal up to float rounding (one test image may flip on a near tie)
    n = len(data.test_y)
    if abs(res['acc'] - float(row['acc'])) > 1.5 / n or abs(res['ce'] - float(row['ce'])) > 1e-4:
        raise RuntimeError(f"{ckpt}: re-evaluated acc {res['acc']:.4f} / ce {res['ce']:.4f} differ from the CSV row's "
                           f"{float(row['acc']):.4f} / {float(row['ce']):.4f}: the checkpoint is not the run's final model")
    dest = logits_file(out, k)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f'.{dest.stem}.tmp.npz')
    try:
        np.savez_compressed(tmp, logits=logits.half().numpy(), targets=data.test_y.numpy().astype(np.uint8),
                            classes=np.array(data.classes))
        os.replace(tmp, dest)
    finally: tmp.unlink(missing_ok=True)  # nothing left behind when the write fails
    return dest


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS, help='runs to do (default: all four)')
    p.add_argument('--iters', type=int, default=8192, help='K, training iterations of every run (default 8192)')
    p.add_argument('--eval-every', type=int, default=512, help='N, iterations between evaluations and checkpoints (default 512)')
    p.add_argument('--batch-size', type=int, default=32, help='B, labelled images per step (default 32)')
    p.add_argument('--uratio', type=int, default=7, help='unlabelled images per labelled image in a step (default 7)')
    p.add_argument('--net', default='SmallCNN', choices=['SmallCNN', 'WideResNet', 'LeNet'], help='network (default SmallCNN)')
    p.add_argument('--width', type=int, default=32, help='SmallCNN width, or WideResNet widen factor (depth 28); unused by LeNet (default 32)')
    p.add_argument('--threads', type=int, default=1, help='torch threads of this process (default 1)')
    p.add_argument('--labels', type=int, default=4000, help='labelled images of the SSL runs and the complete case (default 4000)')
    p.add_argument('--lambda-u', type=float, default=0.5, help='lambda of FixMatch and DeFixMatch (default 0.5)')
    p.add_argument('--ema-m', type=float, default=0.999, help='EMA decay of the evaluated model (default 0.999)')
    p.add_argument('--seed', type=int, default=0, help='seed of the split, the draws and the initial weights (default 0)')
    p.add_argument('--until', type=int, default=None, help='stop every run at this iteration (a multiple of --eval-every), to resume later')
    p.add_argument('--out', type=Path, default=None, help='folder of the result files (default benchmarks/results; --quick: a temporary folder)')
    p.add_argument('--data', type=Path, default=None, help='cache folder of the extracted images (default ./data/cifar10-jpeg; --quick: OUT/cifar10-slice)')
    p.add_argument('--save-dir', type=Path, default=None, help='parent of the run folders (default ./saved_models/cifar10_cpu; --quick: OUT/saved_models)')
    p.add_argument('--tarball', type=Path, default=None, help='cifar10-jpeg.tar.gz (default: defixmatch.data.cifar10_tarball())')
    p.add_argument('--quick', action='store_true',
                   help=f"tiny run for CI: {QUICK['n_train']} training and {QUICK['n_test']} test images per class "
                        f"(untar_slice), {QUICK['labels']} labels, K={QUICK['iters']}, N={QUICK['eval_every']}, "
                        f"B={QUICK['batch_size']}, uratio {QUICK['uratio']}, width {QUICK['width']}, EMA decay {QUICK['ema_m']}")
    a = p.parse_args(argv)
    if a.quick:
        a.iters, a.eval_every, a.batch_size, a.uratio, a.width, a.labels, a.ema_m = (
            QUICK[k] for k in ('iters', 'eval_every', 'batch_size', 'uratio', 'width', 'labels', 'ema_m'))
        a.out = a.out or Path(tempfile.mkdtemp(prefix='cifar10_cpu_quick_'))
        a.data = a.data or a.out/'cifar10-slice'
        a.save_dir = a.save_dir or a.out/'saved_models'
    a.out, a.data = a.out or RESULTS, a.data or Path('data')/'cifar10-jpeg'
    a.save_dir = a.save_dir or Path('saved_models')/'cifar10_cpu'
    for n in ('iters', 'eval_every', 'batch_size', 'uratio', 'width', 'threads', 'labels'):
        if getattr(a, n) < 1: p.error(f"--{n.replace('_', '-')} must be >= 1, got {getattr(a, n)}")
    if a.eval_every > a.iters: p.error(f"--eval-every ({a.eval_every}) must be <= --iters ({a.iters})")
    if a.until is not None and (a.until < 1 or a.until % a.eval_every):
        p.error(f"--until must be a positive multiple of --eval-every ({a.eval_every}), got {a.until}")
    return a


def main(argv=None):
    a = parse(argv)
    command = ' '.join(['python', 'benchmarks/cifar10_cpu.py'] + (sys.argv[1:] if argv is None else [str(v) for v in argv]))
    print(f"# {command}", flush=True)
    import torch
    torch.set_num_threads(a.threads)
    with contextlib.suppress(RuntimeError): torch.set_num_interop_threads(1)
    warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
    from defixmatch.data import load_dataset
    from workspace import cifar10_tarball

    tgz = a.tarball or cifar10_tarball()
    folder = extract_once(tgz, a.data, *((QUICK['n_train'], QUICK['n_test']) if a.quick else (None, None)))
    start = time.time()
    data = load_dataset(folder)
    load_s = time.time() - start
    n_train = len(data.train_y)
    print(f"# {folder}: {n_train} training and {len(data.test_y)} test images, {data.num_classes} classes "
          f"(decoded in {load_s:.1f} s)", flush=True)

    a.out.mkdir(parents=True, exist_ok=True)
    runs_csv, curves_csv, side = a.out/f'{NAME}.csv', a.out/f'{NAME}_curves.csv', a.out/f'{NAME}.json'
    keys = []
    for m in a.methods:
        risk, lam, labels = risk_of(m, a.lambda_u, a.labels, n_train)
        keys.append(dict(method=m, risk=risk, lambda_u=lam, num_labels=labels, seed=a.seed, iterations=a.iters,
                         eval_every=a.eval_every, batch=a.batch_size, uratio=a.uratio, net=a.net, width=a.width,
                         ema_m=a.ema_m))
    budget = dict(iterations=a.iters, eval_every=a.eval_every, batch=a.batch_size, uratio=a.uratio, net=a.net,
                  width=a.width, labels=a.labels, lambda_u=a.lambda_u, ema_m=a.ema_m, seed=a.seed, threads=a.threads,
                  num_workers=0, p_cutoff=0.95, modified_sup_loss=True, eval_batch_size=1000,
                  optimiser='SGD nesterov lr=0.03 momentum=0.9 wd=5e-4 (not on normalisation-layer parameters), lr*cos(7 pi k/16K)',
                  supervised='complete_case risk with all training labels, same K, B, uratio')
    with locked(side):
        meta = json.loads(side.read_text()) if side.exists() else {}
        meta.setdefault('note', 'Reduced-scale CPU proxy of the paper\'s CIFAR-10 runs (App. L: WRN-28-2, 2^20 '
                                'iterations, 64 labelled + 448 unlabelled images per step).')
        meta['command'] = command
        meta.setdefault('invocations', []).append(dict(command=command, methods=a.methods,
                                                       started=datetime.now(timezone.utc).isoformat(timespec='seconds')))
        meta.update(budget=budget, versions=versions(), data=dict(
            tarball=str(tgz), folder=str(folder), n_train=n_train, n_test=len(data.test_y), classes=list(data.classes),
            decode_s=round(load_s, 1)))
        tmp = side.with_suffix('.json.tmp'); tmp.write_text(json.dumps(meta, indent=1)); os.replace(tmp, side)

    done = {key_of(r) for r in read_rows(runs_csv)}
    todo = [k for k in keys if key_of(k) not in done]
    print(f"# {len(keys)} runs: {len(keys) - len(todo)} already in {shown(runs_csv)} (skipped), {len(todo)} to do", flush=True)
    for k in keys:
        if key_of(k) in done: print(f"{k['method']:>14} skipped: already in {runs_csv.name}", flush=True)
    g = Grid(runs_csv, KEY, FIELDS, extra={'curves': (curves_csv, CURVE_FIELDS)})
    def one(k):
        row = run_one(data, k, a.save_dir, a.until, a.threads)
        if row is None: return None
        return row, {'curves': row.pop('_curve')}
    label = lambda k, row: (f"{k['method']:>14} acc={row['acc']:.4f} ce={row['ce']:.4f} ece={row['ece']:.4f} "
                            f"worst={row['worst_class_acc']:.4f} ({row['worst_class']}) {row['status']} "
                            f"{row['train_s']} s ({row['s_per_iter']} s/it)")
    new = g.run(todo, one, label=label)
    print(f"# {new} new rows in {shown(runs_csv)}", flush=True)
    finished = {key_of(r): r for r in read_rows(runs_csv)}
    for k in keys:
        row = finished.get(key_of(k))
        if row is None or row['status'] != 'ok' or logits_file(a.out, k).exists(): continue
        if not (a.save_dir/run_name(k)/'latest_model.pth').exists():
            print(f"{k['method']:>14} no checkpoint under {a.save_dir}: test logits not exported", flush=True); continue
        print(f"{k['method']:>14} test logits -> {export_logits(data, k, row, a.save_dir, a.out)}", flush=True)
    return runs_csv


if __name__ == '__main__': main()
