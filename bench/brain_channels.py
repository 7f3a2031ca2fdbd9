"""Seed 002's models: training throughput (volumes/s: forward, backward, Adam step) and peak memory of the per-channel
3D VGG8 and of the T1w -> CBV U-Net, at the quick grid and at larger ones (BENCH_SIZES, default 24,48), with the
quick and the paper's widths. Each configuration runs in a child process so its peak RSS (resource.getrusage) is its
own. Writes reports/bench/brain_channels.json."""
import json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'reports'/'bench'
THREADS = int(os.environ.get('BENCH_THREADS', '2'))
SIZES = [int(s) for s in os.environ.get('BENCH_SIZES', '24,48').split(',')]

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[1])); torch.manual_seed(0)
from organage.model.vgg8 import VGG8, Seed002Settings, synthesis_unet, MeanPlusUNet
kind, size, widths, batch = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
s = Seed002Settings.profile(widths, size=size)
if kind == 'vgg8': net = VGG8(1, size, s.widths, s.hidden, bn_momentum=s.bn_momentum)
else: net = MeanPlusUNet(synthesis_unet(s, s.unet_channels[0]), torch.zeros(1, size, size, size), s.unet_channels[0])
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
x, y = torch.randn(batch, 1, size, size, size), torch.rand(batch)*60 + 20
target = torch.rand(batch, 1, size, size, size)
def step():
    out = net(x); loss = (out - y).abs().mean() if kind == 'vgg8' else (out - target).abs().mean()
    opt.zero_grad(); loss.backward(); opt.step()
step()   # warm-up (allocations, kernels)
n, t = 0, time.perf_counter()
while time.perf_counter() - t < 3 or n < 3: step(); n += 1
sec = time.perf_counter() - t
print(json.dumps(dict(model=kind, size=size, widths=widths, batch=batch, parameters=sum(p.numel() for p in net.parameters()),
                      volumes_per_s=round(n*batch/sec, 2), seconds_per_step=round(sec/n, 4),
                      peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024, 1))))
"""

def main():
    rows = []
    for size in SIZES:
        for kind, widths, batch in (('vgg8', 'quick', 8), ('vgg8', 'full', 3), ('unet', 'quick', 8)):
            p = subprocess.run([sys.executable, '-c', CHILD, str(THREADS), kind, str(size), widths, str(batch)],
                               capture_output=True, text=True, cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)})
            if p.returncode: raise RuntimeError(p.stderr[-2000:])
            rows.append(json.loads(p.stdout.strip().splitlines()[-1])); print(rows[-1], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    from organage.core import write_json
    write_json(dict(threads=THREADS, note='train steps on random volumes; widths quick = (4..64), full = the paper\'s (16..256)', rows=rows),
               OUT/'brain_channels.json')

if __name__ == '__main__':
    main()
