"""Informative labels on scikit-learn's digits with fixed logistic-regression classifiers: is the IPW risk unbiased where
DeSSL is not, is φ recovered, and do the tests of informative labels hold their size and have power?

Three experiments, each over many simulated labellings (seeds 0..R-1), written to benchmarks/results/ (or --out):

* risk (informative_risk.csv): a classifier fitted once on a fixed half A of the 1,797 images, all labelled (the
  "frozen network"); on the other half B, its per-image L (cross-entropy) and H (Pseudo-label's, τ = 0.95); each
  labelling r ~ Bernoulli(φ_y) of B gives the complete-case, DeSSL (λ = 1, unlabelled term over all images) and IPW
  estimates (oracle φ, moment-estimated φ, self-normalised, clipped at 2) of the risk; the target is the mean L over B.
* phi (informative_phi.csv): each labelling of all images, two-fold cross-fitted classifiers fitted on the labelled
  images of the other fold; φ̂ by the moment estimator (softmax and one-hot features), EM and the plug-in; ‖φ̂ − φ‖.
* tests (informative_tests.csv): each labelling of all images, a random half A whose labelled images fit the classifier
  and a half B tested: the likelihood-ratio test (χ² reference and a 39-draw parametric bootstrap; the classifier's
  posteriors as they are, and under-confident at temperature 2; EM to a tolerance of 1e-6) and the held-out Pearson test;
  MCAR, mild and moderate MNAR.

    python benchmarks/informative_labels.py            # the whole study (minutes on one core)
    python benchmarks/informative_labels.py --quick    # a few labellings in a temporary folder (seconds)
"""
import argparse, json, os, sys, tempfile, time, warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'benchmarks'))
sys.path.insert(0, str(ROOT))
RESULTS = ROOT/'benchmarks'/'results'
#: the labelling probabilities of the command line's example (`--label_probs`), and MCAR at their mean
PHI_MNAR = np.array([0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.08, 0.06])
RISK_SCENARIOS = {'mcar': np.full(10, PHI_MNAR.mean()), 'mnar': PHI_MNAR}
TEST_SCENARIOS = {'mcar': np.full(10, 0.3), 'mild': np.linspace(0.36, 0.24, 10), 'moderate': np.linspace(0.45, 0.15, 10)}


def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.data / 16., d.target.astype(np.int64)


def fit_proba(X, y, K=10):
    "Fit a logistic regression on (X, y); return a function giving (n, K) posteriors (classes never seen get 0)."
    from sklearn.linear_model import LogisticRegression
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        m = LogisticRegression(C=1., max_iter=300).fit(X, y)
    def proba(Z):
        out = np.zeros((len(Z), K)); out[:, m.classes_] = m.predict_proba(Z); return out
    return proba


def temper(q, T):
    "Posteriors at temperature T (T > 1: under-confident)."
    p = np.clip(q, 1e-12, None) ** (1 / T); return p / p.sum(1, keepdims=True)


def risk_experiment(reps, seed0=0):
    import torch
    from defixmatch.informative import simulate_labelling, ipw_risk, moment_estimate
    X, y = digits()
    perm = np.random.default_rng(12345).permutation(len(y)); A, B = perm[:len(y) // 2], perm[len(y) // 2:]
    q = fit_proba(X[A], y[A])(X[B]); yb = y[B]
    L = torch.as_tensor(-np.log(np.clip(q[np.arange(len(yb)), yb], 1e-12, None)))
    H = torch.as_tensor(np.where(q.max(1) >= 0.95, -np.log(np.clip(q.max(1), 1e-12, None)), 0.))
    target, rows = float(L.mean()), []
    for scen, phi in RISK_SCENARIOS.items():
        for s in range(seed0, seed0 + reps):
            r = simulate_labelling(yb, phi, seed=s); rt = torch.as_tensor(r); yl = torch.as_tensor(yb[r]); rho = float(r.mean())
            est = {'complete case': float(L[rt].mean()), 'dessl': float(ipw_risk(L[rt], H[rt], H, yl, None, 1.)),
                   'ipw oracle': float(ipw_risk(L[rt], H[rt], H, yl, phi, 1., rho=rho)),
                   'ipw self-normalised': float(ipw_risk(L[rt], H[rt], H, yl, phi, 1., rho=rho, self_normalise=True)),
                   'ipw clipped 2': float(ipw_risk(L[rt], H[rt], H, yl, phi, 1., rho=rho, clip=2.))}
            try:
                ph = moment_estimate(q[r], yb[r], q)['phi']
                est['ipw moment'] = float(ipw_risk(L[rt], H[rt], H, yl, ph, 1., rho=rho))
            except ValueError: est['ipw moment'] = float('nan')   # a class without a labelled image
            rows += [dict(scenario=scen, rep=s, estimator=k, estimate=round(v, 7), target=round(target, 7), n=len(yb), n_lab=int(r.sum()))
                     for k, v in est.items()]
    return rows


def phi_experiment(reps, seed0=0):
    from defixmatch.informative import simulate_labelling, moment_estimate, em_estimate, plugin_estimate
    X, y = digits(); K, n = 10, len(y)
    rows = []
    for scen, phi in RISK_SCENARIOS.items():
        for s in range(seed0, seed0 + reps):
            r = simulate_labelling(y, phi, seed=s)
            fold = np.random.default_rng(10_000 + s).permutation(n) % 2
            q, q_unif = np.zeros((n, K)), np.zeros((n, K))
            for f in (0, 1):
                tr = (fold != f) & r
                q[fold == f] = fit_proba(X[tr], y[tr])(X[fold == f])
                prior = np.bincount(y[tr], minlength=K) / tr.sum()
                u = q[fold == f] / np.clip(prior, 1e-12, None); q_unif[fold == f] = u / u.sum(1, keepdims=True)
            est, cond = {}, float('nan')
            try:
                m = moment_estimate(q[r], y[r], q); est['moment softmax'], cond = m['phi'], m['cond']
                oh = np.eye(K)[q.argmax(1)]; est['moment one-hot'] = moment_estimate(oh[r], y[r], oh)['phi']
            except ValueError: pass
            est['em'] = em_estimate(q_unif[r], y[r], q_unif[~r], prior_q=np.full(K, 1 / K), tol=1e-8)['phi']
            est['plug-in'] = plugin_estimate(q, np.bincount(y[r], minlength=K))
            for k, ph in est.items():
                rows.append(dict(scenario=scen, rep=s, estimator=k, l2=float(np.linalg.norm(ph - phi)),
                                 max_rel=float(np.max(np.abs(ph - phi) / phi)), cond=cond, phi_hat=json.dumps(np.round(ph, 5).tolist())))
    return rows


def tests_experiment(reps, n_boot=39, seed0=0, tol=1e-6):
    from defixmatch.informative import simulate_labelling, lr_test, pearson_test
    X, y = digits(); K, n = 10, len(y)
    rows = []
    for scen, phi in TEST_SCENARIOS.items():
        for s in range(seed0, seed0 + reps):
            r = simulate_labelling(y, phi, seed=s)
            half = np.random.default_rng(20_000 + s).permutation(n) % 2 == 0
            tr, B = half & r, ~half
            q = fit_proba(X[tr], y[tr])(X[B]); prior = np.bincount(y[tr], minlength=K) / tr.sum()
            rb, yb = r[B], y[B]
            for cal, qq in (('as fitted', q), ('temperature 2', temper(q, 2.))):
                t = lr_test(qq[rb], yb[rb], qq[~rb], prior_q=prior, n_boot=n_boot, seed=s, tol=tol)
                rows.append(dict(scenario=scen, rep=s, test='likelihood ratio', calibration=cal, statistic=t['statistic'], df=t['df'], p_value=t['p_value']))
                rows.append(dict(scenario=scen, rep=s, test='likelihood ratio (bootstrap)', calibration=cal, statistic=t['statistic'], df=t['df'], p_value=t['p_value_boot']))
            t = pearson_test(q.argmax(1), rb, K)
            rows.append(dict(scenario=scen, rep=s, test='pearson held-out', calibration='as fitted', statistic=t['statistic'], df=t['df'], p_value=t['p_value']))
    return rows


def write_csv(path:Path, rows:list):
    "Write `rows` to `path` through a temporary file in the same folder, renamed at the end (never half-written)."
    import csv
    fields = list(rows[0])
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', newline='') as f:
            w = csv.DictWriter(f, fieldnames=fields); w.writeheader(); w.writerows(rows)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp): os.unlink(tmp)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true', help='a few labellings into a temporary folder')
    p.add_argument('--out', type=Path, default=None, help='results folder (default benchmarks/results; --quick: a temporary one)')
    p.add_argument('--reps_risk', type=int, default=2000)
    p.add_argument('--reps_phi', type=int, default=200)
    p.add_argument('--reps_tests', type=int, default=120)
    p.add_argument('--n_boot', type=int, default=39)
    p.add_argument('--only', choices=('risk', 'phi', 'tests'), nargs='*', default=None, help='run only these experiments')
    a = p.parse_args(argv)
    if a.quick: a.reps_risk, a.reps_phi, a.reps_tests, a.n_boot = 5, 2, 2, 3
    out = a.out or (Path(tempfile.mkdtemp()) if a.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    import torch; torch.set_num_threads(1)
    from grid import record_invocation, versions
    started = datetime.now(timezone.utc).isoformat(timespec='seconds')
    todo = a.only or ['risk', 'phi', 'tests']
    timings = {}
    for name, fn, reps in (('risk', risk_experiment, a.reps_risk), ('phi', phi_experiment, a.reps_phi),
                           ('tests', lambda r: tests_experiment(r, a.n_boot), a.reps_tests)):
        if name not in todo: continue
        t0 = time.time(); rows = fn(reps); timings[name] = round(time.time() - t0, 1)
        write_csv(out/f'informative_{name}.csv', rows)
        print(f"{name}: {len(rows)} rows in {timings[name]} s -> informative_{name}.csv", flush=True)
    record_invocation(out/'informative_labels.json', dict(command=' '.join(['python', 'benchmarks/informative_labels.py', *(argv if argv is not None else sys.argv[1:])]),
                      started=started, seconds=timings, reps={k: v for k, v in dict(risk=a.reps_risk, phi=a.reps_phi, tests=a.reps_tests).items() if k in todo},
                      n_boot=a.n_boot if 'tests' in todo else None),
                      **versions())
    return out


if __name__ == '__main__': main()
