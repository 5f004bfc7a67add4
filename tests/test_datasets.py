"""SVHN and MedMNIST from small files of their formats, written here, through `load_dataset` and the loaders."""
import urllib.error
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import scipy.io
import torch

from defixmatch.augment import denormalize
from defixmatch.data import (DATASET_NAMES, DATASET_NUM_CLASSES, MEDMNIST, MEDMNIST_TABLE1, load_dataset,
                             ssl_dataloaders)


def write_svhn(root, n=20, seed=0):
    "train_32x32.mat and test_32x32.mat as torchvision reads them: X 32 x 32 x 3 x N uint8, y N x 1 in 1..10"
    rng, out = np.random.default_rng(seed), {}
    for split in ('train', 'test'):
        X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8)[:, None]
        scipy.io.savemat(Path(root) / f'{split}_32x32.mat', {'X': X, 'y': y})
        out[split] = X, y
    return out


def write_medmnist(path, n_classes, rgb, n=(40, 5, 10), seed=0):
    "A .npz as the medmnist package writes it: {train,val,test}_images (N x 28 x 28 [x 3]) and _labels (N x 1)"
    rng, arrays = np.random.default_rng(seed), {}
    for split, k in zip(('train', 'val', 'test'), n):
        arrays[f'{split}_images'] = rng.integers(0, 256, (k, 28, 28, 3) if rgb else (k, 28, 28), dtype=np.uint8)
        arrays[f'{split}_labels'] = rng.integers(0, n_classes, (k, 1), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.fixture
def no_md5():
    "torchvision's SVHN MD5 check off: the files here are stand-ins"
    with mock.patch('torchvision.datasets.svhn.check_integrity', return_value=True): yield


def test_names():
    assert set(MEDMNIST_TABLE1) <= set(DATASET_NAMES) and {'svhn', 'svhn_extra'} <= set(DATASET_NAMES)
    assert set(DATASET_NUM_CLASSES) == set(DATASET_NAMES)
    assert [DATASET_NUM_CLASSES[k] for k in MEDMNIST_TABLE1] == [7, 2, 5, 2, 8]


def test_svhn_loads_and_batches(tmp_path, no_md5):
    ref = write_svhn(tmp_path)
    d = load_dataset('svhn', tmp_path, download=False)
    X, y = ref['train']
    assert torch.equal(d.train_x[3], torch.from_numpy(X[..., 3]).permute(2, 0, 1))   # image 3, channels first
    assert d.train_y.tolist() == [int(v) % 10 for v in y[:, 0]]                      # label 10 is the digit 0
    assert d.hflip is False and d.classes == [str(i) for i in range(10)]
    dls = ssl_dataloaders(d, 10, batch_size=10, uratio=2, n_iter=2, device='cpu')
    x, ylb = dls.train.one_batch()
    assert x.shape == (2 * (10 + 20), 3, 32, 32) and ylb.shape == (10,)
    xv, yv = dls.valid.one_batch()
    assert torch.equal(denormalize(xv, d.mean, d.std), d.test_x) and torch.equal(torch.as_tensor(yv), d.test_y)


def test_svhn_offline_is_one_line(tmp_path):
    with mock.patch('torchvision.datasets.svhn.download_url', side_effect=urllib.error.URLError('no network')):
        with pytest.raises(FileNotFoundError) as e: load_dataset('svhn', tmp_path)
    msg = str(e.value)
    assert '\n' not in msg and str(tmp_path.resolve()) in msg and 'train_32x32.mat, test_32x32.mat' in msg
    assert 'could not be downloaded (no network)' in msg


@pytest.mark.parametrize('name,n_classes,rgb', [('pneumoniamnist', 2, False), ('bloodmnist', 8, True)])
def test_medmnist_loads_and_trains_a_step(tmp_path, name, n_classes, rgb):
    arrays = write_medmnist(tmp_path / f'{name}.npz', n_classes, rgb)
    d = load_dataset(name, tmp_path, size=28)
    x = torch.from_numpy(arrays['train_images'])
    assert torch.equal(d.train_x, x.permute(0, 3, 1, 2) if rgb else x[:, None].expand(-1, 3, -1, -1))
    assert torch.equal(d.test_y, torch.from_numpy(arrays['test_labels'][:, 0]).long())
    assert (d.hflip, d.num_classes) == (MEDMNIST[name][1], n_classes)
    assert load_dataset(name, tmp_path).train_x.shape == (40, 3, 32, 32)           # the default size
    dls = ssl_dataloaders(d, 7, batch_size=4, uratio=2, n_iter=2, device='cpu', balanced=False)
    assert len(dls.lb_idx) == 7                                                    # not a multiple of the classes
    xb, yb = dls.train.one_batch()
    assert xb.shape == (2 * (4 + 8), 3, 28, 28) and set(yb.tolist()) <= set(d.train_y[dls.lb_idx].tolist())
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, n_classes))
    loss = torch.nn.functional.cross_entropy(model(xb)[:len(yb)], yb)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


def test_medmnist_missing_and_refused(tmp_path):
    with pytest.raises(FileNotFoundError) as e: load_dataset('dermamnist', tmp_path)
    assert '\n' not in str(e.value) and str((tmp_path / 'dermamnist.npz').resolve()) in str(e.value)
    with pytest.raises(ValueError, match='multi-label'): load_dataset('chestmnist', tmp_path)
