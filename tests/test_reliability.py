"Reliability of `defixmatch-train`: SIGKILL then --resume, corrupt checkpoints, seeded reproducibility."
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest, torch

from test_cli import cli, assert_one_line_error

# a short digits run: a checkpoint every 10 iterations, small batches (a few seconds of training on a CPU)
K, N = 60, 10
SMALL = ['--dataset', 'digits', '--method', 'defixmatch', '--num_train_iter', K, '--num_eval_iter', N,
         '--batch_size', 8, '--uratio', 2, '--no-progress']
RUN = 'Dedigits_100_0.5_0'

def _cmd(*args): return [sys.executable, '-m', 'defixmatch.train', *map(str, SMALL), *map(str, args)]

from defixmatch.checkpoint import read_checkpoint   # imported once here: a first import inside a polling loop takes
                                                    # seconds, in which a short run can end before the test kills it
def _ckpt_it(path): return int(read_checkpoint(path)['it'])

def test_sigkill_then_resume_reaches_the_same_end(tmp_path):
    killed_dir, full_dir = tmp_path/'killed', tmp_path/'full'
    latest = killed_dir/RUN/'latest_model.pth'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    p = subprocess.Popen(_cmd('--save_dir', killed_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        t0 = time.time()
        while True:   # wait for a checkpoint, then kill the process mid-training
            if p.poll() is not None: pytest.fail(f"the run ended before it could be killed: {p.stderr.read().decode()[-2000:]}")
            if latest.exists():
                try:
                    if _ckpt_it(latest) >= N: break
                except ValueError: pass   # cannot happen with atomic writes; retried rather than failed here
            if time.time() - t0 > 900: pytest.fail('no checkpoint after 900 s')
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    it_killed = _ckpt_it(latest)
    assert N <= it_killed < K, it_killed
    # checkpoints are written to a temporary file then renamed: the kill can leave at most the one temporary file
    # it interrupted, never a partial checkpoint under the real name
    tmp_after_kill = {f.name for f in (killed_dir/RUN).iterdir() if f.name.endswith('.tmp')}
    assert len(tmp_after_kill) <= 1, tmp_after_kill

    # restart from the last checkpoint (same run folder, no --overwrite needed to resume)
    res = cli('train', *SMALL, '--save_dir', killed_dir, '--resume', '--load_path', latest)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _ckpt_it(latest) == K
    log = pd.read_csv(killed_dir/RUN/'log.csv')
    assert list(log['iter'])[-1] == K and log['iter'].is_monotonic_increasing and log['iter'].is_unique
    # the resumed run's own writes left no temporary file, and every checkpoint of the folder loads
    assert {f.name for f in (killed_dir/RUN).iterdir() if f.name.endswith('.tmp')} <= tmp_after_kill
    for f in ("latest_model.pth", "model_best.pth"): assert 0 < _ckpt_it(killed_dir/RUN/f) <= K, f

    # an uninterrupted run ends at the same iteration, with the same weights (CPU runs are deterministic)
    res = cli('train', *SMALL, '--save_dir', full_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _ckpt_it(full_dir/RUN/'latest_model.pth') == K
    from defixmatch.checkpoint import read_checkpoint
    a, b = read_checkpoint(latest), read_checkpoint(full_dir/RUN/'latest_model.pth')
    for k in ('train_model', 'eval_model'):
        for n in a[k]: torch.testing.assert_close(a[k][n], b[k][n], rtol=1e-4, atol=1e-5, msg=f'{k}.{n}')
    ra, rb = json.loads((killed_dir/RUN/'report.json').read_text()), json.loads((full_dir/RUN/'report.json').read_text())
    assert ra['iteration'] == rb['iteration'] == K
    assert abs(ra['acc'] - rb['acc']) < 1e-9

def test_corrupt_or_truncated_checkpoint_gives_a_clear_error(tmp_path):
    from defixmatch.models import get_model
    good = tmp_path/'good.pth'
    m = get_model('LeNet', 10, in_channels=3, img_size=32)
    torch.save({'train_model': m.state_dict(), 'eval_model': m.state_dict(), 'it': 10}, good)
    data = good.read_bytes()
    (tmp_path/'truncated.pth').write_bytes(data[:len(data) // 2])
    (tmp_path/'garbage.pth').write_bytes(os.urandom(4096))
    res = cli('train', *SMALL, '--save_dir', tmp_path/'runs', '--resume', '--load_path', tmp_path/'truncated.pth')
    assert_one_line_error(res, 'truncated.pth', code=1)
    res = cli('eval', '--load_path', tmp_path/'garbage.pth', '--dataset', 'digits', '--net', 'LeNet')
    assert_one_line_error(res, 'garbage.pth', code=1)
    from defixmatch.checkpoint import read_checkpoint
    for bad in ('truncated.pth', 'garbage.pth'):
        with pytest.raises(ValueError, match=bad): read_checkpoint(tmp_path/bad)
    res = cli('train', *SMALL, '--save_dir', tmp_path/'runs', '--resume', '--load_path', tmp_path/'absent.pth')
    assert_one_line_error(res, 'absent.pth', code=2)

_PROBE = r"""
import sys, hashlib, torch
from defixmatch.train import resolve_args, build_data
for seed in ('0', '1'):
    a = resolve_args(sys.argv[1:] + ['--seed', seed])
    _, dls = build_data(a, device='cpu')
    dls.train.set_epoch(0)
    it = iter(dls.train)
    h = hashlib.sha256()
    for _ in range(2):
        for t in next(it): h.update(t.contiguous().numpy().tobytes())
    print(hashlib.sha256(dls.lb_idx.numpy().tobytes()).hexdigest(), h.hexdigest())
"""

def test_same_seed_same_split_and_first_batches(tmp_path):
    "Two processes with the same seed draw the same labelled split and the same first batches; another seed does not."
    def probe():
        res = subprocess.run([sys.executable, '-c', _PROBE, *map(str, SMALL), '--save_dir', tmp_path],
                             capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout.split()
    a, b = probe(), probe()
    assert len(a) == 4 and a == b        # seed 0 then seed 1, in two separate processes
    assert a[0] != a[2] and a[1] != a[3]  # the other seed gives another split and other batches

# ---------------------------------------------------------------- run folders: ownership, failed starts, full disk
def _wait_for(cond, p, what, timeout=900):
    t0 = time.time()
    while not cond():
        if p.poll() is not None: pytest.fail(f"the run ended before {what}: {p.stderr.read().decode()[-2000:]}")
        if time.time() - t0 > timeout: pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.05)

def test_a_live_run_owns_its_folder(tmp_path):
    "A second run into the folder of a live run is refused in one line, with or without --overwrite; the first is unharmed."
    env = dict(os.environ, OMP_NUM_THREADS='1')
    K2 = 100_000   # far longer than the test: the first run is stopped (Ctrl-C) once the others have been refused
    # Ctrl-C reaches the run even when the tests themselves run as a background job, whose SIGINT a shell ignores
    p = subprocess.Popen(_cmd('--save_dir', tmp_path, '--num_train_iter', K2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for(lambda: (tmp_path/RUN/'latest_model.pth').exists(), p, 'its first checkpoint')
        for extra in ([], ['--overwrite']):
            res = cli('train', *SMALL, '--save_dir', tmp_path, *extra)
            assert_one_line_error(res, RUN, 'in use by another run', f'process {p.pid}', code=2)
        assert p.poll() is None   # the refusals happened while the first run was alive
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert p.returncode == 130, err.decode()[-2000:]   # interrupted by the test, as a user's Ctrl-C
    assert sorted(f.name for f in tmp_path.iterdir()) == [RUN]   # no lock, no staging folder left
    cfg = json.loads((tmp_path/RUN/'config.json').read_text())
    assert 'overwrite' not in cfg and cfg['num_train_iter'] == K2   # how a run was launched is not part of its configuration
    it = _ckpt_it(tmp_path/RUN/'latest_model.pth')
    logged = pd.read_csv(tmp_path/RUN/'log.csv')['iter'].tolist()
    assert it >= N and it % N == 0 and logged[:it // N] == list(range(N, it + 1, N))   # the first run's own log and checkpoint

def test_a_killed_run_leaves_no_stuck_lock(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    p = subprocess.Popen(_cmd('--save_dir', tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try: _wait_for(lambda: (tmp_path/RUN/'latest_model.pth').exists(), p, 'checkpoint')
    finally:
        if p.poll() is None: os.kill(p.pid, signal.SIGKILL)
        p.wait()
    latest = tmp_path/RUN/'latest_model.pth'
    res = cli('train', *SMALL, '--save_dir', tmp_path, '--resume', '--load_path', tmp_path/RUN)   # a run folder: its latest
    assert res.returncode == 0, res.stderr[-2000:]
    assert re.search(r'resuming from iteration \d+ of ', res.stderr), res.stderr
    assert _ckpt_it(latest) == K and sorted(f.name for f in tmp_path.iterdir()) == [RUN]

@pytest.mark.parametrize('flags, fragment', [(['--net', 'ResNet50'], '--net'), (['--lr', '-1'], '--lr'),
    (['--lr', 'nan'], '--lr'), (['--ulb_loss_ratio', 'nan'], '--ulb_loss_ratio'), (['--depth', '11', '--net', 'WideResNet'], '--depth'),
    (['--num_labels', '1e2'], '--num_labels'), (['--load_path', 'x.pth'], '--resume'),
    (['--seed', '-1'], '--seed'), (['--seed', str(2**32)], '--seed'), (['--num_train_iter', str(10**20)], '--num_train_iter'),
    *[(['--save_name', n], '--save_name') for n in ('', '.', '..', '../x', '/tmp/abs', 'a/b', './R2')]])
def test_bad_flags_fail_at_once_and_create_nothing(tmp_path, flags, fragment):
    res = cli('train', *SMALL, '--save_dir', tmp_path/'runs', *flags)
    assert_one_line_error(res, fragment, code=2)
    assert not (tmp_path/'runs').exists()
    # the corrected command is not blocked by anything the failed one left
    assert cli('train', *SMALL, '--save_dir', tmp_path/'runs', '--dry_run').returncode == 0

def test_nonfinite_stop_is_one_message_and_leaves_no_folder(tmp_path):
    res = cli('train', *SMALL, '--lr', '1e6', '--save_dir', tmp_path/'runs')
    assert_one_line_error(res, 'non-finite', 'no run folder was created', code=1)
    assert res.stderr.count('non-finite') == 1, res.stderr
    assert not (tmp_path/'runs').exists()

def test_overwrite_killed_before_its_first_checkpoint_keeps_the_old_run(tmp_path):
    old = cli('train', *SMALL, '--num_train_iter', 20, '--save_dir', tmp_path)
    assert old.returncode == 0, old.stderr[-2000:]
    before = {f.name: f.read_bytes() for f in (tmp_path/RUN).iterdir() if f.is_file()}
    env = dict(os.environ, OMP_NUM_THREADS='1')
    # first checkpoint of the new run only at iteration 60: kill it once its configuration is written
    p = subprocess.Popen(_cmd('--save_dir', tmp_path, '--overwrite', '--num_eval_iter', K, '--lr', 0.01),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try: _wait_for(lambda: any((d/'config.json').exists() for d in tmp_path.glob(f'.{RUN}.staging-*')), p, 'staging config')
    finally:
        if p.poll() is None: os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert {f.name: f.read_bytes() for f in (tmp_path/RUN).iterdir() if f.is_file()} == before   # whole, byte for byte
    from defixmatch.runs import RunFolder
    with RunFolder(tmp_path, RUN, resume=True): pass   # the next claim: no stuck lock, the dead staging folder removed
    assert sorted(f.name for f in tmp_path.iterdir()) == [RUN]

def _mount_tmpfs(path, size):
    path.mkdir()
    res = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)], capture_output=True, text=True)
    return res.returncode == 0

def test_full_disk_is_one_line_and_earlier_checkpoints_stay_readable(tmp_path):
    disk = tmp_path/'small_disk'
    if not _mount_tmpfs(disk, '1600k'):
        print("skipped: a small disk needs permission to mount a tmpfs"); pytest.skip("cannot mount a tmpfs")
    try:
        res = cli('train', *SMALL, '--save_dir', disk)
        assert_one_line_error(res, 'disk full', str(disk/RUN), code=1)
        assert _ckpt_it(disk/RUN/'latest_model.pth') >= N   # the checkpoint written before the disk filled up
    finally: subprocess.run(['umount', str(disk)])

def test_full_disk_before_the_first_checkpoint_leaves_no_run_folder(tmp_path):
    "A run whose first checkpoint does not fit publishes nothing: no folder that a resume would find without a checkpoint."
    disk = tmp_path/'tiny_disk'
    if not _mount_tmpfs(disk, '40k'):   # room for config.json and the log, not for a checkpoint
        print("skipped: a small disk needs permission to mount a tmpfs"); pytest.skip("cannot mount a tmpfs")
    try:
        res = cli('train', *SMALL, '--save_dir', disk)
        assert_one_line_error(res, 'disk full', 'no run folder was kept', code=1)
        assert list(disk.iterdir()) == []   # no run folder, staging folder or lock left
    finally: subprocess.run(['umount', str(disk)])

def test_resume_with_other_method_dataset_or_net_is_refused(tmp_path):
    res = cli('train', *SMALL, '--num_train_iter', 10, '--save_dir', tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    ck = tmp_path/RUN/'latest_model.pth'
    for flags, frag in ((['--method', 'fixmatch'], '--method defixmatch'), (['--net', 'SmallCNN'], '--net LeNet')):
        res = cli('train', *SMALL, *flags, '--save_dir', tmp_path, '--resume', '--load_path', ck, '--overwrite')
        assert_one_line_error(res, frag, code=2)
    res = cli('train', *SMALL, '--num_train_iter', 10, '--save_dir', tmp_path, '--resume', '--load_path', ck)
    assert_one_line_error(res, 'already the end', code=2)

def test_a_live_run_owns_its_real_folder_however_spelled(tmp_path):
    "While a run writes SAVE_DIR/R2, other spellings of that folder (./R2, SAVE_DIR/../SAVE_DIR, a link to it) are refused in one line; the run is unharmed."
    env = dict(os.environ, OMP_NUM_THREADS='1')
    runs, K2 = tmp_path/'runs', 100_000   # the first run is stopped (Ctrl-C) once the others have been refused
    p = subprocess.Popen(_cmd('--save_dir', runs, '--save_name', 'R2', '--num_train_iter', K2), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for(lambda: (runs/'R2'/'latest_model.pth').exists(), p, 'its first checkpoint')
        (runs/'R2_link').symlink_to('R2')
        res = cli('train', *SMALL, '--save_dir', runs, '--save_name', './R2', '--overwrite')
        assert_one_line_error(res, '--save_name', "'./R2'", 'one folder name', code=2)
        for d, n, extra in ((runs/'..'/'runs', 'R2', ['--overwrite']), (runs, 'R2_link', ['--overwrite']),
                            (runs, 'R2_link', ['--resume', '--load_path', runs/'R2'/'latest_model.pth'])):
            res = cli('train', *SMALL, '--save_dir', d, '--save_name', n, *extra)
            assert_one_line_error(res, 'in use by another run', f'process {p.pid}', code=2)
        assert p.poll() is None   # the refusals happened while the first run was alive
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert p.returncode == 130, err.decode()[-2000:]
    assert sorted(f.name for f in tmp_path.iterdir()) == ['runs']              # nothing beside SAVE_DIR
    assert sorted(f.name for f in runs.iterdir()) == ['R2', 'R2_link']         # no lock, no staging folder left
    cfg = json.loads((runs/'R2'/'config.json').read_text())
    assert cfg['save_name'] == 'R2' and 'overwrite' not in cfg and cfg['num_train_iter'] == K2
    it = _ckpt_it(runs/'R2'/'latest_model.pth')
    logged = pd.read_csv(runs/'R2'/'log.csv')['iter'].tolist()
    assert it >= N and it % N == 0 and logged[:it // N] == list(range(N, it + 1, N))   # the first run's own log and checkpoint
    assert not (runs/'R2'/'report.json').exists()   # no other run finished in its folder

# ---------------------------------------------------------------- files a user is handed never act
def test_a_config_file_cannot_write_over_a_folder(tmp_path):
    victim = tmp_path/'victim'/'important'
    victim.mkdir(parents=True); (victim/'thesis.tex').write_text('years of work')
    for launch in ('overwrite: true', 'resume: true', 'load_path: x.pth'):
        (tmp_path/'c.yaml').write_text(f"dataset: digits\nsave_dir: {tmp_path/'victim'}\nsave_name: important\n{launch}\n")
        res = cli('train', '--config', tmp_path/'c.yaml', '--num_train_iter', 2, '--no-progress')
        assert_one_line_error(res, 'may only be given on the command line', code=2)
    (tmp_path/'c.yaml').write_text(f"dataset: digits\nsave_dir: {tmp_path/'victim'}\nsave_name: important\n")
    res = cli('train', '--config', tmp_path/'c.yaml', '--overwrite', '--num_train_iter', 2, '--no-progress')
    assert_one_line_error(res, 'a file may not choose the folder written over', code=2)
    assert [f.name for f in victim.iterdir()] == ['thesis.tex'] and (victim/'thesis.tex').read_text() == 'years of work'

def test_a_method_module_named_by_a_file_is_not_imported(tmp_path):
    (tmp_path/'evilmod.py').write_text(f"open({str(tmp_path/'ran')!r}, 'w').write('imported')\n")
    (tmp_path/'run').mkdir()
    (tmp_path/'run'/'config.json').write_text(json.dumps({'dataset': 'digits', 'method': 'evilmod:degini'}))
    res = cli('train', '--config', tmp_path/'run'/'config.json', '--dry_run', cwd=tmp_path)
    assert_one_line_error(res, 'pass --method evilmod:degini on the command line to allow it', code=2)
    assert not (tmp_path/'ran').exists()
    (tmp_path/'this.yaml').write_text('dataset: digits\nmethod: this:x\n')   # importing `this` prints the Zen of Python
    res = cli('train', '--config', tmp_path/'this.yaml', '--dry_run', cwd=tmp_path)
    assert_one_line_error(res, 'pass --method this:x', code=2)
    assert 'Beautiful is better' not in res.stdout + res.stderr

def test_eval_json_writes_only_a_json_file(tmp_path):
    from defixmatch.models import get_model
    run = tmp_path/'run'; run.mkdir()
    m = get_model('LeNet', 10, in_channels=3, img_size=32)
    torch.save({'eval_model': m.state_dict(), 'it': 1}, run/'model_best.pth')
    (run/'config.json').write_text(json.dumps({'dataset': 'digits', 'net': 'LeNet'}))
    before = (run/'model_best.pth').read_bytes()
    res = cli('eval', '--load_path', run, '--json', run/'model_best.pth')
    assert_one_line_error(res, 'must be named *.json', code=1)
    assert (run/'model_best.pth').read_bytes() == before
    os.mkfifo(tmp_path/'fifo.json'); (tmp_path/'target.json').write_text('{"kept": 1}')
    (tmp_path/'link.json').symlink_to(tmp_path/'target.json')
    for bad, msg in (('fifo.json', 'not a regular file'), ('link.json', 'is a symbolic link')):
        assert_one_line_error(cli('eval', '--load_path', run, '--json', tmp_path/bad), msg, code=1)
    assert (tmp_path/'link.json').is_symlink() and (tmp_path/'target.json').read_text() == '{"kept": 1}'
    res = cli('eval', '--load_path', run, '--json', tmp_path/'m.json')
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path/'m.json').read_text())['iteration'] == 1

# ---------------------------------------------------------------- a busy machine fails no test
_TIMED = re.compile(r'_step_time|perf_counter|time\.time\(\)|\bwall_s\b|\btotal_s\b|\belapsed\b')
_BOUND = re.compile(r'<=?\s*\d')   # a time compared with a number: an upper bound on wall time

def test_no_assertion_on_wall_time():
    "Speed belongs in benchmarks/: no notebook or test asserts that something took less than some seconds."
    root = Path(__file__).resolve().parents[1]
    sources = [(p, p.read_text()) for p in sorted((root/'tests').glob('*.py'))]
    for nb in sorted((root/'nbs').glob('*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        sources.append((nb, '\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'code')))
    bad = [f"{p.name}: {l.strip()}" for p, text in sources for l in text.splitlines()
           if l.lstrip().startswith('assert') and _TIMED.search(l) and _BOUND.search(l) and 'import re' not in l]
    assert bad == [], bad

# ---------------------------------------------------------------- a finished two-process run exits cleanly
_THREADS = """
import os, sys
from defixmatch.train import main
rc = main(sys.argv[1:])
names = sorted(open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task'))
print('threads', os.environ['RANK'], ' '.join(names), flush=True)
sys.exit(rc)
"""

@pytest.mark.skipif(not Path('/proc/self/task').is_dir(), reason='needs /proc (Linux) to list the threads')
def test_two_process_run_ends_its_gloo_threads(tmp_path):
    "The process group's threads end with the run, not at the interpreter's exit (where gloo aborted now and then)."
    import shutil
    (tmp_path/'probe.py').write_text(_THREADS)
    torchrun = shutil.which('torchrun') or shutil.which('torchrun', path=str(Path(sys.executable).parent))
    if torchrun is None: pytest.skip('torchrun not installed')
    res = subprocess.run([torchrun, '--standalone', '--nproc_per_node', '2', str(tmp_path/'probe.py'), '--cpu',
                          *map(str, SMALL), '--num_train_iter', '4', '--num_eval_iter', '2', '--save_dir', str(tmp_path/'runs')],
                         capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 0, res.stderr[-3000:]
    lines = sorted(l for l in res.stdout.splitlines() if l.startswith('threads'))
    assert len(lines) == 2, res.stdout[-2000:]
    for l in lines: assert 'gloo' not in l, l   # gloo_tcp_loop, pt_gloo_runloop: the group was not released

# ---------------------------------------------------------------- tampered checkpoints and bad files: one line each
def test_tampered_checkpoint_entries_are_one_line(tmp_path):
    args = [*map(str, SMALL), '--num_train_iter', '4', '--num_eval_iter', '2']
    assert cli('train', *args, '--save_dir', tmp_path, '--save_name', 'ok').returncode == 0
    good = torch.load(tmp_path/'ok'/'latest_model.pth', weights_only=True)
    w = next(iter(good['train_model']))
    for name, change, msg in [('it_pair', {'it': torch.tensor([1, 2])}, "'it' is not a whole number"),
                              ('it_list', {'it': [2]}, "'it' is not a whole number"),
                              ('rng', {'rng': {'torch': torch.zeros(3)}}, "random-number state 'rng'"),
                              ('weights', {'train_model': {**good['train_model'], w: torch.zeros(1)}}, "'train_model' does not fit the model")]:
        run = tmp_path/name; run.mkdir()
        (run/'config.json').write_text((tmp_path/'ok'/'config.json').read_text())
        torch.save({**good, **change}, run/'latest_model.pth')
        res = cli('train', *args, '--num_train_iter', '8', '--save_dir', tmp_path, '--save_name', name, '--resume', '--load_path', run)
        assert_one_line_error(res, msg, code=1)
