"""Informative labels on Fashion-MNIST, trained through `defixmatch-train`: does weighting the risk by 1/φ help?

Each training image of class k is labelled with probability φ_k (`--label_probs`; by default the digits example's
φ scaled to about 1,000 labels: 4.0 % of class 0 down to 0.4 % of class 9), seeded by the run's seed. Nine runs per
seed, all with the Fashion-MNIST preset of the command line (LeNet, 16 labelled + 112 unlabelled images per step,
EMA 0.99), the same labelled set and initial weights within a seed:

* `complete_case`: the supervised loss alone (λ = 0), unweighted;
* `pseudolabel`: Pseudo-label at its default λ, unweighted (biased twice: by the unlabelled term and by the labelling);
* `depseudolabel`: DePseudo-label, unweighted (unbiased under MCAR only);
* `depseudolabel_ipw_oracle`: DePseudo-label with the IPW risk at the true φ (`--ipw oracle`);
* `depseudolabel_ipw_estimate`: the same with φ estimated during training (`--ipw estimate`);
* `fixmatch`, `defixmatch`, `defixmatch_ipw_oracle`, `defixmatch_ipw_estimate`: the same four for FixMatch (biased
  and debiased, the modified supervised loss of eq. 52, λ = ½).

Every run writes its run folder under `--work_dir`; its `report.json` (test metrics of the last EMA model on the
10,000 test images, whose classes are balanced; φ̂ and the test of informative labels) becomes one row of
NAME_runs.csv. A run whose report exists is not run again, so the script can be stopped and started again.

    python benchmarks/informative_fashion_mnist.py --seeds 3            # the study (27 runs of minutes each)
    python benchmarks/informative_fashion_mnist.py --design followup --name informative_fashion_mnist_followup --seeds 3
    python benchmarks/informative_fashion_mnist.py --quick              # generated idx files, a few iterations
"""
import argparse, csv, json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'benchmarks'))
from grid import RESULTS, record_invocation, update_invocation, versions, now, locked, shown  # noqa: E402

PHI = [0.04, 0.0333, 0.0267, 0.02, 0.0167, 0.0133, 0.01, 0.0067, 0.0053, 0.004]
RUNS = {'complete_case': ['--method', 'pseudolabel', '--ulb_loss_ratio', '0'],
        'pseudolabel': ['--method', 'pseudolabel'],
        'depseudolabel': ['--method', 'depseudolabel'],
        'depseudolabel_ipw_oracle': ['--method', 'depseudolabel', '--ipw', 'oracle'],
        'depseudolabel_ipw_estimate': ['--method', 'depseudolabel', '--ipw', 'estimate'],
        'fixmatch': ['--method', 'fixmatch'],
        'defixmatch': ['--method', 'defixmatch'],
        'defixmatch_ipw_oracle': ['--method', 'defixmatch', '--ipw', 'oracle'],
        'defixmatch_ipw_estimate': ['--method', 'defixmatch', '--ipw', 'estimate']}
FIELDS = ('run', 'seed', 'num_labels', 'acc', 'ce', 'ece', 'worst_class_acc', 'phi_err', 'phi_hat', 'phi_used', 'test',
          'statistic', 'p_value', 'wall_s', 'iterations', 'finished')


def command(run:str, seed:int, a, folder:Path)->list:
    "The `defixmatch-train` command of one run."
    label = (['--label_probs', ','.join(f'{p:g}' for p in a.phi)] if a.counts is None else
             ['--label_counts', ','.join(map(str, a.counts[0])), '--unlabelled_counts', ','.join(map(str, a.counts[1]))])
    return [sys.executable, '-m', 'defixmatch.train', '--dataset', 'fashion_mnist', '--data_dir', str(a.data_dir), *label, *RUNS[run], '--seed', str(seed), '--cpu', '--no-progress',
            '--num_train_iter', str(a.iterations), '--num_eval_iter', str(a.eval_every), '--save_dir', str(folder.parent),
            '--save_name', folder.name, '--overwrite', *a.extra]


def row_of(run:str, seed:int, folder:Path, phi, wall:float, log:str='')->dict:
    "One row of NAME_runs.csv from a finished run folder (and the command's output `log`, which says how many images were labelled)."
    import re
    rep = json.loads((folder/'report.json').read_text())
    drawn = re.search(r': (\d+) labels,', log)
    hat = rep.get('phi_hat')
    err = None if hat is None else sum((h - p) ** 2 for h, p in zip(hat, phi)) ** 0.5
    t = rep.get('informative_labels_test') or {}
    per = rep.get('per_class_acc') or []
    return dict(run=run, seed=seed, num_labels=rep.get('num_labels') or (int(drawn.group(1)) if drawn else None), acc=rep['acc'], ce=rep['ce'],
                ece=rep['ece'], worst_class_acc=min(per) if per else None, phi_err=err, phi_hat=json.dumps(hat),
                phi_used=json.dumps(rep.get('phi_used')), test=t.get('test'), statistic=t.get('statistic'),
                p_value=t.get('p_value'), wall_s=round(wall, 1), iterations=rep.get('iteration'), finished=now())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', type=Path, default=None, help='folder of the result files (default benchmarks/results)')
    p.add_argument('--name', default='informative_fashion_mnist')
    p.add_argument('--work_dir', type=Path, default=None, help='folder of the run folders (default: NAME_work in the temporary folder)')
    p.add_argument('--data_dir', type=Path, default=Path('/usr/share/datasets/fashion-mnist'))
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--first_seed', type=int, default=0)
    p.add_argument('--runs', nargs='+', default=list(RUNS), choices=list(RUNS))
    p.add_argument('--iterations', type=int, default=1500, help='K of every run (the preset: 1500)')
    p.add_argument('--eval_every', type=int, default=100)
    p.add_argument('--phi', type=lambda s: [float(v) for v in s.split(',')], default=PHI, help='φ, one per class')
    p.add_argument('--design', choices=('probs', 'followup'), default='probs', help="probs: each image labelled with "
                   "probability φ_k (--phi); followup: the follow-up's counts, 400·10^(−k/9) labelled and 400·10^(k/9) "
                   "unlabelled images of class k, the others left out (--label_counts, --unlabelled_counts)")
    p.add_argument('--quick', action='store_true', help='generated idx files and a few iterations, in a temporary folder')
    a = p.parse_args(argv)
    a.extra, a.counts = [], None
    if a.design == 'followup':
        from defixmatch.informative import followup_counts, implied_phi
        n_lab, n_unl = followup_counts()
        a.counts, a.phi = (n_lab.tolist(), n_unl.tolist()), implied_phi(n_lab, n_unl).round(6).tolist()
    if a.quick:
        from fashion_mnist import _write_quick_idx
        a.out = a.out or Path(tempfile.mkdtemp(prefix='informative_fashion_mnist_quick_'))
        a.data_dir = a.out/'idx'; _write_quick_idx(a.data_dir)
        a.seeds, a.iterations, a.eval_every, a.phi = 1, 4, 2, [0.5] * 10
        if a.design == 'followup': a.counts, a.phi = ([3] * 10, [9] * 10), [0.25] * 10   # 30 images per class
        a.extra = ['--batch_size', '4', '--uratio', '2', '--eval_batch_size', '50']
    elif not (a.data_dir/'train-images-idx3-ubyte.gz').exists() and not (a.data_dir/'train-images-idx3-ubyte').exists():
        print(f"skipped: no Fashion-MNIST idx files in {a.data_dir} (apt-get install dataset-fashion-mnist)"); return None
    out = a.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    work = a.work_dir or Path(tempfile.gettempdir())/f'{a.name}_work'
    runs_csv, side = out/f'{a.name}_runs.csv', out/f'{a.name}_runs.json'
    args = sys.argv[1:] if argv is None else [str(v) for v in argv]
    entry = dict(command=' '.join(['python', 'benchmarks/informative_fashion_mnist.py', *args]), started=now(), pid=os.getpid())
    budget = dict(design=a.design, phi=a.phi, label_counts=a.counts and a.counts[0], unlabelled_counts=a.counts and a.counts[1], iterations=a.iterations, eval_every=a.eval_every, runs={k: RUNS[k] for k in a.runs},
                  preset='fashion_mnist (LeNet, batch 16, uratio 7, EMA 0.99, lr 0.03 cosine)', threads=os.environ.get('OMP_NUM_THREADS'))
    with locked(runs_csv): record_invocation(side, entry, budget=budget, versions=versions())
    done = set()
    if runs_csv.exists():
        with runs_csv.open(newline='') as f: done = {(r['run'], int(r['seed'])) for r in csv.DictReader(f)}
    new = 0
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        for run in a.runs:
            if (run, seed) in done: continue
            folder = work/f'{run}_s{seed}'
            t0 = time.time()
            res = subprocess.run(command(run, seed, a, folder), capture_output=True, text=True,
                                 env=dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1')))
            if res.returncode != 0:
                print(f"{run} seed {seed} failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}", flush=True)
                continue
            row = row_of(run, seed, folder, a.phi, time.time() - t0, res.stdout + res.stderr)
            with locked(runs_csv):
                first = not runs_csv.exists()
                with runs_csv.open('a', newline='') as f:
                    w = csv.DictWriter(f, fieldnames=FIELDS)
                    if first: w.writeheader()
                    w.writerow(row)
            new += 1
            print(f"{run:>28} seed={seed} n_l={row['num_labels']} acc={row['acc']:.4f} ce={row['ce']:.4f} "
                  f"phi_err={row['phi_err'] if row['phi_err'] is None else round(row['phi_err'], 4)} p={row['p_value']} {row['wall_s']}s", flush=True)
    with locked(runs_csv): update_invocation(side, entry, finished=now(), new_runs=new)
    print(f"# {new} new runs; results in {shown(runs_csv)}", flush=True)
    return runs_csv


if __name__ == '__main__': main()
