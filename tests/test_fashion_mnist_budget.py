"""`benchmarks/fashion_mnist_budget.py --quick`: one row per run, curves of validation and test metrics with the mask
ratio, a run stopped midway continuing from its checkpoint, runs held by another process left to it, and one
`--config` file per run that the command line reads as the same run."""
import contextlib, io, json, math

import pytest
from benchmark_scripts import load_script, rows


def test_grid_layout():
    bench = load_script('fashion_mnist_budget')
    g = bench.grid((1000, 250), range(3))
    assert len(g) == 2 * 3 * 3 and [r[2] for r in g[:9]] == [1000] * 9          # the larger label budget first
    assert [r[3] for r in g[:3]] == [0] * 3 and {r[0] for r in g[:3]} == set(bench.METHODS)  # seed by seed
    assert {(r[0], r[1]) for r in g} == {('complete_case', 0.), ('fixmatch', 0.5), ('defixmatch', 0.5)}
    assert [bench.val_count(n) for n in (1000, 250, 40, 20)] == [100, 20, 10, 10]


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_quick_rows_curves_and_resume(tmp_path, monkeypatch):
    bench = load_script('fashion_mnist_budget')
    out, work = tmp_path/'res', tmp_path/'work'
    args = ['--quick', '--out', str(out), '--work_dir', str(work), '--labels', '40', '--methods', 'fixmatch', 'defixmatch']
    # the first run stops after its first evaluation (as a killed process would): nothing is recorded, its checkpoint is kept
    scorer = bench.test_scorer
    def stopping(path, dl):
        cb = scorer(path, dl); after = cb.after_epoch
        def after_epoch():
            after()
            if cb.learn.iteration == 2: raise KeyboardInterrupt
        cb.after_epoch = after_epoch
        return cb
    monkeypatch.setattr(bench, 'test_scorer', stopping)
    with pytest.raises(KeyboardInterrupt): bench.main(args)
    assert not (out/'fashion_mnist_budget_runs.csv').exists()
    first = bench.run_name(dict(method='fixmatch', lambda_u=0.5, num_labels=40, seed=0, iterations=4, eval_every=2,
                                num_val=10, size=28, batch=4, uratio=2, ema_m=0.99))
    assert (work/first/'run'/'latest_model.pth').is_file() and len(rows(work/first/'test_curve.csv')) == 1
    monkeypatch.setattr(bench, 'test_scorer', scorer)
    bench.main(args)
    runs, curves = rows(out/'fashion_mnist_budget_runs.csv'), rows(out/'fashion_mnist_budget_curves.csv')
    assert [(r['method'], r['resumed_from']) for r in runs] == [('fixmatch', '2'), ('defixmatch', '0')]
    assert len(curves) == 2 * 2 and [c['iter'] for c in curves] == ['2', '4'] * 2   # the stopped run's curve is whole
    for r in runs:
        assert r['status'] == 'ok' and int(r['best_it']) in (2, 4) and int(r['stopped_at']) == 4
        for m in ('acc', 'last_acc', 'mask_ratio'): assert 0 <= float(r[m]) <= 1
        last = [c for c in curves if c['method'] == r['method'] and c['iter'] == '4'][0]
        assert float(last['test_acc']) == pytest.approx(float(r['last_acc']))     # the curve's last point is the last checkpoint
        assert float(last['test_ce']) == pytest.approx(float(r['last_ce']), rel=1e-5)
        assert math.isfinite(float(last['mask_ratio'])) and 0 <= float(last['val_acc']) <= 1
    # a second call finds every run done; a run held by another process is left to it
    bench.main(args)
    assert rows(out/'fashion_mnist_budget_runs.csv') == runs
    side = json.loads((out/'fashion_mnist_budget_runs.json').read_text())
    assert [e.get('new_runs') for e in side['invocations']] == [None, 2, 0]       # the stopped call never finished
    other = tmp_path/'other'
    k = dict(method='complete_case', lambda_u=0., num_labels=40, seed=0, iterations=4, eval_every=2, num_val=10, size=28,
             batch=4, uratio=2, ema_m=0.99)
    with bench.held(work/f'{bench.run_name(k)}.lock') as got:
        assert got
        bench.main(['--quick', '--out', str(other), '--work_dir', str(work), '--labels', '40', '--methods', 'complete_case'])
    assert not (other/'fashion_mnist_budget_runs.csv').exists()


def test_configs_read_as_the_same_run(tmp_path):
    bench = load_script('fashion_mnist_budget')
    from defixmatch.train import main as train_main
    paths = bench.main(['--configs', str(tmp_path), '--labels', '1000', '250', '--seeds', '1', '--iterations', '4000'])
    files = sorted(paths.glob('*.yaml'))
    assert len(files) == 6
    for f in files:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf): train_main(['--config', str(f), '--dry_run'])
        cfg = json.loads(buf.getvalue()[buf.getvalue().index('{'):])
        method, nl = f.name.split('_lam')[0], int(f.name.split('_nl')[1].split('_')[0])
        assert cfg['method'] == method and cfg['num_labels'] == nl and cfg['num_val'] == bench.val_count(nl)
        assert cfg['ulb_loss_ratio'] == (0. if method == 'complete_case' else 0.5) and cfg['debiased'] == (method == 'defixmatch')
        assert (cfg['num_train_iter'], cfg['num_eval_iter'], cfg['batch_size'], cfg['uratio'], cfg['ema_m']) == (4000, 250, 16, 7, 0.99)
        assert (cfg['net'], cfg['p_cutoff'], cfg['modified_fixmatch'], cfg['seed'], cfg['hflip']) == ('LeNet', 0.95, True, 0, False)
