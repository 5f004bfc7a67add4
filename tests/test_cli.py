"`defixmatch-train` and `defixmatch-eval` end to end: the reference's flags and commands, errors, the eval report."
import json, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]
CIFAR_TGZ = Path(os.environ.get('DEFIXMATCH_CIFAR10_TGZ') or ROOT.parent/'shared'/'data'/'cifar10-jpeg.tar.gz')
# the reference README's commands, `python train.py` removed
REF = "--world-size 1 --rank 0 --multiprocessing-distributed --num_labels 4000 --dataset cifar10 --num_classes 10 --overwrite"
REF_COMMANDS = {'complete case': REF + ' --modified_fixmatch --ulb_loss_ratio 0',
                'fixmatch': REF + ' --modified_fixmatch --ulb_loss_ratio 0.5',
                'defixmatch': REF + ' --debiased --ulb_loss_ratio 0.5'}
REF_FLAGS = """--save_dir --save_name --resume --load_path --overwrite --epoch --num_train_iter --num_eval_iter --num_labels
--batch_size --uratio --eval_batch_size --hard_label --T --p_cutoff --ema_m --ulb_loss_ratio --debiased --modified_fixmatch
--lr --momentum --weight_decay --amp --net --depth --widen_factor --leaky_slope --dropout --data_dir --dataset
--train_sampler --num_classes --num_workers --world-size --rank --dist-url --dist-backend --seed --gpu
--multiprocessing-distributed --num_iteration_finetuning --method --cpu""".split()

def cli(module, *args, timeout=600, env=None, cwd=None):
    "Run `python -m defixmatch.<module> ARGS`; return the CompletedProcess."
    e = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    e.pop('DEFIXMATCH_DEBUG', None)
    return subprocess.run([sys.executable, '-m', f'defixmatch.{module}', *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=cwd)

def assert_one_line_error(res, *fragments, code=None):
    "Non-zero exit, no traceback, exactly one `error:` line on stderr, containing `fragments`."
    assert res.returncode != 0, res.stdout + res.stderr
    if code is not None: assert res.returncode == code, (res.returncode, res.stderr)
    assert 'Traceback' not in res.stderr, res.stderr
    errs = [l for l in res.stderr.splitlines() if 'error:' in l]
    assert len(errs) == 1, res.stderr
    for f in fragments: assert f in errs[0], errs[0]

# ---------------------------------------------------------------- flags
def test_help_documents_reference_and_package_flags():
    res = cli('train', '--help')
    assert res.returncode == 0, res.stderr
    for f in REF_FLAGS: assert re.search(rf'(^|\s){re.escape(f)}[\s,]', res.stdout), f
    for m in ('complete_case', 'fixmatch', 'defixmatch', 'pseudolabel', 'depseudolabel', 'entmin', 'deentmin'):
        assert m in res.stdout
    res = cli('eval', '--help')
    assert res.returncode == 0
    for f in ('--load_path', '--use_train_model', '--dataset', '--num_classes', '--data_dir', '--batch_size', '--net',
              '--depth', '--widen_factor', '--json', '--plot'): assert f in res.stdout, f

def test_console_scripts_are_installed():
    for s in ('defixmatch-train', 'defixmatch-eval'):
        exe = shutil.which(s) or shutil.which(s, path=str(Path(sys.executable).parent))
        assert exe, f"{s} is not installed (pyproject [project.scripts])"
        res = subprocess.run([exe, '--help'], capture_output=True, text=True, timeout=600)
        assert res.returncode == 0 and s in res.stdout, res.stderr

def test_reference_defaults():
    from defixmatch.train import resolve_args
    a = resolve_args([])
    expect = dict(save_dir='./saved_models', resume=False, load_path=None, overwrite=False, epoch=1, num_train_iter=1048576,
                  num_eval_iter=10000, num_labels=4000, batch_size=64, uratio=7, eval_batch_size=1024, hard_label=True,
                  T=0.5, p_cutoff=0.95, ema_m=0.999, ulb_loss_ratio=1.0, debiased=False, modified_fixmatch=False, lr=0.03,
                  momentum=0.9, weight_decay=5e-4, amp=False, net='WideResNet', depth=28, widen_factor=2, leaky_slope=0.1,
                  dropout=0.0, data_dir='./data', dataset='cifar10', train_sampler='RandomSampler', num_classes=10,
                  num_workers=1, world_size=-1, rank=-1, dist_url='tcp://127.0.0.1:10001', dist_backend='nccl', seed=0,
                  gpu=None, multiprocessing_distributed=False)
    assert {k: getattr(a, k) for k in expect} == expect
    assert resolve_args(['--hard_label', 'False']).hard_label is False

def test_reference_commands_mean_what_they_mean_there(tmp_path):
    from defixmatch.train import resolve_args
    got = {k: resolve_args(c.split() + ['--save_dir', str(tmp_path)]) for k, c in REF_COMMANDS.items()}
    summary = {k: (a.method, a.ulb_loss_ratio, a.modified_fixmatch, a.save_name) for k, a in got.items()}
    assert summary == {'complete case': ('complete_case', 0.0, True, 'Modcifar10_4000_0.0_0'),
                       'fixmatch': ('fixmatch', 0.5, True, 'Modcifar10_4000_0.5_0'),
                       'defixmatch': ('defixmatch', 0.5, True, 'Decifar10_4000_0.5_0')}
    # the original FixMatch (no flag) keeps the supervised loss on the weak view only
    a = resolve_args(['--save_dir', str(tmp_path)])
    assert (a.method, a.modified_fixmatch, a.save_name) == ('fixmatch', False, 'cifar10_4000_1.0_0')
    # both flags: the reference prefixes 'De', then 'Mod' in front; 'Mod' follows the --modified_fixmatch flag only
    a = resolve_args(REF.split() + ['--debiased', '--modified_fixmatch', '--ulb_loss_ratio', '0.5', '--save_dir', str(tmp_path)])
    assert (a.method, a.save_name) == ('defixmatch', 'ModDecifar10_4000_0.5_0')

def test_authors_finetuning_flag_is_accepted_and_ignored():
    from defixmatch.train import resolve_args
    assert resolve_args([]).num_iteration_finetuning == 0
    with pytest.warns(UserWarning, match='--num_iteration_finetuning 5 ignored'):
        resolve_args(['--num_iteration_finetuning', '5'])

def test_bn_momentum_follows_ema_m(tmp_path):
    "The WideResNet's BatchNorm momentum is 1 - ema_m, as in the reference."
    from torch import nn
    from defixmatch.train import resolve_args, build_data, build_learner
    for ema, bn in ((0.99, 0.01), (0.999, 0.001)):
        a = resolve_args(['--dataset', 'digits', '--net', 'WideResNet', '--depth', '10', '--widen_factor', '1',
                          '--ema_m', str(ema), '--save_dir', str(tmp_path)])
        _, dls = build_data(a, device='cpu')
        moms = [m.momentum for m in build_learner(a, dls).model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(moms) > 3 and all(abs(m - bn) < 1e-12 for m in moms), moms

def test_resume_into_another_existing_run_is_refused(tmp_path):
    from defixmatch.train import resolve_args, CLIError
    src, other = tmp_path/'Dedigits_100_0.5_0', tmp_path/'other'
    src.mkdir(); other.mkdir()
    ckpt = src/'latest_model.pth'; ckpt.write_bytes(b'x')   # only its existence is checked here
    base = ['--dataset', 'digits', '--method', 'defixmatch', '--save_dir', str(tmp_path), '--resume', '--load_path']
    # continuing the run whose checkpoint it is: allowed (also through a non-normalised path)
    assert resolve_args(base + [str(tmp_path/'other'/'..'/src.name/ckpt.name)]).save_path == str(src)
    # writing into another existing run folder: refused, unless --overwrite
    with pytest.raises(CLIError, match='not inside it'): resolve_args(base + [str(ckpt), '--save_name', 'other'])
    assert resolve_args(base + [str(ckpt), '--save_name', 'other', '--overwrite']).save_name == 'other'
    # a new run folder continued from another run's checkpoint: allowed (the source is only read)
    assert resolve_args(base + [str(ckpt), '--save_name', 'new']).save_name == 'new'
    res = cli('train', *base, ckpt, '--save_name', 'other')
    assert_one_line_error(res, 'other', '--load_path', code=2)
    assert sorted(p.name for p in other.iterdir()) == [] and sorted(p.name for p in src.iterdir()) == ['latest_model.pth']

def test_gpu_index_is_validated(tmp_path, monkeypatch):
    from defixmatch.train import resolve_args, CLIError
    base = ['--dataset', 'digits', '--save_dir', str(tmp_path)]
    with pytest.raises(CLIError, match='--gpu'): resolve_args(base + ['--gpu', '-1'])
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert resolve_args(base + ['--gpu', '1']).gpu == 1
    with pytest.raises(CLIError, match=r'--gpu 2: only 2 GPU\(s\) visible'): resolve_args(base + ['--gpu', '2'])
    with pytest.warns(UserWarning, match='--gpu 1 ignored'): assert resolve_args(base + ['--gpu', '1', '--cpu']).gpu is None
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    with pytest.warns(UserWarning, match='no GPU visible'): assert resolve_args(base + ['--gpu', '0']).gpu is None
    # end to end on a machine without a visible GPU: a warning, not a traceback
    res = cli('train', *base, '--gpu', '3', '--dry_run', env={'CUDA_VISIBLE_DEVICES': ''})
    assert res.returncode == 0 and 'Traceback' not in res.stderr, res.stderr
    assert '--gpu 3 ignored' in res.stderr and json.loads(res.stdout)['gpu'] is None
    assert_one_line_error(cli('train', *base, '--gpu', '-2'), '--gpu', code=2)

def test_nonfinite_loss_is_one_line_exit_1(tmp_path):
    res = cli('train', '--dataset', 'digits', '--method', 'defixmatch', '--num_train_iter', 6, '--num_eval_iter', 3,
              '--batch_size', 8, '--uratio', 2, '--lr', '1e6', '--save_dir', tmp_path, '--no-progress')
    assert_one_line_error(res, 'non-finite', code=1)

def test_dry_run_prints_resolved_configuration(tmp_path):
    res = cli('train', *REF_COMMANDS['defixmatch'].split(), '--save_dir', tmp_path, '--dry_run')
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    assert (cfg['method'], cfg['debiased'], cfg['modified_fixmatch']) == ('defixmatch', True, True)
    assert cfg['save_name'] == 'Decifar10_4000_0.5_0'
    assert not (tmp_path/'Decifar10_4000_0.5_0').exists()

# ---------------------------------------------------------------- errors
def test_existing_run_folder_needs_overwrite(tmp_path):
    (tmp_path/'Dedigits_100_0.5_0').mkdir()
    res = cli('train', '--dataset', 'digits', '--method', 'defixmatch', '--save_dir', tmp_path)
    assert_one_line_error(res, 'Dedigits_100_0.5_0', '--overwrite', code=2)

def test_argparse_errors_are_one_line(tmp_path):
    assert_one_line_error(cli('train', '--num_labels', '1e2', '--save_dir', tmp_path), '--num_labels', '1e2', code=2)
    assert_one_line_error(cli('train', '--no_such_flag', '--save_dir', tmp_path), '--no_such_flag', code=2)
    assert_one_line_error(cli('eval', '--batch_size', 'x'), '--batch_size', code=2)

def test_resume_needs_load_path(tmp_path):
    assert_one_line_error(cli('train', '--dataset', 'digits', '--resume', '--save_dir', tmp_path), '--load_path', code=2)

def test_unknown_dataset(tmp_path):
    assert_one_line_error(cli('train', '--dataset', 'svhn2', '--save_dir', tmp_path), 'svhn2', code=2)

def test_num_labels_must_be_multiple_of_num_classes(tmp_path):
    assert_one_line_error(cli('train', '--dataset', 'digits', '--num_labels', '55', '--save_dir', tmp_path),
                          '--num_labels', 'multiple', code=2)

def test_missing_data_offline(tmp_path):
    # a proxy on a closed port makes any download attempt fail at once, as on an offline machine
    off = {'http_proxy': 'http://127.0.0.1:9', 'https_proxy': 'http://127.0.0.1:9',
           'HTTP_PROXY': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9'}
    res = cli('train', '--dataset', 'cifar10', '--data_dir', tmp_path/'nodata', '--num_train_iter', 2,
              '--save_dir', tmp_path/'runs', env=off, timeout=600)
    assert_one_line_error(res, 'cifar10', code=1)
    assert not any((tmp_path/'nodata').glob('**/*.tar.gz'))
    res = cli('eval', '--load_path', tmp_path/'missing.pth')
    assert_one_line_error(res, 'missing.pth', code=1)

# ---------------------------------------------------------------- a reference command starts on CPU
@pytest.fixture(scope='module')
def cifar_slice(tmp_path_factory):
    "400 training images per class (the reference commands ask for 4,000 labels) and 10 test images per class."
    if not CIFAR_TGZ.is_file(): pytest.skip(f"{CIFAR_TGZ} not found (set DEFIXMATCH_CIFAR10_TGZ to the CIFAR-10 JPEG tarball)")
    from workspace import untar_slice
    root = untar_slice(CIFAR_TGZ, tmp_path_factory.mktemp('cifar'), n_train=400, n_test=10)
    assert root.name == 'cifar10'
    return root

@pytest.mark.parametrize('name, run_name, method, lam', [('complete case', 'Modcifar10_4000_0.0_0', 'complete_case', 0.0),
    ('fixmatch', 'Modcifar10_4000_0.5_0', 'fixmatch', 0.5), ('defixmatch', 'Decifar10_4000_0.5_0', 'defixmatch', 0.5)])
def test_reference_command_starts_on_cpu(tmp_path, cifar_slice, name, run_name, method, lam):
    # the README's command verbatim, then: the CIFAR-10 JPEG folder (the name cifar10 needs the download),
    # a tiny budget and small batches so that WRN-28-2 takes a few seconds per step on a CPU
    args = REF_COMMANDS[name].split() + ['--dataset', cifar_slice, '--save_dir', tmp_path, '--num_train_iter', 2,
            '--num_eval_iter', 2, '--batch_size', 4, '--uratio', 2, '--eval_batch_size', 100, '--no-progress']
    res = cli('train', *args, timeout=900, env={'CUDA_VISIBLE_DEVICES': ''})   # the CPU fallback, on any machine
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'single process' in res.stderr and 'no GPU' in res.stderr   # --multiprocessing-distributed falls back
    run = tmp_path/run_name
    cfg = json.loads((run/'config.json').read_text())
    assert (cfg['method'], cfg['ulb_loss_ratio'], cfg['modified_fixmatch'], cfg['net'], cfg['depth']) == \
           (method, lam, True, 'WideResNet', 28)
    rep = json.loads((run/'report.json').read_text())
    assert rep['iteration'] == 2 and rep['n_test'] == 100 and len(rep['per_class_acc']) == 10
    assert 'accuracy' in res.stdout and 'worst class' in res.stdout

# ---------------------------------------------------------------- eval
def _authors_checkpoint(path, model):
    "A checkpoint in the reference's layout: DDP `module.` prefixes, optimizer, scheduler, it."
    sd = {f'module.{k}': v for k, v in model.state_dict().items()}
    torch.save({'train_model': sd, 'eval_model': sd, 'optimizer': {'state': {}, 'param_groups': []},
                'scheduler': {'last_epoch': 7}, 'it': 7}, path)

def test_eval_reports_authors_checkpoint(tmp_path):
    from defixmatch.models import get_model
    torch.manual_seed(0)
    model = get_model('LeNet', 10, in_channels=3, img_size=32)
    _authors_checkpoint(tmp_path/'model.pth', model)
    res = cli('eval', '--load_path', tmp_path/'model.pth', '--dataset', 'digits', '--num_classes', 10, '--net', 'LeNet',
              '--json', tmp_path/'m.json', '--plot', tmp_path/'plots')
    assert res.returncode == 0, res.stderr
    for k in ('accuracy', 'top-5 accuracy', 'cross-entropy', 'ECE', 'worst class', 'per-class accuracy'): assert k in res.stdout
    m = json.loads((tmp_path/'m.json').read_text())
    assert set(m) >= {'acc', 'top5', 'ce', 'ece', 'per_class_acc', 'worst_class_acc', 'classes', 'iteration'}
    assert m['iteration'] == 7 and len(m['per_class_acc']) == 10 and m['n_test'] == 500
    # the numbers are those of the model: recompute them in-process
    from defixmatch.data import load_dataset
    from defixmatch.metrics import evaluation_metrics
    d = load_dataset('digits')
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (d.mean, d.std))
    with torch.no_grad(): logits = model.eval()((d.test_x.float() / 255 - mean) / std)   # a forward pass of its own
    ref = evaluation_metrics(logits, d.test_y)
    for k in ('acc', 'top5', 'ce', 'ece', 'worst_class_acc'): assert abs(m[k] - ref[k]) < 1e-6, k
    assert f"{100 * ref['acc']:6.2f} %" in res.stdout
    for f in ('reliability.png', 'per_class.png'):
        assert (tmp_path/'plots'/f).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # a checkpoint that does not fit the network: one line
    res = cli('eval', '--load_path', tmp_path/'model.pth', '--dataset', 'digits', '--net', 'SmallCNN')
    assert_one_line_error(res, 'does not fit', code=1)

def test_readme_digits_command_short_run_then_eval(tmp_path):
    "The main job's command (shorter budget here) trains, reports, and `defixmatch-eval` reads its run folder alone."
    res = cli('train', '--dataset', 'digits', '--method', 'defixmatch', '--num_train_iter', 40, '--num_eval_iter', 20,
              '--save_dir', tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path/'Dedigits_100_0.5_0'
    from defixmatch.learner import has_tensorboard
    assert sorted(p.name for p in run.iterdir()) == ['config.json', 'latest_model.pth', 'log.csv', 'model_best.pth', 'report.json'] \
        + (['tensorboard'] if has_tensorboard() else [])
    rep = json.loads((run/'report.json').read_text())
    assert rep['iteration'] == 40
    # the report says where the log and the report went; a piped log holds no progress-bar control characters
    assert str(run/'log.csv') in res.stdout and str(run/'report.json') in res.stdout
    assert not any(c in res.stdout + res.stderr for c in '\r\x1b\x08'), repr(res.stdout[-500:])
    res2 = cli('eval', '--load_path', run/'latest_model.pth', '--json', '-')
    assert res2.returncode == 0, res2.stderr
    m = json.loads(res2.stdout[res2.stdout.index('{'):])
    assert m['dataset'] == 'digits' and m['net'] == 'LeNet'
    assert abs(m['acc'] - rep['acc']) < 1e-9 and abs(m['ce'] - rep['ce']) < 1e-6

def test_train_and_eval_do_not_import_each_other():
    "The two commands share `defixmatch.cli`; no import of one by the other, at module level or inside a function."
    import ast
    for mod, other in (('train', 'eval'), ('eval', 'train')):
        tree = ast.parse((ROOT/'defixmatch'/f'{mod}.py').read_text())
        names = [n.module or '' for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not any(m in (other, f'defixmatch.{other}') for m in names), (mod, names)

# ---------------------------------------------------------------- eval: run folders, defaults, datasets it cannot judge fully
def _image_folder(root, train_classes, test_classes, n=3):
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    for split, classes in (('train', train_classes), ('test', test_classes)):
        for c in classes:
            (root/split/c).mkdir(parents=True)
            for i in range(n): Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root/split/c/f'{i}.png')
    return root

def test_eval_default_load_path_is_what_training_writes():
    from defixmatch.train import resolve_args
    from defixmatch.eval import get_parser
    assert Path(get_parser().parse_args([]).load_path) == Path(resolve_args([]).save_path)/'model_best.pth'

def test_eval_reads_a_run_folder_and_warns_about_missing_test_classes(tmp_path):
    from defixmatch.models import get_model
    from defixmatch.checkpoint import save_checkpoint
    ds = _image_folder(tmp_path/'pets', ['cat', 'dog', 'eel'], ['cat', 'dog'])
    run = tmp_path/'run'
    save_checkpoint(run/'latest_model.pth', eval_model=get_model('SmallCNN', 3), it=5)
    (run/'config.json').write_text(json.dumps({'dataset': str(ds), 'net': 'SmallCNN', 'num_classes': 3}))
    res = cli('eval', '--load_path', run, '--cpu')   # a folder: its checkpoint (model_best.pth, else latest_model.pth)
    assert res.returncode == 0, res.stderr
    assert str(run/'latest_model.pth') in res.stdout and 'iteration 5' in res.stdout
    warn = [l for l in res.stderr.splitlines() if l.startswith('warning:')]
    assert len(warn) == 1 and 'eel' in warn[0] and 'no test images' in warn[0], res.stderr
    # the 3 classes of config.json against a 2-class dataset: blamed on config.json, not on a flag not given
    (run/'config.json').write_text(json.dumps({'dataset': 'digits', 'net': 'SmallCNN', 'num_classes': 3}))
    assert_one_line_error(cli('eval', '--load_path', run, '--cpu'), 'num_classes of', 'config.json', code=1)
    assert_one_line_error(cli('eval', '--load_path', tmp_path/'empty_dir_absent'), 'not found', code=1)
    (tmp_path/'empty').mkdir()
    assert_one_line_error(cli('eval', '--load_path', tmp_path/'empty'), 'holds no model_best.pth', code=1)

def test_train_refuses_a_single_class_folder(tmp_path):
    ds = _image_folder(tmp_path/'one', ['cat'], ['cat'])
    res = cli('train', '--dataset', ds, '--num_labels', 2, '--save_dir', tmp_path/'runs')
    assert_one_line_error(res, 'at least 2', code=2)
    assert not (tmp_path/'runs').exists()

# ---------------------------------------------------------------- a MedMNIST-format file at its own size
def _medmnist_npz(path, n_classes=2, n_train=30, n_test=10, seed=0):
    "A grey 28 x 28 .npz as the medmnist package writes it: {train,val,test}_images (N x 28 x 28), _labels (N x 1)."
    import numpy as np
    rng, arrays = np.random.default_rng(seed), {}
    for split, n in (('train', n_train * n_classes), ('val', n_classes), ('test', n_test * n_classes)):
        arrays[f'{split}_images'] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f'{split}_labels'] = (np.arange(n) % n_classes).astype(np.uint8)[:, None]
    np.savez_compressed(path, **arrays)
    return path

def test_npz_run_at_28_pixels_unbalanced_then_eval(tmp_path):
    "A .npz file trained at --img_size 28 with a uniform labelled draw; defixmatch-eval reads the run at 28 pixels."
    ds = _medmnist_npz(tmp_path/'tinymed.npz')
    res = cli('train', '--dataset', ds, '--img_size', 28, '--net', 'LeNet', '--num_train_iter', 4, '--num_eval_iter', 4,
              '--batch_size', 4, '--uratio', 1, '--num_labels', 10, '--eval_batch_size', 20, '--balanced_labels', 'False',
              '--save_dir', tmp_path/'runs', '--cpu', '--no-progress')
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path/'runs'/'tinymed_10_1.0_0'   # the file's stem names the run
    cfg = json.loads((run/'config.json').read_text())
    assert (cfg['img_size'], cfg['hflip'], cfg['balanced_labels'], cfg['num_classes']) == (28, None, False, 2)
    rep = json.loads((run/'report.json').read_text())
    assert (rep['iteration'], rep['n_test'], rep['img_size'], len(rep['per_class_acc'])) == (4, 20, 28, 2)
    assert 'tinymed' in res.stdout and '20 images, 2 classes' in res.stdout and f"{100 * rep['acc']:6.2f} %" in res.stdout
    # evaluation of the run folder alone: the 28-pixel test images of config.json, the same numbers
    res2 = cli('eval', '--load_path', run/'latest_model.pth', '--cpu', '--json', '-')
    assert res2.returncode == 0, res2.stderr
    m = json.loads(res2.stdout[res2.stdout.index('{'):])
    assert (m['img_size'], m['n_test'], m['dataset']) == (28, 20, str(ds))
    assert abs(m['acc'] - rep['acc']) < 1e-9 and abs(m['ce'] - rep['ce']) < 1e-6
    # at 32 pixels the LeNet of the run does not fit: one line, not a silently different network
    assert_one_line_error(cli('eval', '--load_path', run, '--cpu', '--img_size', 32), 'does not fit', code=1)


# ---------------------------------------------------------------- one run configuration
def test_method_flags_reach_the_method_and_the_record(tmp_path):
    "VAT's flags train with those values, and config.json and the checkpoint record them."
    res = cli('train', '--dataset', 'digits', '--method', 'vat', '--xi', '1e-5', '--eps', '2.5', '--n_power', '2',
              '--num_train_iter', 4, '--num_eval_iter', 2, '--batch_size', 8, '--uratio', 2, '--save_dir', tmp_path,
              '--save_name', 'v', '--no-progress')
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((tmp_path/'v'/'config.json').read_text())
    assert {k: cfg[k] for k in ('method', 'debiased', 'xi', 'eps', 'n_power', 'lambda_rampup')} == \
           {'method': 'vat', 'debiased': False, 'xi': 1e-5, 'eps': 2.5, 'n_power': 2, 'lambda_rampup': 0.4}
    from defixmatch.checkpoint import read_checkpoint
    ck = read_checkpoint(tmp_path/'v'/'latest_model.pth')['config']
    assert (ck['xi'], ck['eps'], ck['n_power']) == (1e-5, 2.5, 2)
    res = cli('train', '--dataset', 'digits', '--method', 'vat', '--p_cutoff', '0.5', '--save_dir', tmp_path)
    assert_one_line_error(res, '--p_cutoff is not a hyper-parameter of vat', code=2)

def test_help_lists_each_methods_flags():
    res = cli('train', '--help')
    assert res.returncode == 0, res.stderr
    for f in ('--xi', '--eps', '--n_power', '--lambda_vat', '--lambda_rampup', '--config'): assert f in res.stdout, f
    line = next(l for l in res.stdout.splitlines() if l.strip().startswith('vat, devat'))
    assert '--xi --eps --n_power' in line, line

def test_pimodel_ramps_lambda_by_default(tmp_path):
    res = cli('train', '--dataset', 'digits', '--method', 'pimodel', '--num_train_iter', 20, '--num_eval_iter', 5,
              '--batch_size', 8, '--uratio', 2, '--save_dir', tmp_path, '--save_name', 'pi', '--no-progress')
    assert res.returncode == 0, res.stderr[-3000:]
    import pandas as pd
    log = pd.read_csv(tmp_path/'pi'/'log.csv')
    lam = log['lambda_u'].tolist()   # the weight at the last step of each evaluation period: 20 exp(-5 (1 - t)^2), t = (i / K) / 0.4
    import math
    assert lam == pytest.approx([20 * math.exp(-5 * (1 - min(i / 20 / 0.4, 1)) ** 2) for i in (4, 9, 14, 19)], rel=1e-5), lam
    assert lam[0] < 6 and lam[-1] == 20

MODULE = """
from defixmatch.methods import SSLMethod, register_method

@register_method('gini', debiased='degini')
class Gini(SSLMethod):
    "Gini impurity of the weak view's prediction."
    rules = {'q': (lambda v: v > 1, '> 1')}
    def __init__(self, q:float=2., # order of the impurity
                 floor:float=0., # impurities below it count as 0
                 **kwargs):
        self.q, self.floor = q, floor
        super().__init__(**kwargs)
    def h(self, logits, xs):
        g = 1 - logits[0].softmax(-1).pow(self.q).sum(-1)
        return g * (g >= self.floor)
"""

def test_user_method_from_its_module(tmp_path):
    (tmp_path/'mymodule.py').write_text(MODULE)
    res = cli('train', '--method', 'mymodule:degini', '--help', cwd=tmp_path)
    assert res.returncode == 0 and '--q' in res.stdout and '--floor' in res.stdout, res.stderr
    res = cli('train', '--dataset', 'digits', '--method', 'mymodule:degini', '--q', 3, '--num_train_iter', 4, '--num_eval_iter', 2,
              '--batch_size', 8, '--uratio', 2, '--save_dir', tmp_path/'runs', '--no-progress', cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path/'runs'/'degini_digits_100_0.5_0'
    cfg = json.loads((run/'config.json').read_text())
    assert (cfg['method'], cfg['debiased'], cfg['q'], cfg['floor']) == ('mymodule:degini', True, 3.0, 0.0)
    res = cli('train', '--dataset', 'digits', '--method', 'mymodule:degini', '--q', 1, '--save_dir', tmp_path/'runs', cwd=tmp_path)
    assert_one_line_error(res, '--q must be > 1', code=2)
    res = cli('train', '--method', 'nosuchmodule:gini', cwd=tmp_path)
    assert_one_line_error(res, "no module 'nosuchmodule'", code=2)

def test_config_file_remakes_a_run(tmp_path):
    "A run folder's config.json re-makes the run (same report); a four-line YAML file runs; flags override the file."
    args = ['--dataset', 'digits', '--method', 'defixmatch', '--num_train_iter', 20, '--num_eval_iter', 10, '--batch_size', 8,
            '--uratio', 2, '--save_dir', tmp_path, '--save_name', 'a', '--no-progress']
    assert cli('train', *args).returncode == 0
    res = cli('train', '--config', tmp_path/'a'/'config.json', '--save_name', 'b', '--no-progress')
    assert res.returncode == 0, res.stderr[-3000:]
    ra, rb = (json.loads((tmp_path/n/'report.json').read_text()) for n in 'ab')
    for k in ('acc', 'ce', 'ece', 'per_class_acc', 'iteration'): assert ra[k] == rb[k], k
    ca, cb = (json.loads((tmp_path/n/'config.json').read_text()) for n in 'ab')
    assert {k: v for k, v in ca.items() if k != 'save_name'} == {k: v for k, v in cb.items() if k != 'save_name'}
    (tmp_path/'run.yaml').write_text(f"dataset: digits\nmethod: depseudolabel\nnum_train_iter: 6\nsave_dir: {tmp_path}\n")
    res = cli('train', '--config', tmp_path/'run.yaml', '--num_eval_iter', 3, '--no-progress')
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((tmp_path/'depseudolabel_digits_100_0.5_0'/'config.json').read_text())
    assert (cfg['method'], cfg['num_train_iter'], cfg['num_eval_iter'], cfg['p_cutoff']) == ('depseudolabel', 6, 3, 0.95)
    (tmp_path/'bad.yaml').write_text("dataset: digits\nnum_labelz: 10\n")
    assert_one_line_error(cli('train', '--config', tmp_path/'bad.yaml'), 'unknown flag(s) num_labelz', code=2)

def test_resume_checks_the_checkpoints_own_method(tmp_path):
    "Without config.json beside it, a checkpoint still says which method trained it."
    args = ['--dataset', 'digits', '--num_train_iter', 8, '--num_eval_iter', 4, '--batch_size', 8, '--uratio', 2, '--no-progress']
    assert cli('train', *args, '--method', 'defixmatch', '--save_dir', tmp_path, '--save_name', 'r').returncode == 0
    (tmp_path/'r'/'config.json').unlink()
    res = cli('train', *args, '--method', 'pseudolabel', '--resume', '--load_path', tmp_path/'r'/'latest_model.pth',
              '--save_dir', tmp_path, '--save_name', 'r2', '--num_train_iter', 12)
    assert_one_line_error(res, 'was trained by defixmatch, not pseudolabel', code=2)

# ---------------------------------------------------------------- method modules and plugins: one line, never a silent swap
_FIXMATCH_SUB = "from defixmatch.methods import register_method, FixMatch\n"

def test_bad_method_modules_are_one_line(tmp_path):
    (tmp_path/'boom.py').write_text("raise RuntimeError('the module failed')\n")
    (tmp_path/'broken.py').write_text("def f(:\n")
    (tmp_path/'shadow.py').write_text(_FIXMATCH_SUB + "@register_method('defixmatch')\nclass Evil(FixMatch): pass\n")
    (tmp_path/'nodef.py').write_text(_FIXMATCH_SUB + "@register_method('nodef')\nclass NoDefault(FixMatch):\n"
                                     "    def __init__(self, q:float, **kw): self.q = q; super().__init__(**kw)\n")
    (tmp_path/'clash.py').write_text(_FIXMATCH_SUB + "@register_method('clash')\nclass Clash(FixMatch):\n"
                                     "    def __init__(self, dropout:float=0.5, **kw): self.dropout = dropout; super().__init__(**kw)\n")
    for spec, msg in [('./boom.py:x', 'MODULE must be a module name'), ('.boom:x', 'MODULE must be a module name'),
                      ('boom:x', 'importing boom failed: RuntimeError: the module failed'), ('broken:x', 'importing broken failed: SyntaxError'),
                      ('shadow:defixmatch', "'defixmatch' is already the name of defixmatch.methods.FixMatch"),
                      ('nodef:nodef', 'give --q'), ('clash:clash', 'has the name of the flag --dropout')]:
        res = cli('train', '--dataset', 'digits', '--method', spec, '--dry_run', cwd=tmp_path)
        assert_one_line_error(res, msg, code=2)

def test_installed_plugins_cannot_shadow_or_break_commands(tmp_path):
    "A plugin that takes a built-in name is left out; one that fails to import is a warning, not a broken command."
    dist = tmp_path/'fakeplugins-0.1.dist-info'; dist.mkdir()
    (dist/'METADATA').write_text('Metadata-Version: 2.1\nName: fakeplugins\nVersion: 0.1\n')
    (dist/'entry_points.txt').write_text('[defixmatch.methods]\nbroken = brokenplugin\nshadow = shadowplugin\n')
    (tmp_path/'brokenplugin.py').write_text("raise ImportError('a dependency is missing')\n")
    (tmp_path/'shadowplugin.py').write_text(_FIXMATCH_SUB + "@register_method('defixmatch')\nclass Evil(FixMatch):\n"
                                            "    def __init__(self, evil:float=1., **kw): self.evil = evil; super().__init__(**kw)\n")
    env = {'PYTHONPATH': os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')])}
    res = cli('train', '--help', env=env)
    assert res.returncode == 0 and 'Traceback' not in res.stderr, res.stderr[-2000:]
    assert 'method plugin broken = brokenplugin' in res.stderr and 'a dependency is missing' in res.stderr, res.stderr
    res = cli('train', '--dataset', 'digits', '--method', 'defixmatch', '--dry_run', env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = json.loads(res.stdout[res.stdout.index('{'):])
    assert cfg['method'] == 'defixmatch' and 'evil' not in cfg                      # the built-in, not the plugin's
    assert "'defixmatch' is already the name of defixmatch.methods.FixMatch" in res.stderr, res.stderr

# ---------------------------------------------------------------- the README says what is true
def test_readme_table_commands_and_words(tmp_path):
    readme = (ROOT/'README.md').read_text()
    rows = [l for l in readme.split('## What is inside', 1)[1].split('\n## ', 1)[0].splitlines() if l.startswith('| `')]
    firsts = [r.split('|')[1].strip() for r in rows]
    assert len(firsts) == len(set(firsts)), firsts                                # no row twice
    assert 'pinned dependencies' not in readme and 'lives at' not in readme
    # the Gini example: a command that names its dataset, a class whose q is checked, and both work
    code = re.search(r"```python\n(@register_method\('gini'.*?)```", readme, flags=re.S).group(1)
    assert 'rules =' in code
    cmd = re.search(r"`(defixmatch-train [^`]*mymodule:degini[^`]*)`", readme).group(1)
    assert '--dataset digits' in cmd, cmd
    (tmp_path/'mymodule.py').write_text('from defixmatch.methods import SSLMethod, register_method\n' + code)
    args = cmd.split()[1:]
    res = cli('train', *args, '--dry_run', cwd=tmp_path)
    assert res.returncode == 0 and '"q": 3.0' in res.stdout, res.stderr[-2000:]
    assert_one_line_error(cli('train', *[a if a != '3' else '-5' for a in args], '--dry_run', cwd=tmp_path), '--q must be > 1', code=2)
