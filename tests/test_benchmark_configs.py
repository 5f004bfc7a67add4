"""`benchmarks/configs/`: one `--config` file per figure layout of the Fashion-MNIST grid (`benchmarks/fashion_mnist.py`,
PL experiment), and the proof that one of them, run through `defixmatch-train --config FILE`, gives the grid's row."""
import csv, json, os, subprocess, sys
from pathlib import Path

import pytest
from benchmark_scripts import load_script, BENCHMARKS

CONFIGS = BENCHMARKS/'configs'
FILES = {'fashion_mnist_fig2_fig6.yaml': 0.0, 'fashion_mnist_fig7.yaml': 0.2}   # file: label noise of its figure
LAUNCH_KEYS = {'overwrite', 'resume', 'load_path', 'save_dir', 'save_name'}


def test_one_file_per_figure_layout_and_the_grid_budget():
    from defixmatch.config import _load_config_file, resolve_args
    bench = load_script('fashion_mnist')
    assert set(FILES) <= {p.name for p in CONFIGS.glob('*.yaml')}
    for name, noise in FILES.items():
        cfg = _load_config_file(CONFIGS/name)
        assert not LAUNCH_KEYS & set(cfg), name                        # a config file sets a run, never how it is launched
        a = resolve_args(['--config', str(CONFIGS/name), '--dry_run'])
        # the budget of the grid (benchmarks/fashion_mnist.py: `build`, `main`'s defaults as the grid ran them)
        assert (a.dataset, a.net, a.img_size, a.hflip) == ('fashion_mnist', 'LeNet', 28, False)
        assert (a.num_labels, a.num_val, a.batch_size, a.uratio, a.ema_m, a.eval_batch_size, a.num_workers) == (1000, 100, 16, 7, 0.99, 1000, 0)
        assert (a.num_train_iter, a.num_eval_iter, a.lr, a.momentum, a.weight_decay) == (1500, 100, 0.03, 0.9, 5e-4)
        assert (a.label_noise, a.test_label_noise) == (noise, noise) and noise in bench.NOISES
        # the PL experiment's loss: the plain cross-entropy of one weak view, tau = 0.95, constant lambda
        assert a.method == 'depseudolabel' and a.ulb_loss_ratio in bench.LAMBDAS
        assert a.method_kwargs == {'lambda_u': a.ulb_loss_ratio, 'modified': False, 'lambda_rampup': 0.0, 'p_cutoff': 0.95}
        # without the file, --method pseudolabel trains the modified loss (eq. 52): the file is what makes it the grid's
        assert resolve_args(['--dataset', 'fashion_mnist', '--method', 'pseudolabel', '--dry_run']).modified_fixmatch is True
        # another cell of the grid is the same file with --method / --ulb_loss_ratio / --seed on the command line
        b = resolve_args(['--config', str(CONFIGS/name), '--method', 'pseudolabel', '--ulb_loss_ratio', '3', '--seed', '4', '--dry_run'])
        assert (b.method, b.ulb_loss_ratio, b.seed, b.modified_fixmatch, b.label_noise) == ('pseudolabel', 3.0, 4, False, noise)


def _fashion_mnist_dir():
    from defixmatch.datasets import idx_files
    try: return next(iter(idx_files('fashion_mnist').values())).parent
    except FileNotFoundError: pytest.skip('Fashion-MNIST idx files not found (apt-get install dataset-fashion-mnist)')


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_fig7_file_from_the_command_line_gives_the_grid_row(tmp_path):
    "The grid's cell (DePseudo-label, lambda = 10, 20 % noise, seed 0), shortened to K = 100 on both sides."
    import torch
    from defixmatch.data import load_dataset
    data_dir = _fashion_mnist_dir()
    K, N = 100, 50
    bench = load_script('fashion_mnist')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_dataset('fashion_mnist', str(data_dir), size=28)
        k = dict(exp='PL', method='depseudolabel', lambda_u=10., noise=0.2, seed=0, iterations=K, eval_every=N,
                 num_labels=1000, num_val=100, size=28, batch=16, uratio=7, ema_m=0.99)
        row, curve = bench.run_one(data, k, bench.clean_test_dl(data))
    finally: torch.set_num_threads(threads)
    assert row['status'] == 'ok'
    # the command line: the file, the same shortening (test batches of 1,000, as the grid's), a run folder
    res = subprocess.run([sys.executable, '-m', 'defixmatch.train', '--config', str(CONFIGS/'fashion_mnist_fig7.yaml'),
                          '--num_train_iter', str(K), '--num_eval_iter', str(N),
                          '--data_dir', str(data_dir), '--save_dir', str(tmp_path), '--save_name', 'run', '--cpu'],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads((tmp_path/'run'/'report.json').read_text())
    # the test metrics (on the noisy test labels) of the best validation checkpoint and of the last EMA model: identical
    for m in bench.METRICS:
        assert rep['best'][m] == row[m], m
        assert rep[m] == row[f'last_{m}'], m
    assert rep['best']['iteration'] == row['best_it']
    assert [round(v, 6) for v in rep['best']['per_class_acc']] == json.loads(row['per_class_acc'])
    # and the same training: the validation curve and the losses at each evaluation
    with (tmp_path/'run'/'log.csv').open(newline='') as f: log = list(csv.DictReader(f))
    assert len(log) == len(curve['curves']) == K // N
    for l, c in zip(log, curve['curves']):
        assert float(l['top1_acc']) == pytest.approx(c['val_acc'], rel=1e-6)
        assert float(l['sup_loss']) == pytest.approx(c['sup_loss'], rel=1e-6)
        assert float(l['mask_ratio']) == pytest.approx(c['mask_ratio'], rel=1e-6)
