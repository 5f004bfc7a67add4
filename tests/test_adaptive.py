"FlexMatch, FreeMatch and SoftMatch (biased and debiased) train from `ssl_learner` and `defixmatch-train`; a resume is bit-exact, state included."
import math, tempfile
from pathlib import Path
import pandas as pd
import pytest, torch
from fastcore.basics import noop
from fastai.callback.core import Callback, CancelFitException

from defixmatch.data import load_dataset, ssl_dataloaders
from defixmatch.models import SmallCNN
from defixmatch.learner import ssl_learner
from defixmatch.checkpoint import read_checkpoint
from test_cli import cli, assert_one_line_error

NAMES = ['flexmatch', 'deflexmatch', 'freematch', 'defreematch', 'softmatch', 'desoftmatch']
STATE = {'flexmatch': ['memory', 'beta'], 'freematch': ['tau_t', 'p_t'], 'softmatch': ['mu_t', 'var_t', 'p_model']}
# thresholds low enough, and EMAs short enough, for a few steps of a tiny network to move every part of the state
KW = {'flexmatch': dict(p_cutoff=0.2), 'freematch': dict(ema_p=0.5), 'softmatch': dict(ema_p=0.5)}

def base(name): return name[2:] if name.startswith('de') else name

@pytest.fixture(scope='module')
def digits(): return load_dataset('digits')

def learner(digits, name, save_dir, init_seed=0):
    torch.manual_seed(init_seed)
    dls = ssl_dataloaders(digits, num_labels=50, batch_size=4, uratio=2, n_iter=5, eval_batch_size=512, seed=0)
    learn = ssl_learner(dls, SmallCNN(10, width=8), name, save_dir=save_dir, **KW[base(name)])
    learn.remove_cb(learn.progress); learn.logger = noop
    return learn

class KillAfter(Callback):
    order = 80  # after the checkpoint
    def __init__(self, it): self.it = it
    def after_epoch(self):
        if self.learn.iteration >= self.it: raise CancelFitException()

@pytest.mark.parametrize('name', NAMES)
def test_resume_is_bit_exact_with_the_state(digits, name, tmp_path):
    torch.set_num_threads(1)
    full = learner(digits, name, tmp_path/'full')
    full.fit_ssl(15)
    killed = learner(digits, name, tmp_path/'resumed')
    killed.fit_ssl(15, cbs=KillAfter(10))
    assert killed.iteration == 10
    saved = read_checkpoint(killed.save_path/'latest_model.pth')['method_state']
    assert sorted(saved) == sorted(STATE[base(name)])
    for k, v in saved.items(): assert torch.equal(v, getattr(killed.ssl_method, k).cpu()), k
    init = learner(digits, name, None).ssl_method
    init.init_state(10, killed.dls.ulb_idx, len(killed.dls.train.dataset))
    assert any(not torch.equal(v, getattr(init, k)) for k, v in saved.items())  # the state moved in 10 steps

    resumed = learner(digits, name, tmp_path/'resumed', init_seed=1)  # other initial weights, a fresh state
    resumed.fit_ssl(15, resume=True)
    assert resumed.iteration == 15
    for k in STATE[base(name)]:
        assert torch.equal(getattr(resumed.ssl_method, k), getattr(full.ssl_method, k)), k  # bit-exact state
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()): assert torch.equal(a, b)
    for a, b in zip(resumed.ema.module.state_dict().values(), full.ema.module.state_dict().values()): assert torch.equal(a, b)
    log, ref = pd.read_csv(resumed.save_path/'log.csv'), pd.read_csv(full.save_path/'log.csv')
    assert list(log['iter']) == [5, 10, 15]
    assert log['mask_ratio'].tolist() == ref['mask_ratio'].tolist() and log['top1_acc'].tolist() == ref['top1_acc'].tolist()

def test_state_of_another_method_is_refused(digits, tmp_path):
    src = learner(digits, 'defreematch', tmp_path/'a')
    src.fit_ssl(5)
    other = learner(digits, 'desoftmatch', None)
    from defixmatch.checkpoint import load_ssl_checkpoint
    other.ssl_method.init_state(10)
    with pytest.raises(ValueError, match="is not SoftMatch's"): load_ssl_checkpoint(other, src.save_path/'latest_model.pth')

@pytest.mark.parametrize('name', NAMES)
def test_cli_trains_each(name, tmp_path):
    res = cli('train', '--dataset', 'digits', '--method', name, '--num_train_iter', 4, '--num_eval_iter', 2,
              '--batch_size', 8, '--uratio', 2, '--no-progress', '--save_dir', tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    ck = next(tmp_path.rglob('latest_model.pth'))
    st = read_checkpoint(ck)
    assert st['config']['method'] == name and st['it'] == 4
    assert sorted(st['method_state']) == sorted(STATE[base(name)])

def test_cli_lists_and_documents_the_flags():
    res = cli('train', '--help')
    assert res.returncode == 0, res.stderr
    for flag in ['deflexmatch', 'defreematch', 'desoftmatch', '--thresh_warmup', '--mapping', '--ema_p', '--n_sigma', '--dist_align']:
        assert flag in res.stdout, flag

@pytest.mark.parametrize('flags,fragment', [(['--method', 'flexmatch', '--mapping', 'cubic'], '--mapping must be one of'),
                                            (['--method', 'defreematch', '--ema_p', '1'], '--ema_p must be in [0, 1)'),
                                            (['--method', 'softmatch', '--n_sigma', '0'], '--n_sigma must be a finite number > 0')])
def test_bad_hyper_parameters_are_one_line(flags, fragment, tmp_path):
    assert_one_line_error(cli('train', '--dataset', 'digits', *flags, '--save_dir', tmp_path/'runs'), fragment)
    assert not (tmp_path/'runs').exists()
