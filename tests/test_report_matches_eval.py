"""What `defixmatch-train` reports is the model it names: `report.json` (last and best) and `log.csv`'s last evaluation
equal `defixmatch-eval` of `latest_model.pth` and `model_best.pth`, whatever the evaluation batch size, in one process
and in two (torchrun, gloo), with and without a held-out validation set."""
import contextlib, io, json, os, socket, subprocess, sys
from pathlib import Path
import pytest

# an EMA decay of 0.9 over 60 iterations: the EMA weights and the training weights score differently
TRAIN = ['--cpu', '--dataset', 'digits', '--method', 'defixmatch', '--num_train_iter', '60', '--num_eval_iter', '20',
         '--batch_size', '16', '--uratio', '2', '--ema_m', '0.9', '--eval_batch_size', '100', '--no-progress']

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def train(save_dir, *extra, nproc=1):
    launcher = ['-m', 'torch.distributed.run', '--nproc_per_node', str(nproc), '--master_port', str(free_port())] if nproc > 1 else []
    cmd = [sys.executable, *launcher, '-m', 'defixmatch.train', *TRAIN, '--save_dir', str(save_dir), '--save_name', 'run', *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 0, res.stderr[-4000:]
    return Path(save_dir)/'run'

def evaluate(ckpt, batch_size) -> dict:
    "The metrics `defixmatch-eval --load_path CKPT --batch_size B --json FILE` writes."
    from defixmatch.eval import main
    out = Path(ckpt).with_suffix(f'.eval{batch_size}.json')
    with contextlib.redirect_stdout(io.StringIO()): assert main(['--load_path', str(ckpt), '--batch_size', str(batch_size), '--cpu', '--json', str(out)]) == 0
    return json.loads(out.read_text())

def assert_same(reported:dict, evaluated:dict, what:str):
    assert reported['acc'] == evaluated['acc'], (what, reported['acc'], evaluated['acc'])
    for k in ('ce', 'ece'): assert abs(reported[k] - evaluated[k]) <= 1e-5, (what, k, reported[k], evaluated[k])

def check_run(run:Path, log_is_test:bool):
    import pandas as pd
    rep = json.loads((run/'report.json').read_text())
    log = pd.read_csv(run/'log.csv')
    assert rep['iteration'] == 60 and list(log['iter']) == [20, 40, 60]
    assert rep['best'] is not None
    for b in (500, 64):
        last, best = evaluate(run/'latest_model.pth', b), evaluate(run/'model_best.pth', b)
        assert_same(rep, last, f'report.json (last), batch {b}')
        assert_same(rep['best'], best, f'report.json (best), batch {b}')
        if log_is_test:  # without --num_val the log's evaluation columns are on the test set
            row = log.iloc[-1]
            assert_same(dict(acc=row['top1_acc'], ce=row['valid_loss'], ece=row['ece']), last, f'log.csv, batch {b}')
    return rep, log

def test_one_process_report_and_log_are_the_checkpoints(tmp_path):
    rep, log = check_run(train(tmp_path), log_is_test=True)
    # the report says what it reports: the run, and only the options of its network
    assert {k: rep[k] for k in ('method', 'debiased', 'ulb_loss_ratio', 'seed', 'num_labels', 'num_val', 'dataset', 'net', 'selection')} \
        == dict(method='defixmatch', debiased=True, ulb_loss_ratio=0.5, seed=0, num_labels=100, num_val=0, dataset='digits', net='LeNet',
                selection='test')
    assert not {'depth', 'widen_factor', 'leaky_slope', 'dropout'} & set(rep), rep.keys()   # WideResNet's options
    # the EMA model is what is reported: the training weights of the same checkpoint score differently
    from defixmatch.eval import main
    with contextlib.redirect_stdout(io.StringIO()):
        main(['--load_path', str(tmp_path/'run'/'latest_model.pth'), '--use_train_model', '--cpu', '--json', str(tmp_path/'train.json')])
    assert json.loads((tmp_path/'train.json').read_text())['ce'] != pytest.approx(rep['ce'], abs=1e-5)

def test_one_process_with_validation_set(tmp_path):
    rep, log = check_run(train(tmp_path, '--num_val', '50'), log_is_test=False)
    assert rep['selection'] == 'validation'
    assert rep['best']['selected_on'] == log['top1_acc'].max()   # the best checkpoint is the best logged validation accuracy

def test_two_processes_torchrun(tmp_path):
    check_run(train(tmp_path, nproc=2), log_is_test=True)
