"""The benchmark scripts run end to end on a tiny configuration (CI checks that they work, not how fast)."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def run(script, *args):
    r = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / script), *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"{script} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout

def test_step_overhead_tiny():
    out = run('step_overhead.py', '--tiny', '--threads', '1', '--no-bar', '--lean')
    assert 'same work: largest weight difference' in out
    assert 'ratio fastai / plain' in out

def test_loader_tiny():
    out = run('loader.py', '--tiny')
    assert 'views/s per worker' in out and 'ratio fed / compute-only' in out

def test_gpu_step_tiny_on_cpu(tmp_path):
    out = run('gpu_step.py', '--device', 'cpu', '--tiny', '--json', str(tmp_path / 'res.json'))
    res = json.loads((tmp_path / 'res.json').read_text())
    assert res['notes'] == [], res['notes']
    assert all(r is not None and r['it_s'] > 0 for r in res['compute'].values()), out
    assert any('torch.compile' in k for k in res['compute']), 'the compiled variant did not run'
    assert len(res['fed']) == 2 and all(r['it_s'] > 0 for r in res['fed'].values())
    assert res['augment']['max_abs_diff_vs_cpu'] == 0
    assert set(res['fastai']) == {'as shipped', 'lean'}
