"""Data pipeline: does the augmenting loader keep up with the training step?

Three measurements, on the same dual batches (B labelled + uratio*B unlabelled images, each seen weakly and
strongly: 2(B + uratio B) views per step):

1. the loader alone (`ssl_dataloaders(...).train`, the package's pipeline: CPU RandAugment with Cutout, flip-and-shift,
   normalisation, the views concatenated into one tensor per step) with no worker (the main process augments: one core's rate, no inter-process copy) and with
   `--workers` worker processes, in steps and views per second; the rate per worker is the pipeline's capacity;
2. the training step alone (`PlainStep` of `step_overhead.py`) on pre-made batches already on the device;
3. the same step fed by the loader with `--workers` workers; the ratio fed / compute-only says whether the step
   waits for data. Steps 2 and 3 are interleaved block by block, as in `step_overhead.py`; medians of the
   per-step time over the blocks, the first block of each dropped as warm-up.

From the rates it prints the number of workers that keeps the step fed, ceil(step rate / per-worker rate) + 1 spare.
Images are random uint8 images by default (the cost of the augmentation does not depend on their content);
`--cifar` reads a slice of the project's CIFAR-10 JPEG tarball instead (found by `workspace.cifar10_tarball`).
The training step takes the four view tensors: each batch `(x, y_lb)` of the loader is split with its `bs` and `ubs`.

    python benchmarks/loader.py --net smallcnn --batch-size 16 --workers 1 --threads 1
    python benchmarks/loader.py --tiny          # seconds: the CI check
"""
import argparse, math, os, statistics, sys, tempfile, time, warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_overhead import PlainStep, make_pair, synthetic_data, sync, NETS
from workspace import cifar10_tarball, untar_slice

def loader_rate(dls, n_steps:int, warmup:int=2)->float:
    "Steps per second that `dls.train` delivers on its own (after `warmup` steps), moving batches to its device."
    it = iter(dls.train)
    for _ in range(warmup): next(it)
    t = time.perf_counter()
    for _ in range(n_steps): b = next(it)
    sync(b[0].device)
    dt = time.perf_counter() - t
    it.close()
    return n_steps / dt

def make_dls(data, batch_size, uratio, n_iter, workers, device):
    from defixmatch.data import ssl_dataloaders
    return ssl_dataloaders(data, num_labels=4 * data.num_classes, batch_size=batch_size,
                           uratio=uratio, n_iter=n_iter, eval_batch_size=256, num_workers=workers, device=device)

def fed_vs_compute(net, data, batch_size, uratio, workers, device, blocks, block, amp=None, channels_last=False):
    "Median time per step of `PlainStep` fed by the loader and on pre-made batches, interleaved block by block."
    n = (blocks + 1) * block
    dls = make_dls(data, batch_size, uratio, n + 4, workers, device)
    batches = list(make_dls(data, batch_size, uratio, 4, 0, device).train)
    m_fed, m_pre = make_pair(net, data.num_classes, device, channels_last)
    fed = PlainStep(m_fed, num_train_iter=n, amp=amp, channels_last=channels_last)
    pre = PlainStep(m_pre, num_train_iter=n, amp=amp, channels_last=channels_last)
    it = iter(dls.train)
    for _ in range(2): fed(*next(it)); pre(*batches[0])      # warm-up (and the workers' first batches)
    t_fed, t_pre = [], []
    for k in range(blocks + 1):
        sync(device); t = time.perf_counter()
        for _ in range(block): fed(*next(it))
        sync(device); t_fed.append((time.perf_counter() - t) / block)
        t = time.perf_counter()
        for i in range(block): pre(*batches[i % len(batches)])
        sync(device); t_pre.append((time.perf_counter() - t) / block)
    it.close()
    return 1e3 * statistics.median(t_fed[1:]), 1e3 * statistics.median(t_pre[1:])

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--net', default='smallcnn', choices=list(NETS))
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--uratio', type=int, default=7)
    p.add_argument('--workers', type=int, default=1, help='DataLoader worker processes for the fed run')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=None,
                   help='torch.set_num_threads of the training process (default on CPU: cores - workers, at least 1)')
    p.add_argument('--blocks', type=int, default=6)
    p.add_argument('--block', type=int, default=4)
    p.add_argument('--rate-steps', type=int, default=20, help='steps timed for the loader-only rates')
    p.add_argument('--cifar', action='store_true', help='CIFAR-10 images (a slice of the JPEG tarball) instead of random ones')
    p.add_argument('--tgz', default=None, help='the CIFAR-10 JPEG tarball (default: workspace.cifar10_tarball())')
    p.add_argument('--tiny', action='store_true', help='a few seconds: tiny CNN and batches (CI check)')
    a = p.parse_args(argv)
    if a.tiny: a.net, a.batch_size, a.uratio, a.blocks, a.block, a.rate_steps = 'tinycnn', 2, 2, 2, 2, 4
    cores = len(os.sched_getaffinity(0))
    if torch.device(a.device).type == 'cpu' and a.threads is None: a.threads = max(1, cores - a.workers)
    if a.threads: torch.set_num_threads(a.threads)
    warnings.filterwarnings('ignore', category=FutureWarning)
    if a.cifar:
        from defixmatch.data import load_image_folder
        tgz = a.tgz or cifar10_tarball()
        if tgz is None or not Path(tgz).is_file(): sys.exit("--cifar: cifar10-jpeg.tar.gz not found; pass --tgz PATH")
        tmp = tempfile.TemporaryDirectory()
        data = load_image_folder(untar_slice(tgz, tmp.name, n_train=100, n_test=10))
    else: data = synthetic_data()
    views = 2 * a.batch_size * (1 + a.uratio)
    print(f"{data.name} images; {views} views per step (B={a.batch_size}, uratio={a.uratio}); device {a.device}; "
          f"training threads {torch.get_num_threads()}; CPU cores {cores}")
    r0 = loader_rate(make_dls(data, a.batch_size, a.uratio, a.rate_steps + 2, 0, a.device), a.rate_steps)
    print(f"loader alone, no worker (main process):  {r0:8.2f} steps/s  {r0 * views:9.0f} views/s")
    rw = loader_rate(make_dls(data, a.batch_size, a.uratio, a.rate_steps + 2 * a.workers + 2, a.workers, a.device), a.rate_steps, warmup=2 * a.workers)
    if a.workers:
        print(f"loader alone, {a.workers} worker(s):             {rw:8.2f} steps/s  {rw * views:9.0f} views/s  "
              f"({rw / a.workers:.2f} steps/s = {rw * views / a.workers:.0f} views/s per worker)")
    fed, pre = fed_vs_compute(a.net, data, a.batch_size, a.uratio, a.workers, a.device, a.blocks, a.block)
    print(f"{a.net} step, median over {a.blocks} blocks of {a.block} steps:")
    print(f"  compute only (pre-made batches on the device): {pre:9.2f} ms")
    print(f"  fed by the loader ({a.workers} worker(s)):            {fed:9.2f} ms")
    print(f"  ratio fed / compute-only:                      {fed / pre:9.3f}")
    per_worker = (rw / a.workers) if a.workers else r0
    need = math.ceil((1e3 / pre) / per_worker) + 1
    print(f"workers that keep this step fed (step rate {1e3 / pre:.1f}/s, {per_worker:.1f} steps/s per worker): {need}")
    return dict(views=views, loader_main=r0, loader_workers=rw, fed_ms=fed, compute_ms=pre, ratio=fed / pre, workers_needed=need)

if __name__ == '__main__': main()
