"""`benchmarks/workspace.py`: the tarball finder and `untar_slice` (safe, partial extraction of an image-folder tarball)."""
import contextlib, io, os, tarfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

import workspace
from workspace import CIFAR10_TGZ_ENV, cifar10_tarball, untar_slice


def test_cifar10_tarball_env_and_cwd(tmp_path, monkeypatch):
    beside_root = Path(workspace.__file__).resolve().parents[1].parent / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'
    monkeypatch.delenv(CIFAR10_TGZ_ENV, raising=False)
    found = cifar10_tarball()
    assert found == (beside_root if beside_root.is_file() else None)
    monkeypatch.chdir(tmp_path)
    assert cifar10_tarball() == found                                   # another working directory, the same file
    f = tmp_path / 'c10.tgz'; f.write_bytes(b'')
    monkeypatch.setenv(CIFAR10_TGZ_ENV, str(f)); assert cifar10_tarball() == f
    monkeypatch.setenv(CIFAR10_TGZ_ENV, str(tmp_path / 'missing.tgz')); assert cifar10_tarball() is None


def png_bytes(value, size=8):
    "A `size` x `size` PNG of one grey `value`"
    b = io.BytesIO(); Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(b, format='png'); return b.getvalue()


def write_tar(path, names):
    "A .tar.gz whose members, named `names`, are small PNGs"
    with tarfile.open(path, 'w:gz') as tf:
        for i, name in enumerate(names):
            data = png_bytes(i); ti = tarfile.TarInfo(name); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
    return path


@contextlib.contextmanager
def without_tar_filters():
    "Make `tarfile` look like a Python without extraction filters"
    saved = tarfile.data_filter; del tarfile.data_filter
    try: yield
    finally: tarfile.data_filter = saved


def test_untar_slice_first_images_per_class(tmp_path):
    names = [f'pets/{split}/{c}/{i}.png' for split in ('train', 'test') for c in ('cat', 'dog') for i in range(3)]
    ok = write_tar(tmp_path / 'ok.tgz', names + ['pets/README.txt', 'pets/train/cat/notes.txt'])
    root = untar_slice(ok, tmp_path / 'out', n_train=2, n_test=1)
    assert root == tmp_path / 'out' / 'pets'
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_file()) == \
        ['test/cat/0.png', 'test/dog/0.png', 'train/cat/0.png', 'train/cat/1.png', 'train/dog/0.png', 'train/dog/1.png']


@pytest.mark.parametrize('filters', [True, False])
def test_untar_slice_refuses_unsafe_members(tmp_path, filters):
    "With or without `tarfile`'s extraction filters (the oldest supported Pythons lack them: no `filter` is passed)"
    names = [f'pets/{split}/{c}/{i}.png' for split in ('train', 'test') for c in ('cat', 'dog') for i in range(3)]
    ok = write_tar(tmp_path / 'ok.tgz', names)
    extract = tarfile.TarFile.extract
    with mock.patch.object(tarfile.TarFile, 'extract', autospec=True, side_effect=extract) as spy, \
         (contextlib.nullcontext() if filters else without_tar_filters()):
        assert untar_slice(ok, tmp_path / 'out', n_train=1, n_test=1) == tmp_path / 'out' / 'pets'
        assert len(spy.call_args_list) == 4
        assert [c.kwargs.get('filter') for c in spy.call_args_list] == ['data' if filters else None] * 4
        for bad in ('../evil/train/cat/0.png', '/tmp/evil/train/cat/0.png', 'pets/../../train/cat/0.png'):
            tgz = write_tar(tmp_path / 'bad.tgz', [bad])
            with pytest.raises(ValueError, match=f"refusing to extract '{bad}'"): untar_slice(tgz, tmp_path / 'x' / 'y')
    assert not (tmp_path / 'evil').exists() and not (tmp_path / 'x').exists() and not Path('/tmp/evil').exists()
    with pytest.raises(FileNotFoundError, match="no '<root>/train"):
        untar_slice(write_tar(tmp_path / 'flat.tgz', ['a.png']), tmp_path / 'z')
