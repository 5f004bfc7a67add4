"""`benchmarks/ssl_digits.py --quick`: every experiment on a tiny configuration, one row per run, resuming, label noise."""
import json

import pytest
from benchmark_scripts import load_script, rows


def test_noisy_labels_touch_only_labelled_images():
    import torch
    bench = load_script('ssl_digits')
    y, lb = torch.arange(100) % 10, torch.arange(0, 100, 2)
    noisy = bench.noisy_labels(y, lb, 0.2, seed=3, num_classes=10)
    changed = (noisy != y).nonzero().flatten()
    assert set(changed.tolist()) <= set(lb.tolist())            # the unlabelled images keep their labels
    assert 1 <= len(changed) <= 10                               # at most 20% of 50 (a uniform draw may hit the true class)
    assert torch.equal(noisy, bench.noisy_labels(y, lb, 0.2, seed=3, num_classes=10))  # the seed fixes them
    assert not torch.equal(noisy, bench.noisy_labels(y, lb, 0.2, seed=4, num_classes=10))
    assert torch.equal(bench.noisy_labels(y, lb, 0., seed=3, num_classes=10), y)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_quick_grid_rows_and_resume(tmp_path, capsys):
    bench = load_script('ssl_digits')
    out = tmp_path/'res'
    bench.main(['--quick', '--out', str(out)])
    runs, curves = rows(out/'ssl_digits_runs.csv'), rows(out/'ssl_digits_curves.csv')
    expected = {bench.key_of(dict(zip(bench.KEY, (*r, 4, 20, 16, 4, 2, 0.99)))) for r in bench.grid_a(range(1)) + bench.grid_b(range(1), (1.,))}
    assert len(expected) == 9 + 2 * 4
    got = [bench.key_of(r) for r in runs]
    assert len(got) == len(set(got)) and set(got) == expected
    assert len(curves) == 2 * len(runs)                        # an evaluation every 2 of 4 iterations
    for r in runs:
        assert r['status'] == 'ok', r
        assert 0 <= float(r['acc']) <= 1 and float(r['ce']) > 0
    ada = [r for r in runs if r['lam_mode'] == 'adaptive']
    assert {r['method'] for r in ada} == {'depseudolabel'} and all(0 <= float(r['lambda_end']) <= 10 for r in ada)
    views = rows(out/'ssl_digits_views.csv')
    assert sorted(r['views'] for r in views) == ['weak+strong', 'weak+weak'] and all(float(r['wall_s']) > 0 for r in views)
    # a second call finds every run done and the timing made
    bench.main(['--quick', '--out', str(out)])
    assert len(rows(out/'ssl_digits_runs.csv')) == len(runs) and len(rows(out/'ssl_digits_views.csv')) == 2
    side = json.loads((out/'ssl_digits_runs.json').read_text())
    assert [e['new_runs'] for e in side['invocations']] == [len(runs), 0]
    assert side['versions']['git_commit'] and side['budget']['iterations'] == 4


def test_t_interval_and_paired_differences():
    import math
    import pandas as pd
    bench = load_script('ssl_digits')
    assert math.isclose(bench.t_ci([1., 2., 3.]), 4.302652729911275 * 1 / math.sqrt(3))  # t_{0.975,2} s / sqrt(n)
    assert math.isnan(bench.t_ci([1.])) and math.isclose(bench.t_ci([1., float('nan'), 3.]), 12.706204736174698 * math.sqrt(2) / math.sqrt(2))
    wide = pd.DataFrame({('acc', 'a'): [0.9, 0.8, float('nan')], ('acc', 'b'): [0.7, 0.9, 0.5]})
    p = bench.paired(wide, 'a', 'b', 'acc')  # the seed where a did not finish is left out
    assert p['n'] == 2 and p['pos'] == 1 and math.isclose(p['mean'], 0.05)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_replay_and_lambda_opt_trace_print_every_step(tmp_path, capsys):
    bench = load_script('ssl_digits')
    assert bench.main(['--quick', '--out', str(tmp_path), '--replay', 'vatdeentmin', '0', '1']) is None
    out = capsys.readouterr().out
    assert [l.split(':')[0] for l in out.splitlines() if l.startswith('step')] == ['step 1', 'step 2', 'step 3']
    bench.main(['--quick', '--out', str(tmp_path), '--trace_lambda_opt', '1', '0.2', '0'])
    out = capsys.readouterr().out
    assert [l.split(':')[0] for l in out.splitlines() if l.startswith('iter')] == ['iter 2', 'iter 4']
    assert not list(tmp_path.glob('*.csv'))  # neither writes results
    with pytest.raises(ValueError, match='METHOD must be one of'): bench.main(['--quick', '--replay', 'fixmatch', '0', '1'])


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_shards_split_the_grid_without_overlap(tmp_path):
    bench = load_script('ssl_digits')
    out = tmp_path/'res'
    key = lambda r: bench.key_of(dict(zip(bench.KEY, (*r, 4, 20, 16, 4, 2, 0.99))))
    grid = bench.grid_b(range(1), (1.,))
    bench.main(['--quick', '--exp', 'B', '--out', str(out), '--shard', '1', '2'])
    assert [bench.key_of(r) for r in rows(out/'ssl_digits_runs.csv')] == [key(r) for r in grid[1::2]]
    bench.main(['--quick', '--exp', 'B', '--out', str(out), '--shard', '0', '2'])
    got = [bench.key_of(r) for r in rows(out/'ssl_digits_runs.csv')]
    assert len(got) == len(set(got)) == len(grid) and set(got) == {key(r) for r in grid}
    with pytest.raises(ValueError, match='--shard'): bench.main(['--quick', '--out', str(out), '--shard', '2', '2'])


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_probe_of_h_by_split(tmp_path):
    bench = load_script('ssl_digits')
    bench.main(['--quick', '--exp', 'D', '--out', str(tmp_path)])
    probe = rows(tmp_path/'ssl_digits_probe.csv')
    assert [(r['method'], r['split']) for r in probe] == [(m, s) for m in bench.PROBE_METHODS
                                                          for s in ('labelled', 'unlabelled only', 'test')]
    assert {r['split']: int(r['n']) for r in probe} == {'labelled': 20, 'unlabelled only': 1297 - 20, 'test': 500}
    for r in probe: assert float(r['h_mean']) >= 0 and float(r['ce']) > 0 and 0 <= float(r['acc']) <= 1
    # the probe's run is the grid's run: same EMA accuracy as experiment A's row of that method and seed
    bench.main(['--quick', '--exp', 'A', '--out', str(tmp_path)])
    acc_a = {r['method']: r['acc'] for r in rows(tmp_path/'ssl_digits_runs.csv')}
    assert all(float(r['ema_acc']) == float(acc_a[r['method']]) for r in probe)
    bench.main(['--quick', '--exp', 'D', '--out', str(tmp_path)])   # resumes: nothing new
    assert len(rows(tmp_path/'ssl_digits_probe.csv')) == len(probe)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_experiment_e_runs_vat_and_devat_at_each_lambda(tmp_path):
    bench = load_script('ssl_digits')
    bench.main(['--quick', '--exp', 'E', '--lambdas_e', '0.05', '0.2', '--out', str(tmp_path)])
    runs = rows(tmp_path/'ssl_digits_runs.csv')
    assert sorted((r['exp'], r['method'], float(r['lambda_u']), r['lam_mode']) for r in runs) == \
        [('E', m, l, 'rampup') for m in ('devat', 'vat') for l in (0.05, 0.2)]
    assert all(r['status'] == 'ok' and float(r['lambda_end']) == float(r['lambda_u']) for r in runs)  # the ramp ends at lambda
