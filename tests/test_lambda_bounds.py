"""The bound on λ follows from H (losses notebook): the command line warns that the debiased risk is unbounded below only
for a method whose H is unbounded above and a λ beyond its bound, and `AdaptiveLambda` clips only there."""
import os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*args, cwd):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-m', 'defixmatch.train', '--dataset', 'digits', '--cpu', '--dry_run',
                           '--save_dir', str(cwd), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.mark.parametrize('args,warns', [
    (['--method', 'depseudolabel', '--ulb_loss_ratio', '10'], False),   # the paper's Fig. 6/7 setting: H <= -log tau
    (['--method', 'deentmin', '--ulb_loss_ratio', '10'], False),        # H <= log C
    (['--method', 'defixmatch', '--ulb_loss_ratio', '0.8'], True),      # the strong-view CE: bound 1/2 with eq. 52
    (['--method', 'defixmatch', '--ulb_loss_ratio', '0.5'], False)])
def test_unbounded_risk_warning_follows_h(tmp_path, args, warns):
    r = dry_run(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert ('unbounded below' in out) == warns, out[-2000:]
    if warns: assert "strong-view cross-entropy weighs ½ − λ" in out


def test_declared_bounds():
    from defixmatch.methods import make_method
    bounds = {n: make_method(n, **kw).max_lambda() for n, kw in [
        ('defixmatch', {}), ('fixmatch', dict(modified=False)), ('depseudolabel', {}), ('pseudolabel', dict(modified=False)),
        ('deentmin', {}), ('depimodel', {}), ('demeanteacher', {}), ('devat', {}), ('vatdeentmin', {}),
        ('deflexmatch', {}), ('defreematch', dict(modified=False)), ('desoftmatch', {})]}
    assert bounds == {'defixmatch': 0.5, 'fixmatch': 0., 'depseudolabel': None, 'pseudolabel': None, 'deentmin': None,
                      'depimodel': None, 'demeanteacher': None, 'devat': 0., 'vatdeentmin': None, 'deflexmatch': 0.5,
                      'defreematch': 0., 'desoftmatch': 0.5}


def test_adaptive_lambda_clips_only_where_a_bound_exists():
    import torch
    from fastcore.basics import noop
    from defixmatch.data import load_dataset, ssl_dataloaders
    from defixmatch.models import SmallCNN
    from defixmatch.learner import ssl_learner
    from defixmatch.diagnostics import AdaptiveLambda
    digits = load_dataset('digits')
    tops = {}
    for name in ('defixmatch', 'depseudolabel', 'deentmin'):
        dls = ssl_dataloaders(digits, num_labels=50, batch_size=8, uratio=2, n_iter=2, eval_batch_size=500, seed=0,
                              num_workers=0, device='cpu')
        torch.manual_seed(0)
        learn = ssl_learner(dls, SmallCNN(10, width=8), name, save_dir=None)
        learn.remove_cb(learn.progress); learn.logger = noop
        ad = AdaptiveLambda(every=1, max_lambda=7.)
        learn.fit_ssl(2, cbs=ad)
        tops[name] = ad.top
    assert tops == {'defixmatch': 0.5, 'depseudolabel': 7., 'deentmin': 7.}
