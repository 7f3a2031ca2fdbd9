"""Seed 002's T1w VGG8 against PCA + ridge on the same subjects, by network width and loss: every subject tested once
over K outer folds (`cross_fit_channels`), the paired MAE difference with its bootstrap interval (`channel_crossfit_table`).
Why: at the quick widths (4..64 channels) the T1w VGG8 loses to PCA + ridge; this bench shows what capacity and loss it
takes to win at the quick grid (24^3) and cohort size. Slow (about 30 minutes on one core for the six variants).
Environment: BENCH_DATA (a cohort folder with brain_channels/, default data/simulated/quick), BENCH_CHANNEL (T1w),
BENCH_VARIANTS (comma list of width:loss, widths quick|half|paper, default all six), BENCH_FOLDS (5), BENCH_THREADS (1). Runs only with BENCH_CAPACITY=1 (`make bench` skips it otherwise).
Writes reports/bench/vgg8_capacity.csv and .json."""
import json, os, time
from dataclasses import replace
from pathlib import Path
import tempfile

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'reports'/'bench'
WIDTHS = {'quick': ((4, 8, 16, 32, 64), (64, 32)), 'half': ((8, 16, 32, 64, 128), (128, 64)), 'paper': ((16, 32, 64, 128, 256), (512, 128))}

def main():
    if os.environ.get('BENCH_CAPACITY') != '1':
        print('vgg8_capacity: skipped (about 30 minutes; set BENCH_CAPACITY=1 to run it)'); return
    import torch, pandas as pd
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', '1')))
    from organage.core import write_csv, write_json
    from organage.data.brain_channels import read_brain_channels, load_channel_volumes, CHANNELS_DIR
    from organage.model.vgg8 import Seed002Settings, cross_fit_channels, channel_crossfit_table
    data = Path(os.environ.get('BENCH_DATA', ROOT/'data'/'simulated'/'quick'))
    ch, k = os.environ.get('BENCH_CHANNEL', 'T1w'), int(os.environ.get('BENCH_FOLDS', '5'))
    variants = os.environ.get('BENCH_VARIANTS', 'quick:mae,quick:mse,half:mae,half:mse,paper:mae,paper:mse').split(',')
    if not (data/CHANNELS_DIR/'channels.csv').is_file(): raise SystemExit(f"{data/CHANNELS_DIR}: no brain channels (run `organage simulate` first)")
    base = Seed002Settings.profile('quick', device='cpu')
    ad = read_brain_channels(data/CHANNELS_DIR)
    x, obs, _ = load_channel_volumes(ad, ch, size=base.size, fov_mm=base.fov_mm)
    rows = []
    for v in variants:
        w, loss = v.split(':')
        s = replace(base, widths=WIDTHS[w][0], hidden=WIDTHS[w][1], loss=loss)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            cf = cross_fit_channels({ch: x}, {ch: obs}, s, d, k=k)
        tab = channel_crossfit_table(cf).iloc[0].to_dict()
        fits = cf.fits[cf.fits.model == f'vgg8_{ch}']
        rows.append(dict(widths=w, loss=loss, **tab, mean_best_epoch=float(fits.best_epoch.mean()),
                         seconds_per_fit=float(fits.seconds.mean()), seconds=round(time.perf_counter() - t0, 1)))
        print(rows[-1], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    t = pd.DataFrame(rows)
    write_csv(t, OUT/'vgg8_capacity.csv')
    write_json(dict(data=str(data), channel=ch, folds=k, subjects=int(obs.subject_id.nunique()), rows=rows), OUT/'vgg8_capacity.json')

if __name__ == '__main__':
    main()
