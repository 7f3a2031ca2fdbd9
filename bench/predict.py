"""Prediction with a portable model (issue 13): time to load a model, throughput per modality (subjects per second,
decoding included) and peak memory while predicting 1,000 new subjects with every modality, on this CPU.
A small aligned model is trained on part of one simulated cohort (quick-profile image sizes, 1 epoch: speed does not
depend on how well it learned) and applied to the other subjects of the same simulation (the same gene set).
Sizes: BENCH_PREDICT_SUBJECTS (default 1000), BENCH_TRAIN_SUBJECTS (default 300), BENCH_THREADS (default 2).
Writes reports/bench/predict.json."""
import json, os, sys, tempfile, time, warnings, logging
from pathlib import Path
warnings.filterwarnings('ignore')
logging.getLogger('lightning').setLevel(logging.WARNING); logging.getLogger('lightning.pytorch').setLevel(logging.WARNING)
logging.getLogger('organage').setLevel(logging.ERROR)
import numpy as np, torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'bench'
THREADS = int(os.environ.get('BENCH_THREADS', '2'))
N_NEW = int(os.environ.get('BENCH_PREDICT_SUBJECTS', '1000'))
N_TRAIN = int(os.environ.get('BENCH_TRAIN_SUBJECTS', '300'))
torch.set_num_threads(THREADS)
sys.path.insert(0, str(Path(__file__).parent))
from _common import PeakRSS


def _subset(adatas, subjects):
    s = set(subjects)
    return {m: a[a.obs.subject_id.astype(str).isin(s).to_numpy()].copy() for m, a in adatas.items()
            if a.obs.subject_id.astype(str).isin(s).any()}


def main():
    from organage.core import load_config, write_json
    from organage.data.synth import simulate_cohort
    from organage.data.cohort import read_cohort
    from organage.model.train import train_curriculum
    from organage.model.portable import export_model, load_portable, predict
    cfg = load_config('quick', overrides={'device': 'cpu', 'epochs': 1})
    res = {'threads': THREADS, 'profile': 'quick', 'image_size': cfg.image_size, 'volume_size': cfg.volume_size,
           'n_genes': cfg.n_genes, 'train_subjects': N_TRAIN, 'new_subjects': N_NEW}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t = time.perf_counter()
        simulate_cohort(d / 'cohort', subjects=N_TRAIN + N_NEW, seed=0, n_genes=cfg.n_genes, image_size=cfg.image_size,
                        volume_size=cfg.volume_size, mri_fov_mm=cfg.mri_fov_mm)
        res['simulate_seconds'] = round(time.perf_counter() - t, 1)
        ads = read_cohort(d / 'cohort')
        ids = sorted({s for a in ads.values() for s in a.obs.subject_id.astype(str)})
        rng = np.random.default_rng(0); rng.shuffle(ids)
        train_ids, new_ids = ids[:N_TRAIN], ids[N_TRAIN:]
        t = time.perf_counter()
        train = _subset(ads, train_ids)
        train_curriculum(cfg, train, d / 'run', stages=('aligned',), train={'progress': False})
        export_model(d / 'run', d / 'model', data_dir=train)
        res['train_and_export_seconds'] = round(time.perf_counter() - t, 1)
        t = time.perf_counter(); pm = load_portable(d / 'model'); res['load_model_seconds'] = round(time.perf_counter() - t, 3)
        new = _subset(ads, new_ids)
        predict(pm, {m: a[:4].copy() for m, a in new.items()})   # warm-up: first-call costs are not throughput
        per = {}
        for m, a in new.items():
            n = int(a.obs.subject_id.nunique())
            t = time.perf_counter(); r = predict(pm, {m: a}); s = time.perf_counter() - t
            per[m] = dict(subjects=n, observations=int(a.n_obs), seconds=round(s, 2), subjects_per_second=round(n / s, 1), rows=len(r))
        res['throughput'] = per
        with PeakRSS() as mem:
            t = time.perf_counter(); r = predict(pm, new, out=d / 'pred'); s = time.perf_counter() - t
        res['all_modalities'] = dict(subjects=int(r.subject_id.nunique()), rows=len(r), seconds=round(s, 2),
                                     subjects_per_second=round(r.subject_id.nunique() / s, 1),
                                     peak_rss_mb=round(mem.peak / 2**20), rss_increase_mb=round((mem.peak - mem.start) / 2**20))
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(res, OUT / 'predict.json')
    print(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
