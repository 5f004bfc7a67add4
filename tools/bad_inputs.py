"""A survey of bad inputs to `defixmatch-train` and `defixmatch-eval`: each is run once, in a temporary folder, and
classed by what the user sees: `one line` (a non-zero exit, no traceback, exactly one `error:` line), `traceback`,
`accepted` (exit 0) or `other` (a non-zero exit with no traceback but not one error line). Files the user is handed
(config files, idx files, image folders, checkpoints) are among the inputs; a case also checks that nothing it
guards was changed (a folder replaced, a module imported, a file overwritten). Every input is expected to be refused
in one line except those in `ACCEPTED`, which are valid after all.

    python tools/bad_inputs.py                      # all cases; a table, and benchmarks/results/bad_inputs.csv
    python tools/bad_inputs.py --only config        # the cases whose name contains 'config'
"""
import argparse, csv, gzip, json, os, shutil, struct, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT/'benchmarks'/'results'/'bad_inputs.csv'
TRAIN = [sys.executable, '-m', 'defixmatch.train']
EVAL = [sys.executable, '-m', 'defixmatch.eval']
TINY = ['--dataset', 'digits', '--num_train_iter', '4', '--num_eval_iter', '2', '--batch_size', '8', '--uratio', '2', '--no-progress']


def run(cmd, cwd, timeout=600):
    "Run `cmd`; its exit code, stderr and wall time."
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    try: r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired: return None, f'timed out after {timeout} s', time.time() - t0
    return r.returncode, r.stderr, time.time() - t0


def outcome(rc, err) -> str:
    if rc is None: return 'timeout'
    if 'Traceback' in err: return 'traceback'
    if rc == 0: return 'accepted'
    return 'one line' if sum('error:' in l for l in err.splitlines()) == 1 else 'other'


def idx(path, dims, data=b'', magic_type=8):
    "An idx file with the header `dims` and the bytes `data` after it."
    path.write_bytes(struct.pack('>BBBB', 0, 0, magic_type, len(dims)) + b''.join(struct.pack('>I', d) for d in dims) + data)


def cases(t:Path):
    "(name, item of the issue, command, guard): `guard()` is True when what the case protects is intact."
    yield 'config overwrite key', 1, TRAIN + ['--config', w(t/'c1.yaml', 'dataset: digits\noverwrite: true\n'), '--dry_run'], None
    yield 'config resume key', 1, TRAIN + ['--config', w(t/'c2.yaml', 'dataset: digits\nresume: true\n'), '--dry_run'], None
    yield 'config load_path key', 1, TRAIN + ['--config', w(t/'c3.yaml', 'dataset: digits\nload_path: x.pth\n'), '--dry_run'], None
    victim = t/'victim'/'important'; victim.mkdir(parents=True); (victim/'thesis.tex').write_text('kept')
    yield ('config save_dir + --overwrite on a foreign folder', 1,
           TRAIN + ['--config', w(t/'c4.yaml', f"dataset: digits\nsave_dir: {victim.parent}\nsave_name: important\n"), '--overwrite'] + TINY,
           lambda: [p.name for p in victim.iterdir()] == ['thesis.tex'])
    (t/'evilmod.py').write_text(f"open({str(t/'ran')!r}, 'w').write('x')\n")
    yield ('config method MODULE:NAME', 2, TRAIN + ['--config', w(t/'c5.json', json.dumps({'dataset': 'digits', 'method': 'evilmod:degini'})), '--dry_run'],
           lambda: not (t/'ran').exists())
    yield 'config method this:x', 2, TRAIN + ['--config', w(t/'c6.yaml', 'dataset: digits\nmethod: this:x\n'), '--dry_run'], None
    ck = t/'ok'/'latest_model.pth'
    before = ck.read_bytes()
    yield '--json onto a checkpoint', 3, EVAL + ['--load_path', t/'ok', '--json', ck], lambda: ck.read_bytes() == before
    os.mkfifo(t/'fifo.json')
    yield '--json onto a FIFO', 3, EVAL + ['--load_path', t/'ok', '--json', t/'fifo.json'], None
    w(t/'target.json', '{"kept": 1}'); (t/'link.json').symlink_to(t/'target.json')
    yield '--json onto a symlink', 3, EVAL + ['--load_path', t/'ok', '--json', t/'link.json'], lambda: (t/'target.json').read_text() == '{"kept": 1}'
    yield '--json onto /dev/null', 3, EVAL + ['--load_path', t/'ok', '--json', '/dev/null'], lambda: Path('/dev/null').is_char_device()
    (t/'shadow.py').write_text(_SUB + "@register_method('defixmatch')\nclass Evil(FixMatch): pass\n")
    yield '--method module registering a built-in name', 4, TRAIN + ['--method', 'shadow:defixmatch', '--dataset', 'digits', '--dry_run'], None
    for n, dims in (('idx longer than its header', (10, 28, 28)), ('idx header overflowing', (256, 2**28, 2**28))):
        d = t/n.replace(' ', '_'); d.mkdir()
        for split, count in (('train', 60000), ('t10k', 10000)):
            idx(d/f'{split}-images-idx3-ubyte', dims, b'\0' * (10 * 28 * 28 + 4096))
            idx(d/f'{split}-labels-idx1-ubyte', (count,), b'\0' * 16)
        yield n, 5, TRAIN + ['--dataset', 'mnist', '--data_dir', d] + TINY[2:], None
    d = t/'gzbomb'; d.mkdir()
    for split, count in (('train', 60000), ('t10k', 10000)):
        hdr = struct.pack('>BBBB', 0, 0, 8, 3) + b''.join(struct.pack('>I', x) for x in (count, 28, 28))
        with gzip.open(d/f'{split}-images-idx3-ubyte.gz', 'wb') as f:
            f.write(hdr)
            for _ in range(64): f.write(b'\0' * (16 << 20))   # 1 GiB of zeros, a 1 MB file
        idx(d/f'{split}-labels-idx1-ubyte', (count,), b'\0' * count)
    yield 'gzip bomb idx', 5, TRAIN + ['--dataset', 'mnist', '--data_dir', d] + TINY[2:], None
    yield 'YAML alias bomb', 5, TRAIN + ['--config', w(t/'bomb.yaml', _yaml_bomb()), '--dry_run'], None
    yield '2 M unknown JSON keys', 5, TRAIN + ['--config', w(t/'keys.json', json.dumps({f'k{i}': 0 for i in range(2_000_000)})), '--dry_run'], None
    yield '--img_size 100000', 5, TRAIN + ['--dataset', 'digits', '--img_size', '100000', '--dry_run'], None
    png = _image_folder(t/'pngbomb')
    if png: yield '30000 x 30000 PNG in an image folder', 5, TRAIN + ['--dataset', png, '--net', 'LeNet'] + TINY[2:], None
    yield from _tampered(t)
    for n, text in (('dataset: 7', 'dataset: 7\n'), ('save_name: [a, b]', 'dataset: digits\nsave_name: [a, b]\n'),
                    ('net: 5', 'dataset: digits\nnet: 5\n'), ('load_path: 5', 'dataset: digits\nload_path: 5\n'),
                    ('data_dir: 3 (mnist)', 'dataset: mnist\ndata_dir: 3\n'), ('hflip: 3', 'dataset: digits\nhflip: 3\n'),
                    ('dist_url: 5', 'dataset: digits\ndist_url: 5\n'), ('data_dir: 3 (digits)', 'dataset: digits\ndata_dir: 3\n'),
                    ('num_classes: "10"', 'dataset: digits\nnum_classes: "10"\n'), ('num_classes: "11"', 'dataset: digits\nnum_classes: "11"\n'), ('top-level list', '- dataset\n- digits\n'),
                    ('ulb_loss_ratio: .nan', 'dataset: digits\nulb_loss_ratio: .nan\n'), ('seed: -1', 'dataset: digits\nseed: -1\n'),
                    ('unknown key', 'dataset: digits\nnum_lables: 40\n'), ('not YAML', 'dataset: [digits\n')):
        yield f'config {n}', 7 if n in ('dataset: 7', 'save_name: [a, b]', 'net: 5', 'load_path: 5', 'data_dir: 3 (mnist)') else 8, \
            TRAIN + ['--config', w(t/f"cfg_{abs(hash(n))}.yaml", text), '--dry_run'], None
    for n, cfg in (('img_size: "x"', {'dataset': 'digits', 'net': 'LeNet', 'img_size': 'x'}), ('a list', ['digits'])):
        r = t/f'evalcfg_{abs(hash(n))}'; r.mkdir(); shutil.copy(ck, r/'latest_model.pth'); (r/'config.json').write_text(json.dumps(cfg))
        yield f'eval with config.json {n}', 7, EVAL + ['--load_path', r/'latest_model.pth'], None
    (t/'raises.py').write_text("raise RuntimeError('broken plugin')\n"); (t/'syntax.py').write_text('def (:\n')
    (t/'nodefault.py').write_text(_SUB + "@register_method('nodef')\nclass NoDefault(FixMatch):\n"
                                  "    def __init__(self, q:float, **kw): self.q = q; super().__init__(**kw)\n")
    (t/'clash.py').write_text(_SUB + "@register_method('clash')\nclass Clash(FixMatch):\n"
                              "    def __init__(self, dropout:float=0.5, **kw): self.dropout = dropout; super().__init__(**kw)\n")
    for spec in ('./file.py:NAME', '.mod:NAME', 'raises:x', 'syntax:x', 'nodefault:nodef', 'clash:clash', 'nosuchmodule:x'):
        yield f'--method {spec}', 7, TRAIN + ['--method', spec, '--dataset', 'digits', '--dry_run'], None
    junk = w(t/'junk.pth', 'not a checkpoint')
    yield 'eval of a junk checkpoint', 8, EVAL + ['--load_path', junk], lambda: not (t/'data').exists()
    for flags in (['--num_labels', '7'], ['--num_train_iter', '0'], ['--ema_m', '1'], ['--label_noise', '2'],
                  ['--num_val', '100'], ['--batch_size', '-1'], ['--lr', 'x'], ['--dataset', 'nosuchdata'],
                  ['--net', 'ResNet9000'], ['--method', 'nosuchmethod'], ['--resume'], ['--save_name', '../x'],
                  ['--label_probs', '0.5,0.5'], ['--ipw', 'oracle'], ['--max_image_pixels', '-5'],
                  ['--label_counts', '5,a'], ['--label_counts', '9' * 40], ['--unlabelled_counts', '5']):
        yield f"flags {' '.join(flags)}", 7, TRAIN + ['--dataset', 'digits', *flags, '--dry_run'] if '--dataset' not in flags else TRAIN + [*flags, '--dry_run'], None


#: The inputs that are valid after all: a file's string for a number flag is parsed by the flag's type, as on the command line.
ACCEPTED = {'config num_classes: "10"': 'accepted'}

_SUB = "from defixmatch.methods import register_method, FixMatch\n"


def w(path:Path, text:str)->Path:
    path.write_text(text); return path


def _yaml_bomb()->str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9): lines.append(f"a{i}: &a{i} [{','.join(['*a%d' % (i - 1)] * 9)}]")
    return '\n'.join(lines) + '\ndataset: digits\n'


def _image_folder(root:Path):
    "An image folder whose one training image is a 30000 x 30000 PNG (a few hundred KB); None without PIL."
    try: from PIL import Image
    except ImportError: return None
    for split in ('train', 'test'):
        for c in ('a', 'b'):
            (root/split/c).mkdir(parents=True)
            Image.new('L', (8, 8)).save(root/split/c/'0.png')
    Image.MAX_IMAGE_PIXELS = None
    Image.new('1', (30000, 30000)).save(root/'train'/'a'/'big.png')
    return root


def _tampered(t:Path):
    "A flexmatch run's checkpoint with its method state tampered with, resumed."
    import torch
    good = torch.load(t/'flex'/'latest_model.pth', weights_only=True, map_location='cpu')
    st = good['method_state']
    k = next(k for k, v in st.items() if torch.is_tensor(v) and v.ndim == 1 and v.numel() > 1)
    for n, state in (('tensor one entry too long', {**st, k: torch.cat([st[k], st[k][:1]])}),
                     ('NaN entry', {**st, k: torch.full_like(st[k].float(), float('nan')).to(st[k].dtype)}),
                     ('extra key', {**st, 'extra': torch.zeros(1)}), ('missing state', None)):
        r = t/f"flex_{n.replace(' ', '_')}"; r.mkdir()
        shutil.copy(t/'flex'/'config.json', r/'config.json')
        torch.save({**good, 'method_state': state} if state is not None else {x: v for x, v in good.items() if x != 'method_state'}, r/'latest_model.pth')
        yield f'flexmatch method state: {n}', 6, TRAIN + ['--method', 'flexmatch', *TINY, '--num_train_iter', '8', '--save_dir', t,
                                                          '--save_name', r.name, '--resume', '--load_path', r], None
    r = t/'flex_as_desoftmatch'; r.mkdir(); shutil.copy(t/'flex'/'latest_model.pth', r/'latest_model.pth')
    yield ('flexmatch checkpoint without config.json resumed as desoftmatch', 6,
           TRAIN + ['--method', 'desoftmatch', *TINY, '--num_train_iter', '8', '--save_dir', t, '--save_name', r.name, '--resume', '--load_path', r], None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--only', default=None, help='run only the cases whose name contains this text')
    p.add_argument('--out', type=Path, default=RESULTS)
    a = p.parse_args(argv)
    t = Path(tempfile.mkdtemp(prefix='bad_inputs_'))
    try:
        for name, extra in (('ok', []), ('flex', ['--method', 'flexmatch'])):   # the two good runs some cases start from
            rc, err, _ = run(TRAIN + TINY + extra + ['--save_dir', t, '--save_name', name], t)
            if rc != 0: sys.exit(f"the good run {name} failed: {err[-2000:]}")
        rows = []
        for name, item, cmd, guard in cases(t):
            if a.only and a.only not in name: continue
            rc, err, s = run(cmd, t)
            o = outcome(rc, err)
            kept = None if guard is None else bool(guard())
            last = next((l for l in reversed(err.splitlines()) if l.strip()), '')[:200]
            want = ACCEPTED.get(name, 'one line')
            rows.append(dict(case=name, item=item, outcome=o, expected=want, exit=rc, guarded_intact=kept, wall_s=round(s, 1), last_line=last))
            print(f"{o:10s} {rc!s:>4} {s:6.1f}s  [{item}] {name}: {last}", flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with a.out.open('w', newline='') as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0])); wr.writeheader(); wr.writerows(rows)
        counts = {}
        for r in rows: counts[r['outcome']] = counts.get(r['outcome'], 0) + 1
        broken = [r['case'] for r in rows if r['guarded_intact'] is False]
        unexpected = [r['case'] for r in rows if r['outcome'] != r['expected']]
        print(f"# {len(rows)} cases: " + ', '.join(f'{v} {k}' for k, v in sorted(counts.items())) +
              f"; guarded files changed: {broken or 'none'}; not as expected: {unexpected or 'none'}; results in {a.out}")
    finally: shutil.rmtree(t, ignore_errors=True)


if __name__ == '__main__': main()
