"""Streaming radiographs through the on-disk pixel cache: peak memory must not grow with the number of images.

Writes N quick-size CheXpert radiographs directly (64x64 greyscale JPGs, what `organage simulate` writes with the quick
profile), then per N, each in a fresh subprocess so that ru_maxrss is that step's own peak:
  build  - `SubjectDataset(..., cache_dir=...)` over N images: the one decoding pass (loader + the run's MONAI chain)
           that writes the float16 pixel cache and finds unreadable files;
  epoch  - a second `SubjectDataset` over the same files (reads the cache's sidecar, decodes nothing), then one epoch of
           every subject through a DataLoader with num_workers 0 and 2, and (unless --no-train) one training epoch of
           the quick xray encoder (`OrganAgeModel` kind 'unimodal', AdamW) over every image with num_workers 2.
Records seconds, images per second and peak RSS (self; workers' peak separately), and the slope of peak RSS per
10,000 images (least squares over the sizes). With --contrast, also the old in-memory path (`cache_gb` large enough:
MONAI CacheDataset keeps every decoded image) for comparison.
Writes reports/bench/streaming.json and reports/bench/streaming.csv.

Usage: python bench/streaming.py [--sizes 2000 5000] [--scale] [--no-train] [--contrast] [--keep DIR]
       --scale = --sizes 10000 20000 50000
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'reports'/'bench'

CHILD = r'''
import json, os, resource, sys, time, warnings, logging
warnings.filterwarnings('ignore'); logging.getLogger('organage').setLevel(logging.ERROR)
a = json.loads(sys.argv[1])
import numpy as np, pandas as pd, anndata as ad, torch, psutil
torch.set_num_threads(a['threads'])
from torch.utils.data import DataLoader
from organage.data.datasets import SubjectDataset, collate_subjects
from organage.core import load_config
from organage.model.train import model_config_for
from organage.model.fusion import OrganAgeModel
os.environ['ORGANAGE_PROGRESS'] = 'off'
mb = lambda who=resource.RUSAGE_SELF: resource.getrusage(who).ru_maxrss / 1024
n = a['n']
paths = [os.path.join(a['folder'], f'{i // 1000:03d}', f'patient{i:06d}_view1_frontal.jpg') for i in range(n)]
rng = np.random.default_rng(0)
obs = pd.DataFrame({'subject_id': [f'patient{i:06d}' for i in range(n)], 'organ': 'lung', 'age': rng.uniform(18, 90, n).round(),
                    'sex': np.where(rng.uniform(size=n) < 0.55, 'male', 'female'), 'path': paths}, index=[str(i) for i in range(n)])
xr = ad.AnnData(np.zeros((n, 0), np.float32), obs=obs)
out = dict(n=n, phase=a['phase'], rss_after_imports_mb=psutil.Process().memory_info().rss / 2**20)
kw = dict(image_size=a['image_size'], loaders={'xray': 'organage.data.chexpert:load_radiograph'})
t = time.perf_counter()
if a['phase'] == 'memory': ds = SubjectDataset({'xray': xr}, ['lung'], cache_gb=1e6, **kw)
else: ds = SubjectDataset({'xray': xr}, ['lung'], cache_dir=a['cache'], **kw)
out['dataset_seconds'] = time.perf_counter() - t
out['built'] = bool(ds.pixel_caches['xray'].built) if ds.pixel_caches else None
out['dropped'] = len(ds.dropped)
out['peak_rss_after_dataset_mb'] = mb()
if a['phase'] == 'build':
    out['images_per_s'] = n / out['dataset_seconds']
    out['cache_file_mb'] = ds.pixel_caches['xray'].data_path.stat().st_size / 2**20
else:
    ds.set_pixel_stats(ds.fit_pixel_stats())   # as a run does: items are standardised when read
    out['epochs'] = {}
    for w in a['workers']:
        dl = DataLoader(ds, batch_size=64, shuffle=True, num_workers=w, collate_fn=collate_subjects, persistent_workers=False)
        t = time.perf_counter(); k = 0; s = 0.0
        for b in dl: k += len(b['xray_x']); s += float(b['xray_x'][:, 0, 0, 0].float().sum())
        dt = time.perf_counter() - t
        out['epochs'][f'read_w{w}'] = dict(images=k, seconds=dt, images_per_s=k / dt, peak_rss_mb=mb(), workers_peak_rss_mb=mb(resource.RUSAGE_CHILDREN))
    if a['train']:
        cfg = load_config('quick', overrides={'device': 'cpu'})
        mc = model_config_for(cfg, organs=['lung'], n_genes=0).model_copy(update={'kind': 'unimodal', 'modalities': ['xray']})
        model = OrganAgeModel(mc).train(); opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        w = max(a['workers'])
        dl = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=w, collate_fn=collate_subjects)
        t = time.perf_counter(); k = 0
        for b in dl:
            loss = model.loss(b)['loss']; opt.zero_grad(); loss.backward(); opt.step(); k += len(b['xray_x'])
        dt = time.perf_counter() - t
        out['epochs'][f'train_w{w}'] = dict(images=k, seconds=dt, images_per_s=k / dt, peak_rss_mb=mb(), workers_peak_rss_mb=mb(resource.RUSAGE_CHILDREN),
                                           final_loss=float(loss))
out['peak_rss_mb'] = mb(); out['workers_peak_rss_mb'] = mb(resource.RUSAGE_CHILDREN)
print(json.dumps(out))
'''


def write_radiographs(folder: Path, n: int, size: int = 64, distinct: int = 512, seed: int = 0) -> float:
    """n greyscale JPGs (quality 92, as `organage.data.synth` saves them) of `size` x `size`: `distinct` smooth chest-like
    images are encoded once and their bytes written under n names (decoding cost does not depend on which image it is)."""
    import io
    from PIL import Image
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    blobs = []
    for k in range(distinct):
        lung = np.exp(-((np.abs(xx) - 0.45 * rng.uniform(0.9, 1.1)) ** 2 / 0.06 + yy ** 2 / 0.5))
        im = np.clip(0.25 + 0.6 * lung + 0.08 * rng.normal(size=(size, size)), 0, 1)
        buf = io.BytesIO(); Image.fromarray((im * 255 + 0.5).astype(np.uint8), mode='L').save(buf, format='JPEG', quality=92)
        blobs.append(buf.getvalue())
    for i in range(n):
        p = folder/f'{i // 1000:03d}'/f'patient{i:06d}_view1_frontal.jpg'
        if i % 1000 == 0: p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists(): p.write_bytes(blobs[i % distinct])
    return time.perf_counter() - t


def child(args: dict, timeout: float = 1200) -> dict:
    env = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''), 'ORGANAGE_PROGRESS': 'off'}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, '-c', CHILD, json.dumps(args)], capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode: raise RuntimeError(r.stderr[-4000:])
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d['wall_seconds'] = time.perf_counter() - t
    d['loadavg_after'] = os.getloadavg()
    return d


def slope_per_10k(ns, mbs):
    "Least-squares slope of MB against images, per 10,000 images (None with fewer than two sizes)."
    if len(ns) < 2: return None
    return float(np.polyfit(np.asarray(ns, float) / 1e4, np.asarray(mbs, float), 1)[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', type=int, nargs='+', default=[2000, 5000])
    ap.add_argument('--scale', action='store_true', help='sizes 10,000, 20,000 and 50,000')
    ap.add_argument('--image-size', type=int, default=64, help='radiograph side (the quick profile: 64)')
    ap.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    ap.add_argument('--threads', type=int, default=int(os.environ.get('BENCH_THREADS', '2')))
    ap.add_argument('--no-train', action='store_true', help='skip the training epoch')
    ap.add_argument('--contrast', action='store_true', help='also the in-memory path (everything decoded and kept)')
    ap.add_argument('--keep', help='folder for the images and caches (default: a temporary folder, removed)')
    a = ap.parse_args()
    sizes = sorted([10000, 20000, 50000] if a.scale else a.sizes)
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix='organage-bench-stream-'))
    tmp.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    gen_s = write_radiographs(tmp/'img', max(sizes), a.image_size)
    print(f'wrote {max(sizes)} radiographs ({a.image_size}x{a.image_size} JPG) in {gen_s:.1f} s', flush=True)
    rows, detail = [], []
    for n in sizes:
        cache = tmp/f'cache_{n}'
        shutil.rmtree(cache, ignore_errors=True)
        base = dict(n=n, folder=str(tmp/'img'), cache=str(cache), image_size=a.image_size, threads=a.threads, workers=a.workers,
                    train=not a.no_train)
        b = child({**base, 'phase': 'build'})
        assert b['built'], 'the build child found a cache it should have written'
        e = child({**base, 'phase': 'epoch'})
        assert e['built'] is False, 'the epoch child decoded images instead of reading the cache'
        detail += [b, e]
        rows.append(dict(n=n, step='build', seconds=b['dataset_seconds'], images_per_s=b['images_per_s'], peak_rss_mb=b['peak_rss_mb'],
                         workers_peak_rss_mb=None, rss_after_imports_mb=b['rss_after_imports_mb'], loadavg_1min=b['loadavg_after'][0]))
        rows.append(dict(n=n, step='reopen', seconds=e['dataset_seconds'], images_per_s=n / e['dataset_seconds'],
                         peak_rss_mb=e['peak_rss_after_dataset_mb'], workers_peak_rss_mb=None, rss_after_imports_mb=e['rss_after_imports_mb'],
                         loadavg_1min=e['loadavg_after'][0]))
        for k, v in e['epochs'].items():
            rows.append(dict(n=n, step=k, seconds=v['seconds'], images_per_s=v['images_per_s'], peak_rss_mb=v['peak_rss_mb'],
                             workers_peak_rss_mb=v['workers_peak_rss_mb'], rss_after_imports_mb=e['rss_after_imports_mb'], loadavg_1min=e['loadavg_after'][0]))
        msg = ', '.join(f"{k} {v['images_per_s']:.0f} img/s" for k, v in e['epochs'].items())
        print(f"n={n}: build {b['dataset_seconds']:.1f} s ({b['images_per_s']:.0f} img/s, peak {b['peak_rss_mb']:.0f} MB); "
              f"epoch child peak {e['peak_rss_mb']:.0f} MB (workers {e['workers_peak_rss_mb']:.0f} MB); {msg}", flush=True)
        if a.contrast:
            m = child({**base, 'phase': 'memory', 'train': False})
            detail.append(m)
            rows.append(dict(n=n, step='memory_cache_build', seconds=m['dataset_seconds'], images_per_s=n / m['dataset_seconds'],
                             peak_rss_mb=m['peak_rss_after_dataset_mb'], workers_peak_rss_mb=None, rss_after_imports_mb=m['rss_after_imports_mb'],
                             loadavg_1min=m['loadavg_after'][0]))
            print(f"n={n}: in-memory cache (old path) peak {m['peak_rss_after_dataset_mb']:.0f} MB", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    import pandas as pd
    tab = pd.DataFrame(rows)
    slopes = {}
    for step, g in tab.groupby('step', sort=False):
        slopes[step] = dict(peak_rss_mb_per_10k=slope_per_10k(g.n, g.peak_rss_mb),
                            workers_peak_rss_mb_per_10k=slope_per_10k(g.n, g.workers_peak_rss_mb) if g.workers_peak_rss_mb.notna().all() else None)
    pixels_mb_per_10k = 1e4 * a.image_size ** 2 * 2 / 2**20
    worst = max((v['peak_rss_mb_per_10k'] for k, v in slopes.items() if k != 'memory_cache_build' and v['peak_rss_mb_per_10k'] is not None), default=None)
    res = dict(benchmark='streaming', sizes=sizes, image_size=a.image_size, image_format='JPG (quality 92), as organage simulate writes CheXpert',
               threads=a.threads, workers=a.workers, generate_seconds=round(gen_s, 1),
               target='peak RSS flat in the number of images (slope per 10k images far below the pixels of 10k images)',
               pixels_mb_per_10k_images=pixels_mb_per_10k, slopes=slopes, worst_slope_mb_per_10k=worst,
               flat=bool(worst is not None and worst < 0.25 * pixels_mb_per_10k),
               loadavg_start=load0, loadavg_end=os.getloadavg(),
               note='timings on a shared machine: see loadavg; peak RSS is ru_maxrss of a fresh child per step; workers_peak is the '
                    'largest DataLoader worker (RUSAGE_CHILDREN); the slope that remains is per-image metadata (obs table, index), not pixels',
               rows=rows, children=detail, python=sys.version.split()[0], platform=platform.platform(), cpus=os.cpu_count())
    OUT.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from organage.core import write_json, write_csv
    write_json(res, OUT/'streaming.json'); write_csv(tab, OUT/'streaming.csv')
    print(tab.to_string(index=False, float_format=lambda x: f'{x:.1f}'))
    print(json.dumps({k: v for k, v in res.items() if k in ('slopes', 'pixels_mb_per_10k_images', 'flat')}, indent=1))
    if not a.keep: shutil.rmtree(tmp)


if __name__ == '__main__': main()
