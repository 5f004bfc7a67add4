"""`benchmarks/informative_fashion_mnist.py` end to end on generated idx files: one row per run from its report, the
oracle run weighted with the given φ, and a second invocation that finds every run done."""
import json
from benchmark_scripts import load_script, rows


def test_quick_rows_and_resume(tmp_path, capsys):
    bench = load_script('informative_fashion_mnist')
    out, work = tmp_path/'res', tmp_path/'work'
    args = ['--quick', '--out', str(out), '--work_dir', str(work), '--runs', 'depseudolabel', 'depseudolabel_ipw_oracle']
    csv_path = bench.main(args)
    r = {x['run']: x for x in rows(csv_path)}
    assert set(r) == {'depseudolabel', 'depseudolabel_ipw_oracle'}
    for x in r.values():
        assert x['seed'] == '0' and x['iterations'] == '4' and 0 <= float(x['acc']) <= 1 and int(x['num_labels']) > 0
        assert len(json.loads(x['phi_hat'])) == 10 and 0 <= float(x['p_value']) <= 1
    assert json.loads(r['depseudolabel_ipw_oracle']['phi_used']) == [0.5] * 10   # --quick's φ, the weights trained with
    assert json.loads(r['depseudolabel']['phi_used']) is None                       # unweighted
    capsys.readouterr()
    bench.main(args)                                                                  # every run done: none again
    assert '# 0 new runs' in capsys.readouterr().out and len(rows(csv_path)) == 2


def test_quick_followup_counts(tmp_path):
    "--design followup: the labelling by class counts (--label_counts, --unlabelled_counts); oracle weights with their φ."
    bench = load_script('informative_fashion_mnist')
    out = tmp_path/'res'
    csv_path = bench.main(['--quick', '--design', 'followup', '--out', str(out), '--work_dir', str(tmp_path/'work'),
                           '--runs', 'depseudolabel_ipw_oracle'])
    (r,) = rows(csv_path)
    assert int(r['num_labels']) == 30 and json.loads(r['phi_used']) == [0.25] * 10
    side = json.loads((out/'informative_fashion_mnist_runs.json').read_text())
    assert (side['budget']['design'], side['budget']['label_counts'], side['budget']['unlabelled_counts']) == ('followup', [3] * 10, [9] * 10)
