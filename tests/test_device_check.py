"""The GPU check (`benchmarks/device_check.sh`) runs end to end as a CPU dry run, on a generated image folder, and
writes every section of its report; a failing or overlong part is recorded without stopping the others."""
import json, os, subprocess, sys
from pathlib import Path

import pytest, torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import device_check as dc
from gpu_step import step_args

@pytest.fixture(scope='module')
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp('out')
    env = {**os.environ, 'OUT': str(out), 'PYTHON': sys.executable}
    for k in [k for k in env if k.startswith('DEVICE_CHECK_')]: env.pop(k)
    r = subprocess.run(['bash', 'benchmarks/device_check.sh', '--device', 'cpu'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)   # generous: a machine running other jobs
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((out / 'device_check.json').read_text()), (out / 'device_check.log').read_text(), r.stdout

def test_dry_run_sections(dry):
    res, log, stdout = dry
    assert res['errors'] == [], res['errors']
    assert set(res) >= {'info', 'data', 'gpu_step', 'train', 'summary', 'errors', 'total_s', 'train_settings'}
    info = res['info']
    assert info['dry_run'] is True and info['device'] == 'cpu' and info['iters'] == 2
    assert Path(info['versions']['defixmatch'][1]).resolve().is_relative_to(ROOT), 'not the checkout\'s package'
    assert res['data']['images'] == {'train': 80, 'test': 30}
    assert res['total_s'] > 0
    assert '=== summary' in stdout and '=== train defixmatch' in log

def test_dry_run_gpu_step(dry):
    g = dry[0]['gpu_step']
    assert g['rc'] == 0
    r = g['results']
    assert r['notes'] == []
    assert {'fp32', 'bf16', 'bf16 + channels_last', 'fp32 + channels_last'} <= set(r['compute'])
    assert any('torch.compile' in k for k in r['compute'])
    assert all(v['it_s'] > 0 for v in r['compute'].values())
    assert any('CPU loader' in k for k in r['fed']) and any('GPU augmentation' in k for k in r['fed'])
    assert r['augment']['max_abs_diff_vs_cpu'] == 0
    assert set(r['fastai']) == {'as shipped', 'lean'} and all(v['ratio'] > 0 for v in r['fastai'].values())

def test_dry_run_reference_commands(dry):
    res = dry[0]
    assert list(res['train']) == ['complete_case', 'fixmatch', 'defixmatch']
    for name, r in res['train'].items():
        assert r['rc'] == 0, (name, r['tail'])
        assert r['iteration'] == 2 and 0 <= r['accuracy'] <= 1 and r['it_s'] > 0, (name, r)
        assert r['train_eval_s'] <= r['wall_s']
        assert res['summary'][f'train {name}']['accuracy'] == r['accuracy']
    cmds = {n: r['cmd'] for n, r in res['train'].items()}
    assert '--modified_fixmatch --ulb_loss_ratio 0 ' in cmds['complete_case'] + ' '
    assert '--modified_fixmatch --ulb_loss_ratio 0.5' in cmds['fixmatch']
    assert '--debiased --ulb_loss_ratio 0.5' in cmds['defixmatch']
    assert all('--num_train_iter 2 --num_eval_iter 2' in c for c in cmds.values())

def test_failing_and_overlong_parts_are_recorded(tmp_path):
    rep = dc.Report(tmp_path)
    r = dc.run_part(rep, 'fails', [sys.executable, '-c', 'print("boom"); raise SystemExit(3)'], 30)
    assert r['rc'] == 3 and 'boom' in r['tail']
    r = dc.run_part(rep, 'sleeps', [sys.executable, '-c', 'import time; print("started", flush=True); time.sleep(60)'], 6,
                    marks=dict(go='^started'))
    assert r['rc'] is None and r['timed_out'] and 'go' in r['marks']   # killed at its limit, not left to sleep
    assert dc.run_part(rep, 'late', [sys.executable, '-c', 'pass'], 1)['skipped']
    rep.res['x'] = float('nan'); rep.save()
    saved = json.loads((tmp_path / 'device_check.json').read_text())
    assert len(saved['errors']) == 3 and saved['x'] is None

def test_step_args():
    y, v = torch.arange(2), [torch.full((n, 3, 4, 4), float(i)) for i, n in enumerate((2, 2, 6, 6))]
    x = torch.cat(v)
    got = step_args((x, y))
    assert got[0] is x and got[1] is y
    got = step_args((*v, y))  # four separate views: concatenated in the package's order
    assert torch.equal(got[0], x) and got[1] is y
    with pytest.raises(ValueError): step_args((y, y, y))

def test_best_workers_and_log_time(tmp_path):
    fed = {'a, CPU loader, 16 workers': {'it_s': 9.0}, 'a, CPU loader, 4 workers': {'it_s': 12.0},
           'a, GPU augmentation': {'it_s': 30.0}}
    assert dc.best_workers({'results': {'fed': fed}}) == 4
    assert dc.best_workers({}) is None
    (tmp_path / 'log.csv').write_text('epoch,time\n0,01:02:03\n')
    assert dc.train_time_s(tmp_path / 'log.csv') == 3723
    assert dc.train_time_s(tmp_path / 'missing.csv') is None
