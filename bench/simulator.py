"""Benchmark of the simulator: time and memory to write the `quick` cohort, and how learnable it is.

Writes reports/bench/simulator.json, reports/bench/simulator.png (timings, learnability) and
reports/bench/simulator_examples.png (images ordered by biological age).

Learnability: ridge regression (5-fold CV) from each modality's raw features to the organ's true biological age
(log-CPM for RNA, pixels for radiographs, voxels on the training grid -- each file reoriented and resampled through
its affine, as training reads it -- scaled by their 99th percentile for MRI), then on matched subjects a
cross-validated linear stacking of the unimodal predictions (seed 002's linear-regression combiner). This is a
floor for what the real models should reach, and checks that each modality alone is imperfect and combining helps.
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '2'); os.environ.setdefault('OPENBLAS_NUM_THREADS', '2')
import json, resource, sys, tempfile, time
from pathlib import Path
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'reports'/'bench'


def simulate(tmp):
    from organage.data.synth import simulate_cohort
    t0 = time.perf_counter()
    root = simulate_cohort(Path(tmp)/'quick', subjects=1200, seed=0, paired_fraction=0.3, n_genes=2000, image_size=64, volume_size=32)
    wall = time.perf_counter() - t0
    meta = json.loads((root/'simulation.json').read_text())
    files = [f for f in root.rglob('*') if f.is_file()]
    return root, dict(wall_seconds=round(wall, 2), stage_seconds=meta['stage_seconds'], files=len(files),
                      megabytes=round(sum(f.stat().st_size for f in files)/2**20, 1),
                      peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024, 1))


def _half(v):
    v = np.asarray(v, float); v = v[:v.shape[0]//2*2, :v.shape[1]//2*2, :v.shape[2]//2*2]
    return v.reshape(v.shape[0]//2, 2, v.shape[1]//2, 2, v.shape[2]//2, 2).mean((1, 3, 5))


def learnability(root):
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from organage.data.cohort import read_cohort
    from organage.data.chexpert import load_radiograph
    from organage.data.ixi import load_volume
    from organage.data.preprocess import resample_to_grid
    d = read_cohort(root)
    truth = pd.read_csv(root/'truth.csv').set_index(['subject_id', 'organ'])
    people = pd.read_csv(root/'subjects.csv')
    matched = set(people.subject_id[people.group == 'matched'])

    def cv(X, y):
        m = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))
        return cross_val_predict(m, X, y, cv=5)

    preds, res = {}, {}
    rna = d['rna']
    X = np.asarray(rna.X.todense() if hasattr(rna.X, 'todense') else rna.X, float)
    lcpm = np.log1p(X/X.sum(1, keepdims=True)*1e6)
    for organ in ('lung', 'brain'):
        m = (rna.obs.organ == organ).to_numpy(); o = rna.obs[m]
        y = truth.bio_age.loc[list(zip(o.subject_id, o.organ))].to_numpy()
        p = cv(lcpm[m], y)
        preds[('rna', organ)] = pd.Series(p, index=o.subject_id.to_numpy()).groupby(level=0).mean()
        res[f'rna_{organ}'] = dict(n=int(m.sum()), mae_bio=float(np.abs(p - y).mean()), r=float(np.corrcoef(p, y)[0, 1]))
    for mod, organ, load in (('xray', 'lung', load_radiograph), ('mri', 'brain', load_volume)):
        o = d[mod].obs
        if mod == 'mri':  # on the 32^3 training grid (files differ in orientation and voxel size); 2x2x2 block means keep ridge fast
            X = np.stack([_half(resample_to_grid(load(p), 32)).ravel() for p in o.path]).astype(float)
            X /= np.percentile(X, 99, axis=1, keepdims=True)
        else: X = np.stack([load(p).ravel() for p in o.path]).astype(float)
        y = truth.bio_age.loc[list(zip(o.subject_id, o.organ))].to_numpy()
        p = cv(X, y)
        preds[(mod, organ)] = pd.Series(p, index=o.subject_id.to_numpy()).groupby(level=0).mean()
        res[f'{mod}_{organ}'] = dict(n=len(o), mae_bio=float(np.abs(p - y).mean()), r=float(np.corrcoef(p, y)[0, 1]))
    fused = {}
    for organ, mods in (('lung', ('rna', 'xray')), ('brain', ('rna', 'mri'))):
        P = pd.concat({m: preds[(m, organ)] for m in mods}, axis=1)
        P = P[P.index.isin(matched)].dropna()
        y = truth.bio_age.loc[[(s, organ) for s in P.index]].to_numpy()
        from sklearn.linear_model import LinearRegression
        f = cross_val_predict(LinearRegression(), P.to_numpy(), y, cv=5)  # stacked, like seed 002's linear combiner
        fused[organ] = dict(n_matched=len(P), **{f'mae_{m}': float(np.abs(P[m] - y).mean()) for m in mods},
                            mae_fused=float(np.abs(f - y).mean()))
    return res, fused, preds, truth


def figure(bench, res, fused, preds, truth, path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from organage.core import save_figure
    fig, ax = plt.subplots(1, 5, figsize=(20, 3.8))
    st = bench['stage_seconds']
    ax[0].barh(list(st), list(st.values())); ax[0].set_xlabel('seconds'); ax[0].set_title(f"quick cohort: {bench['wall_seconds']} s")
    for a, (mod, organ) in zip(ax[1:], [('rna', 'lung'), ('rna', 'brain'), ('xray', 'lung'), ('mri', 'brain')]):
        p = preds[(mod, organ)]; y = truth.bio_age.loc[[(s, organ) for s in p.index]].to_numpy()
        a.scatter(y, p, s=4, alpha=.4); a.plot([15, 95], [15, 95], 'k--', lw=.8)
        a.set_title(f"{mod} -> {organ} bio age, MAE {res[f'{mod}_{organ}']['mae_bio']:.1f}"); a.set_xlabel('true biological age')
    ax[1].set_ylabel('ridge CV prediction')
    save_figure(fig, path)


def examples(root, path):
    "Radiographs and mid-axial MRI slices of subjects ordered by the organ's biological age."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from organage.core import save_figure
    from organage.data.cohort import read_cohort
    from organage.data.chexpert import load_radiograph
    from organage.data.ixi import load_volume
    from organage.data.preprocess import resample_to_grid
    d = read_cohort(root, modalities=['xray', 'mri'])
    truth = pd.read_csv(root/'truth.csv').set_index(['subject_id', 'organ']).bio_age
    fig, ax = plt.subplots(2, 8, figsize=(16, 4.6))
    for row, (mod, organ) in enumerate((('xray', 'lung'), ('mri', 'brain'))):
        o = d[mod].obs.assign(bio=lambda t: truth.loc[list(zip(t.subject_id, t.organ))].to_numpy()).sort_values('bio')
        pick = o.iloc[np.linspace(0, len(o) - 1, 8).astype(int)]
        for a, (_, r) in zip(ax[row], pick.iterrows()):
            im = load_radiograph(r.path) if mod == 'xray' else resample_to_grid(load_volume(r.path), 32)[:, :, 17].T[::-1]
            a.imshow(im, cmap='gray'); a.axis('off')
            a.set_title(f"{organ} bio {r.bio:.0f} ({r.sex[0]}, {r.batch})", fontsize=8)
    save_figure(fig, path)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root, bench = simulate(tmp)
        res, fused, preds, truth = learnability(root)
        examples(root, OUT/'simulator_examples.png')
    out = dict(cohort=dict(subjects=1200, n_genes=2000, image_size=64, volume_size=32, paired_fraction=0.3),
               cpu_count=os.cpu_count(), **bench, ridge_unimodal=res, ridge_fusion_matched=fused)
    from organage.core import write_json
    write_json(out, OUT/'simulator.json')
    figure(bench, res, fused, preds, truth, OUT/'simulator.png')
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    sys.exit(main())
