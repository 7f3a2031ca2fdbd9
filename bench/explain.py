"""Benchmark: cost of the explanations at quick-profile sizes on the CPU (issue: "runs on the quick profile in minutes").

An untrained `OrganAgeModel` with the quick profile's shapes (2,000 genes, latent 64, SmallCNN width 8, depth 3,
64x64 radiographs, 32^3 volumes; cost does not depend on the weights) is explained:
- gene IG for 4 organs x 150 held-out samples, 32 steps, at three batch sizes (memory should follow batch size,
  not the number of samples);
- latent IG for the same rows;
- Grad-CAM for 200 radiographs and 200 volumes, per subject and averaged per age group.
Each case runs in its own subprocess so its peak resident memory is its own (sampled every 5 ms).
Writes reports/bench/explain.json, explain.csv and explain.png.

Usage: .venv/bin/python bench/explain.py [--out reports/bench] [--threads 2]
"""
import argparse, json, subprocess, sys, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ORGANS = ['brain', 'heart', 'kidney', 'liver', 'lung', 'muscle']


from _common import PeakRSS  # noqa: E402  (bench/ is on sys.path when run as a script)


def model():
    import torch
    from organage.model.fusion import OrganAgeModel, ModelConfig
    from organage.core import PROFILES
    torch.manual_seed(0)
    return OrganAgeModel(ModelConfig(**PROFILES['quick']['model'], organs=ORGANS, n_genes=2000)).eval()


def rna(n_per_organ=150, p=2000, seed=0):
    import numpy as np, pandas as pd, anndata as ad
    rng = np.random.default_rng(seed)
    organs = ['brain', 'kidney', 'liver', 'lung']
    obs = pd.DataFrame(dict(organ=np.repeat(organs, n_per_organ), subject_id=[f'S{i}' for i in range(len(organs) * n_per_organ)]))
    obs.index = obs.index.astype(str)
    return ad.AnnData(rng.normal(size=(len(obs), p)).astype(np.float32), obs=obs,
                      var=pd.DataFrame(dict(symbol=[f'G{j}' for j in range(p)]), index=[f'ENSG{j}' for j in range(p)]))


def worker(case, threads):
    import numpy as np, torch
    torch.set_num_threads(threads)
    m = model(); out = dict(case=case, threads=threads)
    if case.startswith('genes'):
        from organage.explain.attribution import explain_genes
        bs = int(case.split('_bs')[1]); A = rna()
        with PeakRSS() as r:
            t0 = time.perf_counter(); res = explain_genes(m, A, A, n_steps=32, batch_size=bs, progress=False)
            out['seconds'] = time.perf_counter() - t0
        out.update(rows=A.n_obs, features=A.n_vars, n_steps=32, batch_size=bs, max_completeness_gap=max(res.delta.values()))
    elif case == 'latents':
        from organage.explain.attribution import explain_latents
        A = rna()
        with PeakRSS() as r:
            t0 = time.perf_counter(); res = explain_latents(m, A, A, n_steps=32, batch_size=64, progress=False)
            out['seconds'] = time.perf_counter() - t0
        out.update(rows=A.n_obs, features=res.table.feature.nunique(), n_steps=32, batch_size=64)
    else:
        from organage.explain.gradcam import model_gradcam, model_group_gradcam, age_groups
        modality, side = ('xray', 64) if case.startswith('xray') else ('mri', 32)
        sd = 2 if modality == 'xray' else 3
        rng = np.random.default_rng(0); n = 200
        imgs = rng.random((n,) + (side,) * sd, dtype=np.float32); ages = rng.uniform(20, 80, n)
        with PeakRSS() as r:
            t0 = time.perf_counter()
            if case.endswith('groups'): model_group_gradcam(m, modality, imgs, age_groups(ages), top=0.2, batch_size=16, progress=False)
            else: model_gradcam(m, modality, imgs, batch_size=16, progress=False)
            out['seconds'] = time.perf_counter() - t0
        out.update(rows=n, image_side=side, batch_size=16)
    out['peak_rss_mb'] = r.peak / 2**20; out['rss_increase_mb'] = (r.peak - r.start) / 2**20
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=str(ROOT / 'reports' / 'bench')); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--worker'); a = ap.parse_args()
    if a.worker: return worker(a.worker, a.threads)
    cases = ['genes_bs16', 'genes_bs64', 'genes_bs256', 'latents', 'xray', 'xray_groups', 'mri', 'mri_groups']
    rows = []
    for c in cases:
        r = subprocess.run([sys.executable, __file__, '--worker', c, '--threads', str(a.threads)], capture_output=True, text=True, cwd=ROOT)
        if r.returncode: sys.exit(f"{c} failed:\n{r.stderr[-3000:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1])); print(rows[-1], flush=True)
    import pandas as pd, matplotlib
    matplotlib.use('Agg'); import matplotlib.pyplot as plt
    from organage.core import write_json, write_csv, save_figure
    out = Path(a.out); df = pd.DataFrame(rows)
    write_csv(df, out / 'explain.csv'); write_json(dict(cases=rows, total_seconds=float(df.seconds.sum())), out / 'explain.json')
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    ax[0].barh(df.case, df.seconds); ax[0].set_xlabel('wall time (s)'); ax[0].set_title(f'explanations, quick profile, torch threads={a.threads}', fontsize=9)
    ax[1].barh(df.case, df.rss_increase_mb, color='tab:orange'); ax[1].set_xlabel('peak RSS increase during the call (MiB)')
    ax[1].set_title('memory (IG memory follows batch size)', fontsize=9)
    for x in ax: x.set_ylabel('case')
    fig.tight_layout(); save_figure(fig, out / 'explain.png')
    print(f"total {df.seconds.sum():.1f} s -> {out/'explain.json'}")


if __name__ == '__main__':
    main()
