"""Cost of the per-site radiograph networks (seed 004, issue #15): training throughput (images per second over the
epochs run, validation passes included) and peak memory (resource.getrusage max RSS) of one site's SmallCNN at the
quick profile's settings (32-pixel inputs, `SiteSettings()`), and of PCA + ridge on the same images, on this machine.
A simulated cohort's msk/ folder is used when BENCH_DATA has one, else a small cohort is simulated. Writes
reports/bench/msk_sites.json."""
import json, os, resource, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'bench'


def _rss_mb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    import numpy as np, torch
    from organage.data.synth import simulate_cohort
    from organage.data.msk_sites import simulate_msk_sites_files, read_msk_sites
    from organage.model.sites import SiteSettings, site_arrays, site_folds, fit_site
    from organage.model.crossfit import outer_split
    from organage.model.baselines import fit_pcr, BaselineConfig, subject_folds
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', 1)))
    data = Path(os.environ.get('BENCH_DATA', ROOT / 'data' / 'simulated' / 'quick'))
    if not (data / 'msk' / 'MSK-v1.0' / 'train.csv').exists():
        if not (data / 'truth.csv').exists():
            data = Path(tempfile.mkdtemp()) / 'sim'
            simulate_cohort(data, subjects=1200, seed=0, n_genes=200, image_size=16, volume_size=16)
        t0 = time.perf_counter(); msk = simulate_msk_sites_files(data, seed=0, size=64, out=Path(tempfile.mkdtemp()) / 'msk')
        sim_s = time.perf_counter() - t0
    else: msk, sim_s = data / 'msk', None
    s = SiteSettings(device=os.environ.get('BENCH_DEVICE', 'cpu'))
    arrays = site_arrays(read_msk_sites(msk), s.size)
    folds = site_folds(arrays, s.folds, s.seed)
    res = dict(size=s.size, settings=dict(width=s.width, depth=s.depth, stem=s.stem, grid=s.grid, shift=s.shift, batch_size=s.batch_size,
                                           epochs=s.epochs), simulate_seconds=sim_s, threads=torch.get_num_threads(), cpus=os.cpu_count(), sites={})
    for site, (x, o) in arrays.items():
        sid = o.subject_id.to_numpy(); age = o.age.to_numpy()
        sp = outer_split(folds, 0).set_index('subject_id').split.reindex(sid).to_numpy()
        tr, va = np.flatnonzero(sp == 'train'), np.flatnonzero(sp == 'val')
        rss0 = _rss_mb()
        fit = fit_site(x[tr], age[tr], x[va], age[va], Path(tempfile.mkdtemp()) / site, s)
        t0 = time.perf_counter()
        fit_pcr(x[tr], age[tr], subject_folds(sid[tr], s.pcr_folds, 0).loc[sid[tr]].to_numpy(),
                BaselineConfig(n_folds=s.pcr_folds, components=tuple(s.pcr_components), ridge_alphas=tuple(s.pcr_alphas)))
        res['sites'][site] = dict(train_images=len(tr), val_images=len(va), epochs_run=fit.epochs_run, best_epoch=fit.best_epoch,
                                  val_mae=round(fit.val_mae, 3), train_seconds=round(fit.seconds, 2),
                                  images_per_second=round(len(tr) * max(fit.epochs_run, 1) / fit.seconds, 1),
                                  pcr_seconds=round(time.perf_counter() - t0, 2), peak_rss_mb=round(_rss_mb(), 1),
                                  rss_growth_mb=round(_rss_mb() - rss0, 1))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / 'msk_sites.json').write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
