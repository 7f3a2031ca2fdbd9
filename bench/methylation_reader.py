"""Time and peak memory of the streaming methylation reader (`organage.data.methylation.read_beta_matrix`) against a
plain `pandas.read_csv`, on a 450k-sized beta matrix (485,512 probes x 100 samples) that this bench writes itself.

Each reader runs in a fresh subprocess; its peak RSS is `resource.getrusage(RUSAGE_SELF).ru_maxrss` at the end,
its baseline the RSS right before reading (after imports); CPU seconds (getrusage user + system) are given beside wall
seconds because the machine may be shared. The pandas case is what a user would write
(`pd.read_csv(path, index_col=0)`, float64), then `.to_numpy(np.float32)` so that both end with the same matrix.
Target: peak RSS added by read_beta_matrix < 2x the float32 matrix.
Writes reports/bench/methylation_reader.json.

Usage: python bench/methylation_reader.py [--probes 485512] [--samples 100] [--no-gzip] [--keep DIR]
"""
from __future__ import annotations
import argparse, gzip, json, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'reports'/'bench'

CHILD = r'''
import gc, json, resource, sys, time
import numpy as np, pandas as pd, anndata, psutil
from organage.data.methylation import read_beta_matrix
how, path, sheet = sys.argv[1:4]
gc.collect()
base = psutil.Process().memory_info().rss
t0 = time.perf_counter(); c0 = resource.getrusage(resource.RUSAGE_SELF)
if how == 'organage':
    a = read_beta_matrix(path, sheet); X = a.X; extra = dict(missing=int(a.uns['missing']['values']))
else:
    df = pd.read_csv(path, index_col=0); X = df.to_numpy(np.float32); extra = {}
dt = time.perf_counter() - t0; c1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(reader=how, shape=list(X.shape), matrix_bytes=int(X.nbytes), dtype=str(X.dtype), rss_before=base,
                      peak_rss=peak, seconds=dt, cpu_seconds=cpu, **extra)))
'''


def write_matrix(path: Path, n_probes: int, n_samples: int, seed: int = 0, distinct: int = 2000, gz: bool = False):
    """Betas from a bimodal mixture (like 450k data), 4 decimals, ~0.1% missing. `distinct` value rows are drawn and
    formatted once and reused under new probe ids: the reader's cost depends on the text, not on which numbers it
    holds, and this keeps writing to seconds on a loaded 2-core machine."""
    rng = np.random.default_rng(seed)
    mu = np.where(rng.uniform(size=(distinct, 1)) < 0.5, rng.normal(-2.5, 0.7, (distinct, 1)), rng.normal(2.0, 0.7, (distinct, 1)))
    b = np.round(1/(1 + np.exp(-(mu + rng.normal(0, 0.4, (distinct, n_samples))))), 4)
    txt = np.char.mod('%.4f', b)
    txt[rng.uniform(size=b.shape) < 1e-3] = 'NA'
    body = [','.join(r) for r in txt]
    samples = [f'GSM{1_000_000 + i}' for i in range(n_samples)]
    op = (lambda p: gzip.open(p, 'wt', compresslevel=1)) if gz else (lambda p: open(p, 'w'))
    with op(path) as f:
        f.write('probe_id,' + ','.join(samples) + '\n')
        for i in range(n_probes): f.write(f'cg{i:08d},{body[i % distinct]}\n')
    return samples


def measure(how: str, path: Path, sheet: Path) -> dict:
    env = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}
    r = subprocess.run([sys.executable, '-c', CHILD, how, str(path), str(sheet)], capture_output=True, text=True, env=env)
    if r.returncode: raise RuntimeError(r.stderr)
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d['added_rss'] = d['peak_rss'] - d['rss_before']
    d['ratio_added_to_matrix'] = d['added_rss'] / d['matrix_bytes']
    d['file'] = path.name
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--probes', type=int, default=485_512)
    ap.add_argument('--samples', type=int, default=100)
    ap.add_argument('--no-gzip', action='store_true', help='skip the gzipped copy')
    ap.add_argument('--keep', help='folder to keep the generated files in (default: a temporary folder)')
    a = ap.parse_args()
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix='organage-bench-meth-'))
    tmp.mkdir(parents=True, exist_ok=True)
    plain = tmp/f'betas_{a.probes}x{a.samples}.csv'
    t0 = time.perf_counter()
    samples = write_matrix(plain, a.probes, a.samples)
    gen_s = time.perf_counter() - t0
    sheet = tmp/'sample_sheet.csv'
    sheet.write_text('sample_id,subject_id,tissue,age,sex\n' + ''.join(f'{s},P{i},whole blood,{20 + i % 60},{"male" if i % 2 else "female"}\n'
                                                                      for i, s in enumerate(samples)))
    files = [plain]
    if not a.no_gzip:
        gz = tmp/(plain.name + '.gz')
        with open(plain, 'rb') as fi, gzip.open(gz, 'wb', compresslevel=1) as fo: shutil.copyfileobj(fi, fo, 1 << 22)
        files.append(gz)
    rows = []
    for p in files:
        for how in ('organage', 'pandas'):
            d = measure(how, p, sheet); rows.append(d)
            print(f'{p.name:>32} {how:>9}: {d["seconds"]:6.1f} s ({d["cpu_seconds"]:.1f} s CPU), matrix {d["matrix_bytes"] / 2**20:6.1f} MiB, added peak RSS '
                  f'{d["added_rss"] / 2**20:7.1f} MiB ({d["ratio_added_to_matrix"]:.2f}x)', flush=True)
    org, pdr = rows[0], rows[1]
    res = dict(benchmark='methylation_reader',
               file=dict(probes=a.probes, samples=a.samples, bytes=plain.stat().st_size, gz_bytes=files[-1].stat().st_size if len(files) > 1 else None,
                         generate_seconds=round(gen_s, 1)),
               target='peak RSS added by read_beta_matrix < 2x the float32 matrix',
               headline=dict(matrix_mib=org['matrix_bytes'] / 2**20, organage_seconds=org['seconds'], pandas_seconds=pdr['seconds'],
                             organage_cpu_seconds=org['cpu_seconds'], pandas_cpu_seconds=pdr['cpu_seconds'],
                             organage_added_peak_mib=org['added_rss'] / 2**20, pandas_added_peak_mib=pdr['added_rss'] / 2**20,
                             organage_ratio=org['ratio_added_to_matrix'], pandas_ratio=pdr['ratio_added_to_matrix'],
                             meets_target=bool(org['ratio_added_to_matrix'] < 2)),
               cases=rows, python=sys.version.split()[0], platform=platform.platform(), cpus=os.cpu_count())
    sys.path.insert(0, str(ROOT))
    from organage.core import write_json
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(res, OUT/'methylation_reader.json')
    if not a.keep: shutil.rmtree(tmp)
    print(json.dumps(res['headline']))


if __name__ == '__main__': main()
