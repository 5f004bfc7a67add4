"Reliability of `defixmatch-train`: SIGKILL then --resume, corrupt checkpoints, seeded reproducibility."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest, torch

from test_cli import cli, assert_one_line_error

# a short digits run: a checkpoint every 10 iterations, small batches (a few seconds of training on a CPU)
K, N = 60, 10
SMALL = ['--dataset', 'digits', '--method', 'defixmatch', '--num_train_iter', K, '--num_eval_iter', N,
         '--batch_size', 8, '--uratio', 2, '--no-progress']
RUN = 'Dedigits_100_0.5_0'

def _cmd(*args): return [sys.executable, '-m', 'defixmatch.train', *map(str, SMALL), *map(str, args)]

def _ckpt_it(path):
    from defixmatch.models import read_checkpoint
    return int(read_checkpoint(path)['it'])

def test_sigkill_then_resume_reaches_the_same_end(tmp_path):
    killed_dir, full_dir = tmp_path/'killed', tmp_path/'full'
    latest = killed_dir/RUN/'latest_model.pth'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    p = subprocess.Popen(_cmd('--save_dir', killed_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        t0 = time.time()
        while True:   # wait for a checkpoint, then kill the process mid-training
            if p.poll() is not None: pytest.fail(f"the run ended before it could be killed: {p.stderr.read().decode()[-2000:]}")
            if latest.exists():
                try:
                    if _ckpt_it(latest) >= N: break
                except ValueError: pass   # cannot happen with atomic writes; retried rather than failed here
            if time.time() - t0 > 300: pytest.fail('no checkpoint after 300 s')
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    it_killed = _ckpt_it(latest)
    assert N <= it_killed < K, it_killed
    # checkpoints are written to a temporary file then renamed: the kill can leave at most the one temporary file
    # it interrupted, never a partial checkpoint under the real name
    tmp_after_kill = {f.name for f in (killed_dir/RUN).iterdir() if f.name.endswith('.tmp')}
    assert len(tmp_after_kill) <= 1, tmp_after_kill

    # restart from the last checkpoint (same run folder, no --overwrite needed to resume)
    res = cli('train', *SMALL, '--save_dir', killed_dir, '--resume', '--load_path', latest)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _ckpt_it(latest) == K
    log = pd.read_csv(killed_dir/RUN/'log.csv')
    assert list(log['iter'])[-1] == K and log['iter'].is_monotonic_increasing and log['iter'].is_unique
    # the resumed run's own writes left no temporary file, and every checkpoint of the folder loads
    assert {f.name for f in (killed_dir/RUN).iterdir() if f.name.endswith('.tmp')} <= tmp_after_kill
    for f in ("latest_model.pth", "model_best.pth"): assert 0 < _ckpt_it(killed_dir/RUN/f) <= K, f

    # an uninterrupted run ends at the same iteration, with the same weights (CPU runs are deterministic)
    res = cli('train', *SMALL, '--save_dir', full_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _ckpt_it(full_dir/RUN/'latest_model.pth') == K
    from defixmatch.models import read_checkpoint
    a, b = read_checkpoint(latest), read_checkpoint(full_dir/RUN/'latest_model.pth')
    for k in ('train_model', 'eval_model'):
        for n in a[k]: torch.testing.assert_close(a[k][n], b[k][n], rtol=1e-4, atol=1e-5, msg=f'{k}.{n}')
    ra, rb = json.loads((killed_dir/RUN/'report.json').read_text()), json.loads((full_dir/RUN/'report.json').read_text())
    assert ra['iteration'] == rb['iteration'] == K
    assert abs(ra['acc'] - rb['acc']) < 1e-9

def test_corrupt_or_truncated_checkpoint_gives_a_clear_error(tmp_path):
    from defixmatch.models import get_model
    good = tmp_path/'good.pth'
    m = get_model('LeNet', 10, in_channels=3, img_size=32)
    torch.save({'train_model': m.state_dict(), 'eval_model': m.state_dict(), 'it': 10}, good)
    data = good.read_bytes()
    (tmp_path/'truncated.pth').write_bytes(data[:len(data) // 2])
    (tmp_path/'garbage.pth').write_bytes(os.urandom(4096))
    res = cli('train', *SMALL, '--save_dir', tmp_path/'runs', '--resume', '--load_path', tmp_path/'truncated.pth')
    assert_one_line_error(res, 'truncated.pth', code=1)
    res = cli('eval', '--load_path', tmp_path/'garbage.pth', '--dataset', 'digits', '--net', 'LeNet')
    assert_one_line_error(res, 'garbage.pth', code=1)
    from defixmatch.models import read_checkpoint
    for bad in ('truncated.pth', 'garbage.pth'):
        with pytest.raises(ValueError, match=bad): read_checkpoint(tmp_path/bad)
    res = cli('train', *SMALL, '--save_dir', tmp_path/'runs', '--resume', '--load_path', tmp_path/'absent.pth')
    assert_one_line_error(res, 'absent.pth', code=2)

_PROBE = r"""
import sys, hashlib, torch
from defixmatch.train import resolve_args, build_data
for seed in ('0', '1'):
    a = resolve_args(sys.argv[1:] + ['--seed', seed])
    _, dls = build_data(a, device='cpu')
    dls.train.set_epoch(0)
    it = iter(dls.train)
    h = hashlib.sha256()
    for _ in range(2):
        for t in next(it): h.update(t.contiguous().numpy().tobytes())
    print(hashlib.sha256(dls.lb_idx.numpy().tobytes()).hexdigest(), h.hexdigest())
"""

def test_same_seed_same_split_and_first_batches(tmp_path):
    "Two processes with the same seed draw the same labelled split and the same first batches; another seed does not."
    def probe():
        res = subprocess.run([sys.executable, '-c', _PROBE, *map(str, SMALL), '--save_dir', tmp_path],
                             capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout.split()
    a, b = probe(), probe()
    assert len(a) == 4 and a == b        # seed 0 then seed 1, in two separate processes
    assert a[0] != a[2] and a[1] != a[3]  # the other seed gives another split and other batches
