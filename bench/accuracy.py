"""Accuracy of every shipped model beside its baseline, read off a finished `organage reproduce` (issue #12):
per model MAE, MAE over the noise floor, raw 95% interval coverage, Spearman(sigma, |error|) and training seconds (the four
baselines share one stage and show its seconds)
(test subjects of the main run), the repeated-split Table 1 (mean and sd over subject-grouped splits), the paired
differences, and the reproduce's wall time (its manifest). Runs `organage reproduce` first when the profile's
report folder has no Table 1 (BENCH_PROFILE, default quick). Writes reports/bench/accuracy.json and accuracy.csv."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'bench'
PROFILE = os.environ.get('BENCH_PROFILE', 'quick')


def main():
    rep = ROOT / 'reports' / PROFILE
    t1p = rep / 'tables' / 'table1_ablation.csv'
    if not t1p.exists():
        subprocess.run([sys.executable, '-c', 'import sys; from organage.cli import main; sys.exit(main())', 'reproduce', '--profile', PROFILE], check=True, cwd=ROOT)
    t1 = pd.read_csv(t1p)
    stages = json.loads((rep / 'run' / 'train_summary.json').read_text())['stages']
    secs = {k: v.get('train_seconds') for k, v in stages.items()}
    t1['train_seconds'] = [secs.get(m, secs.get('baselines') if m in ('enet_rna', 'pcr_xray', 'pcr_mri', 'stacked') else None) for m in t1.model]
    res = {'profile': PROFILE, 'table1_test': t1.to_dict('records')}
    for name in ('table1_repeated', 'table1_paired_differences', 'truth_matched_table1', 'truth_matched_paired_differences'):
        p = rep / 'tables' / f'{name}.csv'
        if p.exists(): res[name] = pd.read_csv(p).to_dict('records')
    man = rep / 'manifest.json'
    if man.exists():
        m = json.loads(man.read_text())
        res['reproduce_wall_seconds'] = m.get('wall_seconds'); res['reproduce_timings'] = m.get('timings')
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / 'accuracy.json').write_text(json.dumps(res, indent=1, default=str))
    t1.to_csv(OUT / 'accuracy.csv', index=False)
    cols = ['model', 'N', 'MAE', 'MAE_over_noise_floor', 'coverage95_raw', 'spearman_sigma_abs_error', 'train_seconds']
    print(t1[[c for c in cols if c in t1]].round(3).to_string(index=False))
    if 'reproduce_wall_seconds' in res: print(f"reproduce wall time: {res['reproduce_wall_seconds']} s")


if __name__ == '__main__':
    main()
