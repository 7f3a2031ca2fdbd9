"""Whole-body MRI (seed 003): training throughput (volumes per second: forward + backward + Adam step) and peak memory
of the 3D ResNet-18 and the 2.5D network at the quick grid (and, with BENCH_WB_FULL=1 or on a GPU, at the paper's
224 x 168 x 363 grid), the PCA + ridge fit, and registration seconds per subject (SimpleITK affine + demons).
Writes reports/bench/wholebody.json."""
import json, os, resource, sys, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'bench'
THREADS = int(os.environ.get('BENCH_THREADS', '2'))
torch.set_num_threads(THREADS)


def peak_rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(net, shape, batch, accumulate, steps, device, amp=False):
    "Volumes per second of optimiser steps of `accumulate` mini-batches of `batch` random volumes (first step excluded)."
    net = net.to(device).train(); opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(batch, *shape, device=device); y = torch.full((batch,), 60.0, device=device)
    if device == 'cuda': torch.cuda.reset_peak_memory_stats()
    n, t = 0, None
    for s in range(steps + 1):
        if s == 1:
            if device == 'cuda': torch.cuda.synchronize()
            t = time.perf_counter()
        opt.zero_grad()
        for _ in range(accumulate):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                loss = (net(x) - y).abs().mean() / accumulate
            loss.backward()
            if s >= 1: n += batch
        opt.step()
    if device == 'cuda': torch.cuda.synchronize()
    r = {'volumes_per_s': round(n / (time.perf_counter() - t), 2), 'batch': batch, 'accumulate': accumulate,
         'parameters': sum(p.numel() for p in net.parameters())}
    if device == 'cuda': r['peak_gpu_mb'] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return r


def main():
    from organage.model.wholebody import wholebody_settings, resnet18_3d, vgg_2d, projections_25d
    from organage.data.wholebody import write_toy_cohort, simulate_wholebody_files, read_wholebody, wholebody_affine
    from organage.model.wholebody import wholebody_volumes
    from organage.model.baselines import fit_pcr, subject_folds
    from organage.explain.atlas import register_volume, RegistrationSettings
    from organage.core import write_json
    q = wholebody_settings('quick'); f = wholebody_settings('full')
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    res = {'threads': THREADS, 'device': dev, 'quick': {}, 'full': {}}
    res['quick']['resnet18_3d'] = throughput(resnet18_3d(q.widen, q.hidden), (1, *q.shape), q.batch_size, q.accumulate, 3, 'cpu')
    p = projections_25d(np.zeros((1, 1, *q.shape), np.float32)).shape[1:]
    res['quick']['cnn_25d'] = throughput(vgg_2d(2, q.vgg, 32), p, q.batch_size_2d, 1, 5, 'cpu')
    res['quick']['peak_rss_mb'] = round(peak_rss_mb(), 1)
    with tempfile.TemporaryDirectory() as d:
        wb = simulate_wholebody_files(write_toy_cohort(Path(d) / 'c', 600, 0), 0, q.shape, 160)
        a = read_wholebody(wb); x = wholebody_volumes(a, q.shape); age = a.obs.age.to_numpy()
        t = time.perf_counter(); fit_pcr(x[:120], age[:120], subject_folds(a.obs.subject_id[:120].to_numpy(), 5, 0))
        res['quick']['pcr_fit_seconds'] = round(time.perf_counter() - t, 2)
        aff = wholebody_affine(q.shape); secs = []
        for i in range(1, 11): secs.append(register_volume(x[0, 0], x[i, 0], aff, RegistrationSettings(affine_iterations=q.reg_affine_iterations, shrink=q.reg_shrink, smooth=(0.0,), demons_iterations=q.demons_iterations))[1])
        res['quick']['registration_seconds_per_subject'] = round(float(np.mean(secs)), 3)
    if dev == 'cuda' or os.environ.get('BENCH_WB_FULL') == '1':
        # the paper's grid and network: batch 2, 32 mini-batches accumulated per step (seed 003), bf16 on a GPU
        res['full']['resnet18_3d'] = throughput(resnet18_3d(f.widen, f.hidden), (1, *f.shape), f.batch_size, 2 if dev == 'cpu' else 8,
                                                1 if dev == 'cpu' else 3, dev, amp=dev == 'cuda')
        res['full']['resnet18_3d']['epoch_minutes_1536_volumes'] = round(1536 / res['full']['resnet18_3d']['volumes_per_s'] / 60, 2)
        pf = projections_25d(np.zeros((1, 1, *f.shape), np.float32)).shape[1:]
        res['full']['cnn_25d'] = throughput(vgg_2d(2, f.vgg, 256), pf, 8 if dev == 'cpu' else f.batch_size_2d, 1, 2, dev, amp=dev == 'cuda')
    res['peak_rss_mb'] = round(peak_rss_mb(), 1)
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(res, OUT / 'wholebody.json')
    print(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
