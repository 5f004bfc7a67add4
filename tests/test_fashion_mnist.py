"""`benchmarks/fashion_mnist.py --quick`: the grid on generated idx files, one row per run with the test metrics of the
best validation checkpoint and of the last one, the validation curves, resuming, and the same numbers again."""
import json, math

import pytest
from benchmark_scripts import load_script, rows


def test_grid_layout():
    bench = load_script('fashion_mnist')
    g = bench.grid(range(5))
    pl = [r for r in g if r[0] == 'PL']
    assert len(pl) == 5 * 2 * (1 + 2 * 4) and len(g) - len(pl) == 5 * 3
    assert sorted({r[2] for r in pl}) == [0., 0.3, 1., 3., 10.]          # lambda from 0 (the complete case) to 10
    assert [r[4] for r in g[:21]] == [0] * 21                             # seed by seed
    at = bench.grid(range(2), exps=('AT',))                              # the adaptive-threshold methods: asked for
    assert len(at) == 2 * 2 * 6 and {r[1] for r in at} == set(bench.ADAPTIVE) and {r[2] for r in at} == {0.5}
    assert not any(r[0] == 'AT' for r in g)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_quick_adaptive_grid(tmp_path):
    bench = load_script('fashion_mnist')
    bench.main(['--quick', '--out', str(tmp_path), '--exp', 'AT', '--noises', '0.2'])
    runs = rows(tmp_path/'fashion_mnist_runs.csv')
    assert sorted(r['method'] for r in runs) == sorted(bench.ADAPTIVE) and {r['status'] for r in runs} == {'ok'}
    for r in runs: assert r['acc'] != r['clean_acc'] or r['ce'] != r['clean_ce']   # noisy test labels beside the clean ones
    hp = json.loads((tmp_path/'fashion_mnist_runs.json').read_text())['invocations'][0]['hyperparams_at']
    assert hp['deflexmatch']['p_cutoff'] == 0.95 and hp['softmatch']['n_sigma'] == 2.0 and set(hp) == set(bench.ADAPTIVE)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_quick_grid_rows_resume_and_reproduce(tmp_path):
    bench = load_script('fashion_mnist')
    out = tmp_path/'res'
    bench.main(['--quick', '--out', str(out)])
    runs, curves = rows(out/'fashion_mnist_runs.csv'), rows(out/'fashion_mnist_curves.csv')
    assert len(runs) == 2 * 3 + 3 and len({bench.Grid(out/'x.csv', bench.KEY, bench.FIELDS).key_of(r) for r in runs}) == 9
    assert len(curves) == 2 * len(runs)                                   # a validation every 2 of 4 iterations
    for r in runs:
        assert r['status'] == 'ok', r
        assert int(r['best_it']) in (2, 4) and 0 <= float(r['best_val_acc']) <= 1
        for m in ('acc', 'last_acc', 'clean_acc', 'clean_last_acc'): assert 0 <= float(r[m]) <= 1
        assert math.isfinite(float(r['ce'])) and len(json.loads(r['per_class_acc'])) == 10
        if float(r['noise']) == 0: assert r['acc'] == r['clean_acc']       # clean runs: one test set
    for c in curves: assert float(c['val_acc']) * 10 == pytest.approx(round(float(c['val_acc']) * 10))  # 10 validation images
    # a second call finds every run done
    bench.main(['--quick', '--out', str(out)])
    assert rows(out/'fashion_mnist_runs.csv') == runs
    side = json.loads((out/'fashion_mnist_runs.json').read_text())
    assert [e['new_runs'] for e in side['invocations']] == [9, 0] and side['budget']['num_val'] == 10
    # the same runs in another folder give the same numbers
    again = tmp_path/'again'
    bench.main(['--quick', '--out', str(again), '--exp', 'PL', '--noises', '0.2'])
    first = {r['method']: r for r in runs if r['exp'] == 'PL' and float(r['noise']) == 0.2}
    for r in rows(again/'fashion_mnist_runs.csv'):
        for m in ('acc', 'ce', 'ece', 'last_acc', 'clean_acc', 'best_it', 'mask_ratio'): assert r[m] == first[r['method']][m], (r['method'], m)
