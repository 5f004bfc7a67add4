"""`defixmatch-train` with an informative labelling (`--label_probs`) and the IPW weighting (`--ipw`): the flags, what
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
