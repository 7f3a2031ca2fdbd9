"""Benchmark: 10,000 bootstrap replicates of MAE on 200,000 residuals (the paper's lung organ has 188,429 rows).

Compares `organage.evaluate.stats.bootstrap_ci` with `scipy.stats.bootstrap(batch=100)` on the same data in the same
run. Each method runs in its own subprocess so that peak memory is its own: we report wall seconds, the peak resident
memory sampled during the call (and its increase over the RSS before the call), and the process's lifetime peak.
Writes reports/bench/bootstrap.json and reports/bench/bootstrap.png.

Usage: .venv/bin/python bench/bootstrap.py [--n 200000] [--reps 10000] [--out reports/bench]
"""
import argparse, json, os, subprocess, sys, threading, time, resource
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_data(n, seed=0):
    import numpy as np
    r = np.random.default_rng(seed)
    age = r.uniform(18, 90, n)
    pred = 0.45 * age + 27 + r.normal(0, 14, n)       # compressed, lung-like predictions
    return age, pred


from _common import PeakRSS  # noqa: E402  (bench/ is on sys.path when run as a script)


def worker(kind, n, reps):
    import numpy as np
    age, pred = make_data(n)
    out = dict(kind=kind)
    if kind == 'organage':
        import numba
        from organage.evaluate.stats import bootstrap_ci
        t0 = time.perf_counter(); bootstrap_ci(age[:50], pred[:50], 'mae', 10); out['first_call_s'] = time.perf_counter() - t0
        out['threads'] = numba.get_num_threads()
        run = lambda: bootstrap_ci(age, pred, 'mae', reps, seed=1)
        with PeakRSS() as m:
            t0 = time.perf_counter(); ci = run(); out['seconds'] = time.perf_counter() - t0
        out['low'], out['high'] = float(ci.low[0]), float(ci.high[0])
        out['se'] = float(ci.se[0])
        # the other paths, for orientation: BCa (same draws + closed-form jackknife), and all six statistics
        # incl. the median in one pass (at a fifth of the replicates, to keep the bench short)
        t0 = time.perf_counter(); bootstrap_ci(age, pred, 'mae', reps, method='bca', seed=1)
        out['bca_seconds'] = time.perf_counter() - t0
        r2k = max(1, reps // 5)
        t0 = time.perf_counter(); bootstrap_ci(age, pred, ('mae', 'mse', 'rmse', 'r2', 'medae', 'mean_gap'), r2k, seed=1)
        out['all_stats_seconds'] = time.perf_counter() - t0; out['all_stats_replicates'] = r2k
    else:
        from scipy import stats
        e = pred - age
        mae = lambda x, axis=-1: np.mean(np.abs(x), axis=axis)
        with PeakRSS() as m:
            t0 = time.perf_counter()
            res = stats.bootstrap((e,), mae, n_resamples=reps, batch=100, vectorized=True, method='percentile',
                                  rng=np.random.default_rng(1))
            out['seconds'] = time.perf_counter() - t0
        out['low'], out['high'] = float(res.confidence_interval.low), float(res.confidence_interval.high)
        out['se'] = float(res.standard_error)
    out['rss_before_mb'] = m.start / 2**20
    out['peak_rss_mb'] = m.peak / 2**20
    out['peak_increase_mb'] = (m.peak - m.start) / 2**20
    out['process_max_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print('RESULT ' + json.dumps(out))


def run_worker(kind, n, reps):
    r = subprocess.run([sys.executable, __file__, '--worker', kind, '--n', str(n), '--reps', str(reps)],
                       capture_output=True, text=True, cwd=ROOT)
    line = [l for l in r.stdout.splitlines() if l.startswith('RESULT ')]
    if r.returncode or not line: raise RuntimeError(f"{kind} worker failed:\n{r.stdout}\n{r.stderr}")
    return json.loads(line[-1][7:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=200_000); ap.add_argument('--reps', type=int, default=10_000)
    ap.add_argument('--out', default=str(ROOT / 'reports' / 'bench')); ap.add_argument('--worker')
    a = ap.parse_args()
    if a.worker: return worker(a.worker, a.n, a.reps)
    import numpy as np, platform
    t0 = time.time()
    ours = run_worker('organage', a.n, a.reps)
    ref = run_worker('scipy', a.n, a.reps)
    # Monte-Carlo sd of a 2.5% / 97.5% bootstrap quantile ~ 2.7 se / sqrt(B); the two runs are independent
    mc = np.sqrt(2) * 2.7 * ref['se'] / np.sqrt(a.reps)
    res = dict(
        task=f'{a.reps} bootstrap replicates of MAE on {a.n} residuals (percentile 95% CI)',
        n=a.n, replicates=a.reps, cpu_count=os.cpu_count(), platform=platform.platform(),
        load_average_at_start=os.getloadavg(), organage=ours, scipy_batch100=ref,
        speedup=ref['seconds'] / ours['seconds'],
        interval_difference=dict(low=ours['low'] - ref['low'], high=ours['high'] - ref['high'], mc_sd_of_difference=mc,
                                 agree_within_4_mc_sd=bool(abs(ours['low'] - ref['low']) < 4 * mc and abs(ours['high'] - ref['high']) < 4 * mc)),
        targets=dict(speedup_at_least=5, peak_memory_under_mb=1024,
                     met=bool(ref['seconds'] / ours['seconds'] >= 5 and ours['peak_rss_mb'] < 1024)),
        bench_wall_seconds=time.time() - t0)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    from organage.core import write_json, save_figure
    write_json(res, out / 'bootstrap.json')
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    names = ['organage\nbootstrap_ci', 'scipy.stats\nbootstrap(batch=100)']
    ax[0].bar(names, [ours['seconds'], ref['seconds']], color=['tab:blue', 'tab:gray'])
    ax[0].set_ylabel('seconds'); ax[0].set_title(f"{a.reps:,} replicates, n={a.n:,}: {res['speedup']:.1f}x faster")
    ax[1].bar(names, [ours['peak_rss_mb'], ref['peak_rss_mb']], color=['tab:blue', 'tab:gray'], label='peak RSS')
    ax[1].bar(names, [ours['rss_before_mb'], ref['rss_before_mb']], color='white', alpha=0.5, hatch='//', label='RSS before call')
    ax[1].set_ylabel('MB'); ax[1].set_title('peak memory during the call'); ax[1].legend(fontsize=7)
    fig.tight_layout(); save_figure(fig, out / 'bootstrap.png')
    print(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
