"""`defixmatch-train` with an informative labelling (`--label_probs`, or `--label_counts`) and the IPW weighting (`--ipw`): the flags, what
config.json and report.json record, and the checkpoint's φ that a resumed run continues with."""
import json

import torch
from test_cli import cli, assert_one_line_error

PHI = '0.6,0.5,0.4,0.3,0.25,0.2,0.15,0.1,0.08,0.06'
BASE = ('--dataset', 'digits', '--method', 'depseudolabel', '--label_probs', PHI, '--num_train_iter', 20,
        '--num_eval_iter', 10, '--batch_size', 8, '--uratio', 2, '--net', 'SmallCNN')


def test_flags_refused_with_one_line(tmp_path):
    assert_one_line_error(cli('train', '--dataset', 'digits', '--num_labels', 100, '--label_probs', PHI, '--save_dir', tmp_path),
                          '--label_probs and --num_labels are exclusive')
    assert_one_line_error(cli('train', '--dataset', 'digits', '--label_probs', '0.5,0.5', '--save_dir', tmp_path), '2 probabilities for 10 classes')
    assert_one_line_error(cli('train', '--dataset', 'digits', '--label_probs', '0.5,' * 9 + '0', '--save_dir', tmp_path), 'must lie in (0, 1]')
    assert_one_line_error(cli('train', '--dataset', 'digits', '--ipw', 'oracle', '--save_dir', tmp_path), '--ipw oracle needs --label_probs')


def test_oracle_and_estimate_runs(tmp_path):
    for mode in ('oracle', 'estimate'):
        res = cli('train', *BASE, '--ipw', mode, '--save_dir', tmp_path, '--save_name', mode)
        assert res.returncode == 0, res.stderr[-3000:]
        run = tmp_path/mode
        cfg, rep = json.loads((run/'config.json').read_text()), json.loads((run/'report.json').read_text())
        assert (cfg['label_probs'], cfg['ipw'], cfg['num_labels']) == ([float(v) for v in PHI.split(',')], mode, None)
        assert len(rep['phi_hat']) == 10 and all(0 < v <= 1 for v in rep['phi_hat'])
        t = rep['informative_labels_test']
        assert t['test'] == 'likelihood ratio' and t['df'] == 9 and 0 <= t['p_value'] <= 1
        state = torch.load(run/'latest_model.pth', map_location='cpu', weights_only=False)['method_state']
        if mode == 'oracle': torch.testing.assert_close(state['label_phi'], torch.tensor([float(v) for v in PHI.split(',')]))
        # the φ the run weighted with is in its checkpoint: `load_ssl_checkpoint` (09b_ipw) restores it on resume
        torch.testing.assert_close(state['label_phi'].tolist(), rep['phi_used'], atol=1e-6, rtol=0)


def test_killed_estimate_run_resumes_with_its_phi_hat(tmp_path):
    "SIGKILL an `--ipw estimate` run after a checkpoint that holds φ̂, resume it: it ends where an uninterrupted run ends."
    import os, signal, subprocess, sys, time
    import pytest
    from defixmatch.checkpoint import read_checkpoint
    K = 60
    flags = [*map(str, BASE), '--ipw', 'estimate', '--num_train_iter', str(K), '--no-progress']  # (the last K given wins)
    killed, full = tmp_path/'killed', tmp_path/'full'
    latest = killed/'run'/'latest_model.pth'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    p = subprocess.Popen([sys.executable, '-m', 'defixmatch.train', *flags, '--save_dir', str(killed), '--save_name', 'run'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        t0 = time.time()
        while True:   # a checkpoint after the first estimate (iteration 10 is the MCAR warm-up), then the kill
            if p.poll() is not None: pytest.fail(f"the run ended before it could be killed: {p.stderr.read().decode()[-2000:]}")
            try: ck = read_checkpoint(latest) if latest.exists() else None
            except ValueError: ck = None
            if ck is not None and int(ck['it']) >= 20: break
            if time.time() - t0 > 900: pytest.fail('no checkpoint at iteration 20 after 900 s')
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
    finally: p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    at_kill = read_checkpoint(latest)
    assert 20 <= int(at_kill['it']) < K and at_kill['method_state']['label_phi'] is not None
    res = cli('train', *flags, '--save_dir', killed, '--save_name', 'run', '--resume', '--load_path', latest)
    assert res.returncode == 0, res.stderr[-3000:]
    res = cli('train', *flags, '--save_dir', full, '--save_name', 'run')
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = read_checkpoint(latest), read_checkpoint(full/'run'/'latest_model.pth')
    assert int(a['it']) == int(b['it']) == K
    # the same weights and φ̂ at the end: the resumed run weighted its first epoch with the checkpoint's φ̂, as the
    # uninterrupted run did (with the MCAR weighting, or a fresh estimate, instead, the weights would differ)
    torch.testing.assert_close(a['method_state']['label_phi'], b['method_state']['label_phi'], rtol=1e-4, atol=1e-6)
    for n in b['train_model']: torch.testing.assert_close(a['train_model'][n], b['train_model'][n], rtol=1e-4, atol=1e-5, msg=n)
    ra, rb = json.loads((killed/'run'/'report.json').read_text()), json.loads((full/'run'/'report.json').read_text())
    assert ra['phi_hat'] == rb['phi_hat'] and ra['acc'] == rb['acc']


COUNTS, UNL = [30, 25, 20, 15, 12, 10, 8, 6, 5, 4], [20, 40, 60, 80, 100, 100, 100, 100, 100, 100]


def test_counts_flags_refused_with_one_line(tmp_path):
    d = ('train', '--dataset', 'digits', '--save_dir', tmp_path)
    assert_one_line_error(cli(*d, '--label_counts', '5,a' + ',1' * 8), '--label_counts must be integers >= 1')
    assert_one_line_error(cli(*d, '--label_counts', '0' + ',5' * 9), '--label_counts must be integers >= 1')
    assert_one_line_error(cli(*d, '--label_counts', '5,5'), '2 counts for 10 classes')
    assert_one_line_error(cli(*d, '--unlabelled_counts', '5' + ',5' * 9), '--unlabelled_counts needs --label_counts')
    assert_one_line_error(cli(*d, '--label_counts', '5' + ',5' * 9, '--num_labels', 40), '--label_counts and --num_labels are exclusive')
    assert_one_line_error(cli(*d, '--label_counts', '5' + ',5' * 9, '--label_probs', PHI), '--label_counts and --label_probs are exclusive')
    assert_one_line_error(cli(*d, '--label_counts', '999' + ',5' * 9, '--num_train_iter', 2), 'cannot give 999 labelled')


def test_counts_oracle_run(tmp_path):
    "A labelling by class counts: the images of neither set leave the training set, and oracle weights with N_k/(N_k + M_k)."
    flags = [a for a in map(str, BASE) if a != PHI and a != '--label_probs']
    res = cli('train', *flags, '--label_counts', ','.join(map(str, COUNTS)), '--unlabelled_counts', ','.join(map(str, UNL)),
              '--ipw', 'oracle', '--save_dir', tmp_path, '--save_name', 'counts')
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path/'counts'
    cfg, rep = json.loads((run/'config.json').read_text()), json.loads((run/'report.json').read_text())
    assert (cfg['label_counts'], cfg['unlabelled_counts'], cfg['label_probs'], cfg['num_labels']) == (COUNTS, UNL, None, None)
    want = [n / (n + m) for n, m in zip(COUNTS, UNL)]
    torch.testing.assert_close(rep['phi_used'], want, atol=1e-6, rtol=0)
    assert len(rep['phi_hat']) == 10 and rep['informative_labels_test']['df'] == 9


def test_count_design_files():
    "benchmarks/configs/informative/: the follow-up's design and geometric counts, as `--config` files the flags accept."
    from pathlib import Path
    from defixmatch.config import resolve_args
    from defixmatch.informative import followup_counts, geometric_counts
    folder = Path(__file__).resolve().parents[1]/'benchmarks'/'configs'/'informative'
    a = resolve_args(['--config', str(folder/'fashion_mnist_followup_counts.yaml'), '--data_dir', str(folder), '--dry_run'])
    assert (a.label_counts, a.unlabelled_counts) == tuple(c.tolist() for c in followup_counts())
    b = resolve_args(['--config', str(folder/'fashion_mnist_geometric_counts.yaml'), '--data_dir', str(folder), '--dry_run'])
    assert (b.label_counts, b.unlabelled_counts, b.ipw) == (geometric_counts(400, 100).tolist(), None, 'estimate')
