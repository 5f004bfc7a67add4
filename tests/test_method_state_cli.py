"""A checkpoint's method state is data: resuming from a tampered one (wrong shape, one entry too many, missing state, a
NaN threshold, a memory entry outside the classes, an extra tensor, another method's state) stops before training with
one line and a non-zero exit status, and leaves the checkpoint as it was."""
import hashlib, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BASE = ['--dataset', 'digits', '--cpu', '--num_eval_iter', '2', '--batch_size', '8', '--uratio', '2', '--no-progress']


def train(*args, cwd):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-m', 'defixmatch.train', *BASE, *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp('state')
    r = train('--method', 'deflexmatch', '--num_train_iter', 4, '--save_dir', d, '--save_name', 'src', cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    return d/'src'


def _digests(folder):
    "Every file under `folder` (relative name: sha256)."
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob('*') if p.is_file()}


def _tamper(st):
    ms = st['method_state']
    return {'nan threshold': lambda: ms['beta'].__setitem__(1, float('nan')),
            'one entry too long': lambda: ms.__setitem__('memory', torch.cat([ms['memory'], torch.tensor([-1])])),
            'wrong shape': lambda: ms.__setitem__('beta', torch.zeros(11)),
            'memory out of range': lambda: ms['memory'].__setitem__(0, 10),
            'extra key': lambda: ms.__setitem__('p_model', torch.ones(10)),
            'missing state': lambda: st.pop('method_state')}


@pytest.mark.parametrize('case,why', [('nan threshold', "'beta' holds non-finite values"),
                                      ('one entry too long', "'memory' is int64 (1298,), expected int64 (1297,)"),
                                      ('wrong shape', "'beta' is float32 (11,), expected float32 (10,)"),
                                      ('memory out of range', "'memory' holds values outside [-2, 9]"),
                                      ('extra key', "FlexMatch holds no 'p_model'"),
                                      ('missing state', 'it has none')])
def test_tampered_state_is_one_line(run, tmp_path, case, why):
    folder = tmp_path/'run'
    shutil.copytree(run, folder)
    ck = folder/'latest_model.pth'
    st = torch.load(ck, weights_only=True)
    _tamper(st)[case]()
    torch.save(st, ck)
    digest = hashlib.sha256(ck.read_bytes()).hexdigest()
    r = train('--resume', '--load_path', ck, '--save_dir', tmp_path, '--save_name', 'run', '--num_train_iter', 8, cwd=tmp_path)
    assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    errors = [l for l in r.stderr.splitlines() if 'error' in l]
    assert len(errors) == 1 and errors[0].startswith('defixmatch-train: error:'), r.stderr
    assert "its method state is not FlexMatch's for 10 classes" in errors[0] and why in errors[0], errors[0]
    assert hashlib.sha256(ck.read_bytes()).hexdigest() == digest  # the checkpoint is left as it was


@pytest.mark.parametrize('other,why', [('desoftmatch', "SoftMatch holds no 'memory', 'beta'"),
                                       ('defixmatch', "FixMatch holds no 'memory', 'beta'")])
def test_another_methods_state_is_refused(run, tmp_path, other, why):
    folder = tmp_path/'run'
    shutil.copytree(run, folder)
    (folder/'config.json').unlink()  # nothing but the state itself says which method wrote it
    ck = folder/'latest_model.pth'
    st = torch.load(ck, weights_only=True); del st['config']; torch.save(st, ck)
    before = _digests(folder)
    r = train('--method', other, '--resume', '--load_path', ck, '--save_dir', tmp_path, '--save_name', 'run',
              '--num_train_iter', 8, cwd=tmp_path)
    assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    errors = [l for l in r.stderr.splitlines() if 'error' in l]
    assert len(errors) == 1 and why in errors[0], r.stderr
    # refused before anything in the folder is written: no config.json naming the refused method, every file as it was
    assert not (folder/'config.json').exists(), (folder/'config.json').read_text()
    assert _digests(folder) == before
