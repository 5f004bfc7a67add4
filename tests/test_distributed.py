"Multi-process training on CPU (gloo): gradient averaging, and a two-process run of the training command."
import os, socket, subprocess, sys, json
from pathlib import Path
import pytest, torch
from torch import nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

class NoBNNet(nn.Module):
    "A small convolutional net without batch norm: DDP's averaged gradient is then exactly the union's gradient."
    def __init__(self, n_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, n_classes)
    def forward(self, x): return self.fc(torch.tanh(self.conv(x)).flatten(1))

def _batches(world, per_rank=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(world * per_rank, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (world * per_rank,), generator=g)
    return x, y

def _plain_grad_worker(outdir, world):
    "One rank: a fastai Learner with `DistributedCallback`, one step on this rank's shard, gradients saved."
    from fastai.learner import Learner
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.callback.core import Callback, CancelFitException
    from defixmatch.distributed import make_accelerator, DistributedCallback, dist_info
    torch.set_num_threads(1)
    acc = make_accelerator(cpu=True)
    rank = dist_info()[0]
    assert acc.num_processes == world and acc.process_index == rank
    x, y = _batches(world)
    n = len(x) // world
    ds = list(zip(x[rank*n:(rank+1)*n], y[rank*n:(rank+1)*n]))
    dls = DataLoaders(DataLoader(ds, bs=n), DataLoader(ds, bs=n), device='cpu')
    torch.manual_seed(1)
    model = NoBNNet()
    class Grab(Callback):
        order = 100
        def after_backward(self):
            torch.save({k: p.grad.clone() for k, p in self.learn.model.named_parameters()}, f'{outdir}/grad{rank}.pt')
            raise CancelFitException()
    learn = Learner(dls, model, loss_func=F.cross_entropy, cbs=[DistributedCallback(acc), Grab()])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.1)

def test_ddp_gradient_equals_union_gradient(tmp_path):
    from defixmatch.distributed import spawn_processes
    spawn_processes(_plain_grad_worker, (str(tmp_path), 2), nprocs=2, dist_url=f'tcp://127.0.0.1:{free_port()}')
    g0, g1 = torch.load(tmp_path/'grad0.pt'), torch.load(tmp_path/'grad1.pt')
    # single process, union of the two shards
    x, y = _batches(2)
    torch.manual_seed(1)
    model = NoBNNet()
    F.cross_entropy(model(x), y).backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(g0[k], g1[k], rtol=0, atol=0)   # every rank holds the same averaged gradient
        torch.testing.assert_close(g0[k], p.grad, rtol=1e-5, atol=1e-6)
    # and the two shards alone give different gradients, so the comparison is not vacuous
    torch.manual_seed(1); m2 = NoBNNet(); F.cross_entropy(m2(x[:8]), y[:8]).backward()
    assert not torch.allclose(m2.conv.weight.grad, g0['conv.weight'], atol=1e-6)

def _unfinished_collective_worker():
    "One rank that joins the process group, starts a collective and returns without waiting for it."
    import torch.distributed as dist
    from defixmatch.distributed import make_accelerator
    make_accelerator(cpu=True)
    dist.all_reduce(torch.ones(1000), async_op=True)

def test_spawned_ranks_leave_their_process_group_before_exit():
    "A gloo group left to the interpreter's exit with work outstanding aborts its process (SIGABRT) in most runs."
    from defixmatch.distributed import spawn_processes
    for _ in range(6): spawn_processes(_unfinished_collective_worker, nprocs=2, dist_url=f'tcp://127.0.0.1:{free_port()}')

# ---------------------------------------------------------------- the SSL loop of the training command on 2 ranks
SSL_ARGS = ['--dataset', 'digits', '--method', 'defixmatch', '--net', 'LeNet', '--batch_size', '8', '--uratio', '2',
            '--num_train_iter', '1', '--num_eval_iter', '1', '--p_cutoff', '0', '--cpu']  # tau = 0: every pseudo-label counts at initialisation

def _this_rank(flags, outdir):
    "The accelerator, rank, resolved flags and loaders of this rank of the training command run with `flags`."
    from defixmatch.train import resolve_args, build_data
    from defixmatch.distributed import make_accelerator, dist_info
    torch.set_num_threads(1)
    acc = make_accelerator(cpu=True)
    rank, _, world = dist_info()
    args = resolve_args(flags + ['--save_dir', f'{outdir}/runs'])
    _, dls = build_data(args, rank, world, acc.device)
    return acc, rank, args, dls

def _fit_this_rank(acc, args, dls, cb, n_iter):
    "The command's learner of this rank, with the callback `cb`, trained for `n_iter` iterations."
    from defixmatch.train import build_learner
    torch.manual_seed(args.seed)
    learn = build_learner(args, dls, acc, cbs=[cb])
    learn.remove_cb(learn.progress)
    learn.fit_ssl(n_iter)
    return learn

def _ssl_grad_worker(outdir):
    "One rank of the training command's data and learner; saves its batch, labelled indices and averaged gradient."
    from fastai.callback.core import Callback, CancelFitException
    acc, rank, args, dls = _this_rank(SSL_ARGS, outdir)
    class Grab(Callback):
        order = 100
        def after_backward(self):
            torch.save({'grads': {k: p.grad.clone() for k, p in self.learn.model.named_parameters()},
                        'x': self.learn.xb[0].clone(), 'y': self.learn.yb[0].clone(), 'lb_idx': dls.lb_idx.clone()},
                       f'{outdir}/rank{rank}.pt')
            raise CancelFitException()
    _fit_this_rank(acc, args, dls, Grab(), 1)

def test_ssl_loop_two_ranks_same_labels_other_unlabelled_union_gradient(tmp_path):
    from defixmatch.distributed import spawn_processes
    from defixmatch.train import resolve_args, build_data, build_learner
    spawn_processes(_ssl_grad_worker, (str(tmp_path),), nprocs=2, dist_url=f'tcp://127.0.0.1:{free_port()}')
    r = [torch.load(tmp_path/f'rank{i}.pt') for i in range(2)]
    # the same labelled split on both ranks, different unlabelled images
    assert torch.equal(r[0]['lb_idx'], r[1]['lb_idx'])
    n_lb = len(r[0]['y'])
    assert n_lb == 4   # the global labelled batch of 8 split across 2 ranks
    parts = [x['x'].split([n_lb, n_lb, 2 * n_lb, 2 * n_lb]) for x in r]
    assert not torch.equal(parts[0][2], parts[1][2])
    # the averaged gradient is the gradient of the same risk on the union of the two ranks' batches
    for k in r[0]['grads']: torch.testing.assert_close(r[0]['grads'][k], r[1]['grads'][k], rtol=0, atol=0)
    args = resolve_args(SSL_ARGS + ['--save_dir', str(tmp_path/'single')])
    _, dls = build_data(args, 0, 1, 'cpu')
    torch.manual_seed(args.seed)
    learn = build_learner(args, dls)
    union = torch.cat([torch.cat([parts[0][i], parts[1][i]]) for i in range(4)])
    y = torch.cat([r[0]['y'], r[1]['y']])
    learn.model.train()
    loss = learn.ssl_method.loss(learn.model(union), y)
    loss.backward()
    assert float(learn.ssl_method.last[1]) > 0 and float(learn.ssl_method.last[2]) > 0   # the unlabelled and debiasing terms took part
    for k, p in learn.model.named_parameters():
        torch.testing.assert_close(r[0]['grads'][k], p.grad, rtol=1e-4, atol=1e-6)

def test_torchrun_two_cpu_processes_train_and_write_one_set_of_checkpoints(tmp_path):
    K, N = 24, 12
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(free_port()),
           '-m', 'defixmatch.train', '--cpu', '--dataset', 'digits', '--method', 'defixmatch', '--num_train_iter', str(K),
           '--num_eval_iter', str(N), '--batch_size', '8', '--uratio', '2', '--save_dir', str(tmp_path), '--no-progress']
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 0, res.stderr[-4000:]
    run = tmp_path/'Dedigits_100_0.5_0'
    assert [p.name for p in tmp_path.iterdir()] == [run.name]
    from defixmatch.learner import has_tensorboard
    assert sorted(p.name for p in run.iterdir()) == ['config.json', 'latest_model.pth', 'log.csv', 'model_best.pth', 'report.json'] \
        + (['tensorboard'] if has_tensorboard() else [])
    import pandas as pd
    log = pd.read_csv(run/'log.csv')
    assert list(log['iter']) == [N, K]   # one writer: no duplicated rows
    from defixmatch.checkpoint import read_checkpoint
    assert read_checkpoint(run/'latest_model.pth')['it'] == K
    cfg = json.loads((run/'config.json').read_text())
    assert cfg['batch_size'] == 8
    assert res.stdout.count('per-class accuracy') == 1   # only rank 0 reports
    assert '2 process(es)' in res.stderr

# ---------------------------------------------------------------- a failing process under --multiprocessing-distributed
_SPAWN_FAIL = r"""
import sys, torch
torch.cuda.device_count = lambda: 2   # the parent believes in two GPUs; the children train on CPU (gloo)
from defixmatch.train import main
sys.exit(main(sys.argv[1:]))
"""

def test_multiprocessing_distributed_child_failure_is_one_line(tmp_path):
    "A child's non-finite loss (FloatingPointError) ends the command with one error line and status 1."
    args = ['--multiprocessing-distributed', '--world-size', '1', '--rank', '0', '--dist-url', f'tcp://127.0.0.1:{free_port()}',
            '--dataset', 'digits', '--method', 'defixmatch', '--num_train_iter', '6', '--num_eval_iter', '3',
            '--batch_size', '8', '--uratio', '2', '--lr', '1e6', '--save_dir', str(tmp_path), '--no-progress']
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    env.pop('DEFIXMATCH_DEBUG', None)
    res = subprocess.run([sys.executable, '-c', _SPAWN_FAIL, *args], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 1, (res.returncode, res.stderr[-3000:])
    assert 'Traceback' not in res.stderr, res.stderr[-3000:]
    errs = [l for l in res.stderr.splitlines() if 'error:' in l]
    assert len(errs) == 1 and 'training process' in errs[0] and 'non-finite' in errs[0], res.stderr[-3000:]
    assert '2 process(es)' in res.stderr   # the failure did come from a spawned two-process run

def test_child_error_messages():
    from defixmatch.train import _child_error
    from torch.multiprocessing.spawn import ProcessRaisedException, ProcessExitedException
    tb = "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n  ...\n"
    assert _child_error(ProcessRaisedException(tb + "defixmatch.train.CLIError: --gpu 3: bad\n", 1, 7)) == ('training process 1: --gpu 3: bad', 2)
    assert _child_error(ProcessRaisedException(tb + "FloatingPointError: nan loss\n", 0, 7)) == ('training process 0: nan loss', 1)
    assert _child_error(ProcessRaisedException(tb + "KeyError: 'x'\n", 0, 7)) == ("training process 0: KeyError: 'x'", 1)
    assert _child_error(ProcessExitedException('x', 1, 7, 9))[1] == 1

# ---------------------------------------------------------------- a method's state under DDP
FLEX_ARGS = ['--dataset', 'digits', '--method', 'deflexmatch', '--net', 'LeNet', '--batch_size', '8', '--uratio', '2',
             '--num_train_iter', '3', '--num_eval_iter', '3', '--p_cutoff', '0', '--cpu']  # tau = 0: every drawn image is remembered

def _flex_state_worker(outdir):
    "One rank of a 3-step FlexMatch run: saves the method's state and the unlabelled indices this rank drew."
    from fastai.callback.core import Callback
    acc, rank, args, dls = _this_rank(FLEX_ARGS, outdir)
    drawn = []
    class Drawn(Callback):
        def after_batch(self):
            if self.training: drawn.append(self.learn.dl.ulb_batch_idx.clone())
    learn = _fit_this_rank(acc, args, dls, Drawn(), 3)
    torch.save({'state': learn.ssl_method.state_dict(), 'drawn': torch.cat(drawn)}, f'{outdir}/flex{rank}.pt')

def test_method_state_is_updated_from_every_rank_and_stays_equal(tmp_path):
    from defixmatch.distributed import spawn_processes
    spawn_processes(_flex_state_worker, (str(tmp_path),), nprocs=2, dist_url=f'tcp://127.0.0.1:{free_port()}')
    r = [torch.load(tmp_path/f'flex{i}.pt') for i in range(2)]
    for k in r[0]['state']: assert torch.equal(r[0]['state'][k], r[1]['state'][k]), k   # the same state on both ranks
    mem = r[0]['state']['memory']
    seen = set(torch.cat([r[0]['drawn'], r[1]['drawn']]).tolist())
    assert set(torch.nonzero(mem >= 0).flatten().tolist()) == seen   # every image either rank drew, and no other
    assert set(r[1]['drawn'].tolist()) - set(r[0]['drawn'].tolist())  # rank 1 drew images rank 0 did not: gathered

# ---------------------------------------------------------------- informative labels: φ̂ under DDP
IPW_ARGS = ['--dataset', 'digits', '--method', 'depseudolabel', '--net', 'LeNet', '--batch_size', '8', '--uratio', '2',
            '--label_probs', '0.6,0.5,0.4,0.3,0.25,0.2,0.15,0.1,0.08,0.06', '--ipw', 'estimate', '--ipw_warmup', '0',
            '--num_train_iter', '4', '--num_eval_iter', '2', '--cpu']

def _ipw_worker(outdir):
    "One rank of a 4-step `--ipw estimate` run (an estimate after each of its 2 evaluations): saves φ̂ and who estimated it."
    from fastai.callback.core import Callback
    from defixmatch.ipw import IPWEstimate
    acc, rank, args, dls = _this_rank(IPW_ARGS, outdir)
    learn = _fit_this_rank(acc, args, dls, Callback(), 4)
    est = next(c for c in learn.cbs if isinstance(c, IPWEstimate))
    torch.save({'phi': learn.ssl_method.label_phi.clone(), 'history': est.history}, f'{outdir}/ipw{rank}.pt')

def test_ipw_estimate_is_rank_0s_on_every_rank(tmp_path):
    from defixmatch.distributed import spawn_processes
    spawn_processes(_ipw_worker, (str(tmp_path),), nprocs=2, dist_url=f'tcp://127.0.0.1:{free_port()}')
    r = [torch.load(tmp_path/f'ipw{i}.pt', weights_only=False) for i in range(2)]
    assert len(r[0]['history']) == len(r[1]['history']) == 2           # two estimates, at the same iterations
    assert [h['iter'] for h in r[0]['history']] == [h['iter'] for h in r[1]['history']] == [2, 4]
    assert all(h['cond'] is not None for h in r[0]['history'])          # rank 0 estimated ...
    assert all(h['cond'] is None for h in r[1]['history'])              # ... rank 1 received its estimate
    assert torch.equal(r[0]['phi'], r[1]['phi'])                        # the same φ̂ weights both ranks' risks
    assert ((r[0]['phi'] > 0) & (r[0]['phi'] <= 1)).all()
