"""Benchmark: SHAP cost per sample for the TabTransformer clock (issue 16: "SHAP cost per sample").

`organage.explain.tabular.shap_attributions` (shap's GradientExplainer, one explainer per group of identical
categorical codes, codes held fixed) and, beside it, `ig_attributions` (captum IG, 32 steps) on an untrained
TabTransformer (cost does not depend on the weights) with the contract's default shape (3 categorical columns:
4 tissues, 2 data types, 2 sexes; dim 32, depth 2, heads 4, MLP 64-32), for 200 and 2,000 numeric features and
50 or 200 expected-gradient samples per explained row; 48 rows explained against 400 background rows. When
organage.model.tabtransformer is not importable, a stand-in with the same contract (embeddings + MLP) is timed and
the report says so. Writes reports/bench/tabular_shap.json and tabular_shap.csv.

One torch thread by default: the cost is shap's per-sample Python loop over small batches, which more threads do not
speed up (on the shared 2-core machine two threads were 5-20x slower than one).

Usage: .venv/bin/python bench/tabular_shap.py [--out reports/bench] [--threads 1] [--device cpu]
"""
import argparse, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CARDS = [4, 2, 2]


def model(p, seed=0):
    import torch
    from torch import nn
    torch.manual_seed(seed)
    try:
        from organage.model.tabtransformer import TabTransformer
        return TabTransformer(CARDS, p, dim=32, depth=2, heads=4, mlp=(64, 32), dropout=0.1).eval(), 'TabTransformer'
    except ImportError:
        class Standin(nn.Module):
            def __init__(self):
                super().__init__()
                self.n_cat = len(CARDS); self.emb = nn.ModuleList(nn.Embedding(c, 32) for c in CARDS)
                self.body = nn.Sequential(nn.Linear(32 * len(CARDS) + p, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
                self.head = nn.Linear(32, 1)
            def encode(self, x):
                c = x[:, :self.n_cat].long()
                return self.body(torch.cat([m(c[:, i]) for i, m in enumerate(self.emb)] + [x[:, self.n_cat:]], 1))
            def forward(self, x): return self.head(self.encode(x))
        return Standin().eval(), 'stand-in (embeddings + MLP; organage.model.tabtransformer not importable)'


def table(n, p, seed):
    import numpy as np
    g = np.random.default_rng(seed)
    return np.column_stack([g.integers(0, c, n) for c in CARDS] + [g.normal(size=(n, p))]).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=str(ROOT / 'reports' / 'bench')); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--rows', type=int, default=48)
    a = ap.parse_args()
    import os, numpy as np, pandas as pd, torch
    from organage.core import write_json, write_csv
    from organage.explain.tabular import shap_attributions, ig_attributions
    torch.set_num_threads(a.threads)
    rows, kind = [], None
    for p in (200, 2000):
        net, kind = model(p)
        x, bg = table(a.rows, p, 1), table(400, p, 2)
        shap_attributions(net, x[:2], bg, nsamples=10, min_background=1, device=a.device)   # warm-up (first-call costs)
        ig_attributions(net, x[:2], bg, n_steps=4, min_background=1, device=a.device)
        for method, k in (('shap', 50), ('shap', 200), ('ig', 32)):
            t0 = time.perf_counter()
            r = (shap_attributions(net, x, bg, nsamples=k, min_background=5, device=a.device) if method == 'shap'
                 else ig_attributions(net, x, bg, n_steps=k, min_background=5, device=a.device))
            secs = time.perf_counter() - t0
            span = float(np.abs(r.output - r.base).mean())
            rows.append(dict(method=method, features=p, samples_or_steps=k, rows=a.rows, background=len(bg), code_groups=r.n_groups,
                             pooled_groups=r.pooled_groups, seconds=round(secs, 3), seconds_per_sample=round(secs / a.rows, 5),
                             completeness_gap_rel=round(float(np.abs(r.completeness_gap).mean()) / span, 4) if span > 0 else None))
            print(rows[-1], flush=True)
    out = Path(a.out); df = pd.DataFrame(rows)
    write_csv(df, out / 'tabular_shap.csv')
    write_json(dict(model=kind, threads=a.threads, device=a.device, cpus=os.cpu_count(), cases=rows,
                    note='seconds_per_sample: wall time of one call / rows explained (all code groups, explainer set-up included); '
                         'completeness_gap_rel: mean |sum of attributions - (f(x) - reference)| / mean |f(x) - reference|'),
               out / 'tabular_shap.json')
    print(f"-> {out / 'tabular_shap.json'}")


if __name__ == '__main__':
    main()
