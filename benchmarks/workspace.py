"""Helpers for the project's own workspace: where the CIFAR-10 JPEG tarball is, and how to extract a slice of it.

Not part of the library: the tests, the benchmarks and the notebooks that read `cifar10-jpeg.tar.gz` use them (the
notebooks put this folder on `sys.path`). The tarball is looked for in `$DEFIXMATCH_CIFAR10_TGZ`, else in
`../shared/data/` beside the project's root folder, whatever the working directory.
"""
import os, tarfile
from pathlib import Path, PurePosixPath

__all__ = ['CIFAR10_TGZ_ENV', 'IMAGE_EXTS', 'cifar10_tarball', 'untar_slice']

CIFAR10_TGZ_ENV = 'DEFIXMATCH_CIFAR10_TGZ'
IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.gif', '.webp')  # the image files `defixmatch.data.load_image_folder` reads
ROOT = Path(__file__).resolve().parents[1]                  # the project's root folder (this file is in benchmarks/)

def cifar10_tarball()->Path|None:
    "`cifar10-jpeg.tar.gz`: `$DEFIXMATCH_CIFAR10_TGZ`, else `../shared/data/` beside the project root; None if absent"
    env = os.environ.get(CIFAR10_TGZ_ENV)
    p = Path(env).expanduser() if env else ROOT.parent / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'
    return p if p.is_file() else None

def untar_slice(tgz, # tarball of an image folder (members <root>/<split>/<class>/<file>)
                dest, # where to extract
                n_train:int=20, # images per class from train/
                n_test:int=10, # images per class from test/ (or valid/, val/)
               )->Path: # the extracted <root> folder
    "Extract the first `n_train` training and `n_test` test images of each class of an image-folder tarball"
    counts, root = {}, None
    # the 'data' filter exists from Python 3.10.12 / 3.11.4 on; the checks below apply in every version
    kw = dict(filter='data') if hasattr(tarfile, 'data_filter') else {}
    with tarfile.open(tgz, 'r|*') as tf:
        for m in tf:
            parts = PurePosixPath(m.name).parts
            if not m.isfile() or len(parts) < 3 or parts[-3] not in ('train', 'test', 'valid', 'val'): continue
            if PurePosixPath(m.name).suffix.lower() not in IMAGE_EXTS: continue
            if PurePosixPath(m.name).is_absolute() or '..' in parts:
                raise ValueError(f"tgz: refusing to extract '{m.name}' from '{tgz}' (absolute path or '..')")
            key = parts[-3:-1]
            if counts.get(key, 0) >= (n_train if parts[-3] == 'train' else n_test): continue
            counts[key] = counts.get(key, 0) + 1
            tf.extract(m, dest, **kw)
            root = Path(dest).joinpath(*parts[:-3])
    if root is None: raise FileNotFoundError(f"no '<root>/train/<class>/<image>' members in '{tgz}'")
    return root
