"""The shipped model (the portable bundle's answer: the main network blended per organ with the elastic net, issue #12)
against every other model over the outer folds of a cross-fit with every stage.

Reads a finished `oa.tl.cross_fit` folder with all four stages (`BENCH_CROSSFIT`, default reports/bench/crossfit_all);
with `BENCH_SHIPPED=1` and no such folder, runs that cross-fit on the quick simulated cohort first (about 6 minutes on
2 idle cores; otherwise the bench says so and skips, to keep `make bench` short). Per outer fold, the blend weights
are fitted on that outer model's validation fold and applied to its test fold (`organage.evaluate.tables`'s
`shipped` rows; computed here for cross-fits older than those rows). Writes reports/bench/shipped_folds.json and
shipped_folds.csv: shipped minus aligned, stacked and the elastic net per fold with the t-interval over folds
(`across_repeats`), and per organ shipped minus every single source on that organ's subjects."""
import json, os, sys
from pathlib import Path
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'bench'
CF = Path(os.environ.get('BENCH_CROSSFIT', OUT / 'crossfit_all'))
DATA = Path(os.environ.get('BENCH_DATA', ROOT / 'data' / 'simulated' / 'quick'))
SINGLE = ('unimodal_rna', 'unimodal_xray', 'unimodal_mri', 'enet_rna', 'pcr_xray', 'pcr_mri')


def ensure_crossfit():
    if (CF / 'oof_predictions.csv').exists(): return True
    if os.environ.get('BENCH_SHIPPED') != '1':
        print(f"no cross-fit with every stage at {CF}: set BENCH_SHIPPED=1 to run one (about 6 minutes), or BENCH_CROSSFIT=folder; skipped")
        return False
    from organage.core import load_config
    from organage.model.crossfit import cross_fit
    cfg = load_config('quick', overrides={'device': 'cpu', 'oof_stages': ['unimodal', 'naive', 'aligned', 'baselines'],
                                          'oof_modalities': ['rna', 'xray', 'mri']})
    cross_fit(cfg, DATA, CF, train={'progress': False})
    return True


def main():
    from organage.evaluate.predictions import fused_rows
    from organage.evaluate.repeats import paired_differences, across_repeats
    from organage.evaluate.tables import _shipped_rows
    if not ensure_crossfit(): return 0
    per_fold, per_organ = [], []
    folds = sorted(CF.glob('outer_*'), key=lambda p: int(p.name.split('_')[1]))
    for fd in folds:
        r = int(fd.name.split('_')[1])
        p = pd.read_csv(fd / 'predictions_by_model.csv', dtype={'subject_id': str})
        if not (p.model == 'shipped').any(): p = pd.concat([p, *_shipped_rows([p])], ignore_index=True)
        if not (p.model == 'shipped').any(): sys.exit(f"{fd}: no aligned/naive stage and elastic net: not a cross-fit with every stage")
        pd_ = paired_differences(p, comparisons=(('shipped', 'aligned'), ('shipped', 'stacked'), ('shipped', 'enet_rna'), ('aligned', 'naive')), seed=r)
        per_fold.append(pd_.assign(repeat=r))
        t = p[p.split == 'test']
        s = fused_rows(t, 'shipped')
        for organ in sorted(s.organ.unique()):
            a = s[s.organ == organ].set_index('subject_id')
            for m in SINGLE:
                b = fused_rows(t, m) if (t.model == m).any() else None
                if b is None or (b.organ == organ).sum() < 5: continue
                b = b[b.organ == organ].drop_duplicates('subject_id').set_index('subject_id')
                k = a.index.intersection(b.index)
                per_organ.append(dict(outer=r, organ=organ, model_b=m, n=len(k),
                                      diff=float((a.loc[k, 'mu'] - a.loc[k, 'age']).abs().mean() - (b.loc[k, 'mu'] - b.loc[k, 'age']).abs().mean())))
    by = pd.concat(per_fold, ignore_index=True)
    over = across_repeats(by)
    po = pd.DataFrame(per_organ)
    org = po.groupby(['organ', 'model_b']).agg(n_folds=('diff', 'size'), mean_diff=('diff', 'mean'), sd_diff=('diff', 'std'),
                                               folds_shipped_better=('diff', lambda d: int((d < 0).sum()))).reset_index()
    OUT.mkdir(parents=True, exist_ok=True)
    cols = ['comparison', 'organ', 'model_b', 'n_repeats', 'mean_MAE_a', 'mean_MAE_b', 'mean_diff', 't_low', 't_high', 'a_better']
    over[[c for c in cols if c in over]].to_csv(OUT / 'shipped_folds.csv', index=False)
    rec = dict(crossfit=str(CF), folds=len(folds), over_folds=json.loads(over.to_json(orient='records')),
               per_organ=json.loads(org.round(4).to_json(orient='records')))
    (OUT / 'shipped_folds.json').write_text(json.dumps(rec, indent=1))
    print(over[[c for c in cols if c in over]].round(3).to_string(index=False))
    print(org.round(3).to_string(index=False))
    return 0


if __name__ == '__main__':
    sys.exit(main())
