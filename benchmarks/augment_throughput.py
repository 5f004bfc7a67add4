"""Strong-augmentation throughput on one CPU core: `defixmatch.augment` against a per-image PIL pipeline.

The strong view is FixMatch's RandAugment (3 ops drawn from 14, random magnitudes) with Cutout, then a random
horizontal flip and a random 32x32 crop of the image padded by 4 pixels, then conversion to a normalised float32
batch. Both implementations produce exactly that:

- `defixmatch.augment.strong_transform` on uint8 tensor batches (the training loader's path);
- the authors' style of pipeline, one PIL image at a time: `RandAugmentPIL` (the same policy with PIL operations),
  torchvision's `RandomHorizontalFlip`, `RandomCrop(32, padding=4)`, `ToTensor`, `Normalize`, then `torch.stack`.

Images are real CIFAR-10 images read from `cifar10-jpeg.tar.gz` (by default the file `cifar10_tarball` of
`benchmarks/workspace.py` finds: `$DEFIXMATCH_CIFAR10_TGZ`, else `../shared/data/` beside the project root). Rounds alternate between the
implementations and each figure is the best round, which limits the noise of other processes running at the same
time. This is a measurement, not a test.

    python benchmarks/augment_throughput.py [--tgz PATH] [--n-images 2048] [--batch 512] [--rounds 5]
    python benchmarks/augment_throughput.py --n-images 64 --batch 32 --rounds 1     # a quick check that it runs
"""
import argparse, io, sys, tarfile, time
from pathlib import Path
import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from defixmatch.augment import strong_transform, RandAugmentPIL
from defixmatch.data import CIFAR_STATS
from workspace import CIFAR10_TGZ_ENV, cifar10_tarball

def read_images(tgz, n):
    "The first `n` images of the tarball, as an N x 3 x 32 x 32 uint8 tensor"
    out = []
    with tarfile.open(tgz, 'r|gz') as tf:
        for m in tf:
            if not (m.isfile() and m.name.lower().endswith(('.jpg', '.jpeg', '.png'))): continue
            out.append(np.array(Image.open(io.BytesIO(tf.extractfile(m).read())).convert('RGB')))
            if len(out) == n: break
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()

def rate(fn, n_images):
    t0 = time.perf_counter(); fn(); return n_images / (time.perf_counter() - t0)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--tgz', default=None,
                    help=f'image-folder tarball to read the images from (default: cifar10-jpeg.tar.gz, from ${CIFAR10_TGZ_ENV} '
                         'or ../shared/data/ beside the project root)')
    ap.add_argument('--n-images', type=int, default=2048)
    ap.add_argument('--batch', type=int, default=512, help='batch size of the tensor implementation')
    ap.add_argument('--rounds', type=int, default=5)
    args = ap.parse_args()
    tgz = Path(args.tgz) if args.tgz else cifar10_tarball()
    if tgz is None or not tgz.is_file():
        sys.exit(f"no tarball: {args.tgz or 'cifar10-jpeg.tar.gz'} not found; pass --tgz PATH or set {CIFAR10_TGZ_ENV}")
    torch.set_num_threads(1)
    x = read_images(tgz, args.n_images)
    n = len(x)
    mean, std = CIFAR_STATS['cifar10']
    pils = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in x]

    strong, g = strong_transform(mean, std), torch.Generator().manual_seed(0)
    def ours():
        for i in range(0, n, args.batch): strong(x[i:i + args.batch], generator=g)
    n_single = min(n, 256)
    def ours_single():
        for i in range(n_single): strong(x[i], generator=g)
    pil_pipe = T.Compose([RandAugmentPIL(seed=0), T.RandomHorizontalFlip(), T.RandomCrop(32, padding=4), T.ToTensor(), T.Normalize(mean, std)])
    def pil():
        for i in range(0, n, args.batch): torch.stack([pil_pipe(p) for p in pils[i:i + args.batch]])

    ours(); pil()      # warm-up
    best = {'ours': 0., 'ours_single': 0., 'pil': 0.}
    for _ in range(args.rounds):
        best['ours'] = max(best['ours'], rate(ours, n))
        best['pil'] = max(best['pil'], rate(pil, n))
        best['ours_single'] = max(best['ours_single'], rate(ours_single, n_single))
    print(f"strong augmentation of {n} CIFAR-10 images (32x32), 1 thread, best of {args.rounds} rounds")
    print(f"  defixmatch.augment, batches of {args.batch}: {best['ours']:9.0f} images/s")
    print(f"  defixmatch.augment, one image per call: {best['ours_single']:9.0f} images/s")
    print(f"  per-image PIL pipeline:                 {best['pil']:9.0f} images/s")
    print(f"  ratio (batches / PIL): {best['ours'] / best['pil']:.2f}")

if __name__ == '__main__': main()
