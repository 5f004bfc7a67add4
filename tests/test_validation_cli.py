"""`defixmatch-train --num_val/--label_noise/--test_label_noise`: the flags reach the data, the config records them,
the report gives the test metrics of the best checkpoint (chosen on validation or, without --num_val, on test) beside
the last one's; bad values are one line."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def train(*args, cwd):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-m', 'defixmatch.train', '--dataset', 'digits', '--cpu', *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_validation_split_and_noise_reach_the_report(tmp_path):
    r = train('--num_val', '20', '--label_noise', '0.2', '--test_label_noise', '0.1', '--num_train_iter', '30',
              '--num_eval_iter', '10', '--save_dir', str(tmp_path), '--save_name', 'v', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path/'v'
    cfg, rep = json.loads((run/'config.json').read_text()), json.loads((run/'report.json').read_text())
    assert (cfg['num_val'], cfg['label_noise'], cfg['test_label_noise']) == (20, 0.2, 0.1)
    assert rep['selection'] == 'validation' and rep['iteration'] == 30
    assert rep['best']['iteration'] in (10, 20, 30) and rep['best']['load_path'].endswith('model_best.pth')
    assert 0 <= rep['best']['acc'] <= 1 and rep['n_test'] == 500
    assert 'chosen on validation accuracy of 20 held-out labelled images' in r.stdout
    import torch
    ck = torch.load(run/'model_best.pth', weights_only=True)
    assert ck['it'] == rep['best']['iteration']
    import csv
    log = list(csv.DictReader((run/'log.csv').open()))
    assert max(float(l['top1_acc']) for l in log) == pytest.approx(ck['best_eval_acc'])   # validation accuracy: multiples of 1/20
    assert all(abs(20 * float(l['top1_acc']) - round(20 * float(l['top1_acc']))) < 1e-6 for l in log)


def test_without_validation_the_best_is_chosen_on_test(tmp_path):
    r = train('--num_train_iter', '20', '--num_eval_iter', '10', '--save_dir', str(tmp_path), '--save_name', 't', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path/'t'/'report.json').read_text())
    assert rep['selection'] == 'test' and 'as the reference does' in r.stdout


@pytest.mark.parametrize('flag,value,msg', [('--num_val', '100', '--num_val must be >= 0 and smaller than --num_labels (100), got 100'),
                                            ('--label_noise', '1.5', '--label_noise must be in [0, 1], got 1.5'),
                                            ('--test_label_noise', 'nan', '--test_label_noise must be in [0, 1], got nan')])
def test_bad_values_are_one_line(tmp_path, flag, value, msg):
    r = train(flag, value, '--dry_run', cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [f'defixmatch-train: error: {msg}'], r.stderr
