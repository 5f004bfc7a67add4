"""`benchmarks/informative_labels.py --quick`: every experiment on a few labellings, the rows and the invocation it records."""
import json

import pytest
from benchmark_scripts import load_script, rows


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_quick_study_rows(tmp_path):
    bench = load_script('informative_labels')
    out = bench.main(['--quick', '--out', str(tmp_path)])
    risk, phi, tests = (rows(out/f'informative_{n}.csv') for n in ('risk', 'phi', 'tests'))
    estimators = {'complete case', 'dessl', 'ipw oracle', 'ipw self-normalised', 'ipw clipped 2', 'ipw moment'}
    assert {r['estimator'] for r in risk} == estimators
    assert len(risk) == 5 * len(bench.RISK_SCENARIOS) * len(estimators)
    assert len({r['target'] for r in risk}) == 1                          # one frozen classifier, one target
    assert {r['estimator'] for r in phi} <= {'moment softmax', 'moment one-hot', 'em', 'plug-in'}
    assert {(r['scenario'], r['test'], r['calibration']) for r in tests} == {
        (s, t, c) for s in bench.TEST_SCENARIOS for t, c in (('likelihood ratio', 'as fitted'), ('likelihood ratio', 'temperature 2'),
        ('likelihood ratio (bootstrap)', 'as fitted'), ('likelihood ratio (bootstrap)', 'temperature 2'), ('pearson held-out', 'as fitted'))}
    assert all(0 <= float(r['p_value']) <= 1 for r in tests)
    inv = json.loads((out/'informative_labels.json').read_text())['invocations']
    assert inv[-1]['reps'] == {'risk': 5, 'phi': 2, 'tests': 2}
    bench.main(['--quick', '--out', str(tmp_path), '--only', 'risk'])      # one experiment again: the others' files are kept
    assert rows(out/'informative_tests.csv') == tests
    assert json.loads((out/'informative_labels.json').read_text())['invocations'][-1]['reps'] == {'risk': 5}
