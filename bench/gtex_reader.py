"""Peak memory and time of the streaming GTEx GCT reader (`organage.data.gtex.read_gct`).

Memory: generates a GCT 1.2 counts file of 5,000 samples x 20,000 genes once (in a temporary folder), then reads
selections of it in fresh subprocesses and measures each child's peak RSS (getrusage ru_maxrss) against its RSS right
before reading (after imports). Target: peak RSS added by reading < 2x the selected matrix's in-memory size (float32).

Speed (`speed` in the JSON): the whole file read, side by side, by read_gct with its pyarrow number parser (the
default), by read_gct with numpy's loadtxt (`engine='numpy'`, the reader before issue 17) and by a plain
`pandas.read_csv(sep='\t', skiprows=2, index_col=0)`, each in a fresh subprocess, `--repeats` times (median
reported): seconds of the read call, seconds of the whole child process, whole-process peak RSS. Files:
`--speed-sizes` (default the 2,000 x 20,000 file of about 100 MB, and the 5,000 x 20,000 file of the memory cases).
The load average (os.getloadavg) is recorded before and after each file, since CPU may be shared.
Writes reports/bench/gtex_reader.json and reports/bench/gtex_reader.png.

Usage: python bench/gtex_reader.py [--samples 5000] [--genes 20000] [--speed-sizes 2000x20000,5000x20000]
                                   [--repeats 3] [--keep DIR]
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'reports'/'bench'

CHILD = r'''
import json, resource, sys, time, gc
from pathlib import Path
import psutil
from organage.data.gtex import read_gct, read_gct_header
import anndata, pandas  # imported before the baseline is taken
try: import pyarrow.csv  # the default number parser, imported lazily by the reader
except ImportError: pass
path, n_s, n_g, chunksize, engine = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
h = read_gct_header(path)
samples = None if n_s >= h.n_samples else h.samples[::h.n_samples // n_s][:n_s]
import gzip
with (gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')) as f:
    for _ in range(3): f.readline()
    names = [next(f).split(b'\t', 1)[0].decode() for _ in range(h.n_genes)] if n_g < h.n_genes else None
genes = None if names is None else names[::len(names) // n_g][:n_g]
gc.collect()
base = psutil.Process().memory_info().rss
peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
if len(sys.argv) > 6:  # read_gtex on the folder, organs given
    from organage.data.gtex import read_gtex
    a = read_gtex(Path(path).parent, organs=sys.argv[6].split(','), genes=genes, engine=engine)
else: a = read_gct(path, samples=samples, genes=genes, chunksize=None if chunksize == 'auto' else int(chunksize), engine=engine)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(shape=list(a.shape), matrix_bytes=int(a.X.nbytes), dtype=str(a.X.dtype),
                      rss_before=base, peak_rss=peak, peak_before_read=peak0, seconds=dt,
                      x_f_contiguous=bool(a.X.flags.f_contiguous))))
'''


# whole-file read, one reader per fresh process: peak RSS of the whole process, seconds of the read and of the process
SPEED_CHILD = r'''
import json, resource, sys, time
t_start = time.perf_counter()
path, reader = sys.argv[1], sys.argv[2]
import numpy, pandas, anndata
from organage.data.gtex import read_gct
t0 = time.perf_counter()
if reader == 'pandas':
    df = pandas.read_csv(path, sep='\t', skiprows=2, index_col=0)
    shape, dtype = [df.shape[1] - 1, df.shape[0]], str(df.dtypes.iloc[-1])
else:
    a = read_gct(path, engine=reader.split(':')[1])
    shape, dtype = list(a.shape), str(a.X.dtype)
dt = time.perf_counter() - t0
print(json.dumps(dict(reader=reader, shape=shape, dtype=dtype, seconds=dt, import_seconds=t0 - t_start,
                      peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
'''
SPEED_READERS = {'read_gct:pyarrow': 'read_gct, pyarrow parser (default)', 'read_gct:numpy': "read_gct, engine='numpy' (loadtxt, the old reader)",
                 'pandas': "pandas.read_csv(sep='\\t', skiprows=2, index_col=0)"}


def measure_speed(path: Path, repeats: int = 3) -> dict:
    "Median of `repeats` fresh processes per reader, the readers interleaved so that load changes hit all of them alike."
    env = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}
    runs = {r: [] for r in SPEED_READERS}
    load_before = os.getloadavg()
    for _ in range(repeats):
        for r in SPEED_READERS:
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, '-c', SPEED_CHILD, str(path), r], capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            if p.returncode: raise RuntimeError(p.stderr)
            d = json.loads(p.stdout.strip().splitlines()[-1]); d['process_seconds'] = wall
            runs[r].append(d)
    med = lambda xs: float(np.median(xs))
    out = {}
    for r, ds in runs.items():
        out[r] = dict(label=SPEED_READERS[r], shape=ds[0]['shape'], dtype=ds[0]['dtype'],
                      seconds=med([d['seconds'] for d in ds]), seconds_all=[round(d['seconds'], 3) for d in ds],
                      process_seconds=med([d['process_seconds'] for d in ds]),
                      peak_rss_mib=med([d['peak_rss'] for d in ds]) / 2**20,
                      peak_rss_mib_all=[round(d['peak_rss'] / 2**20, 1) for d in ds])
    f, o, pd_ = out['read_gct:pyarrow'], out['read_gct:numpy'], out['pandas']
    return dict(file=str(path.name), bytes=path.stat().st_size, repeats=repeats, readers=out,
                speedup_vs_pandas=pd_['seconds'] / f['seconds'], speedup_vs_old_reader=o['seconds'] / f['seconds'],
                memory_vs_pandas=f['peak_rss_mib'] / pd_['peak_rss_mib'], memory_vs_old_reader=f['peak_rss_mib'] / o['peak_rss_mib'],
                at_least_pandas_speed=bool(f['seconds'] <= pd_['seconds']),
                loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()))


def write_gct(path: Path, n_samples: int, n_genes: int, seed: int = 0, distinct: int = 1000):
    """GTEx-like counts: negative-binomial per gene (~40% zeros). `distinct` value rows are simulated and formatted
    once, then reused under new gene ids: the reader's cost depends on the text, not on which numbers it holds, and
    this keeps generation to seconds on a loaded 2-core machine."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    samples = [f'GTEX-{i // 8:05X}-{i % 8:04d}-SM-{i:05d}' for i in range(n_samples)]
    k = min(distinct, n_genes)
    mean = np.exp(rng.normal(2.0, 2.0, size=(k, 1)))
    x = rng.negative_binomial(2, 2 / (2 + mean), size=(k, n_samples)).astype(np.int32)
    body = pd.DataFrame(x).to_csv(sep='\t', header=False, index=False, lineterminator='\n').splitlines()
    with open(path, 'w') as f:
        f.write('#1.2\n'); f.write(f'{n_genes}\t{n_samples}\n')
        f.write('Name\tDescription\t' + '\t'.join(samples) + '\n')
        for g in range(n_genes): f.write(f'ENSG{g:011d}.{1 + g % 9}\tGENE{g}\t{body[g % k]}\n')
    return path


def write_annotations(folder: Path, n_samples: int, seed: int = 0):
    "GTEx annotation files for the generated samples: 8 samples per donor, tissues drawn from all 54."
    import pandas as pd
    from organage.data.gtex import TISSUE_ORGANS
    rng = np.random.default_rng(seed)
    samples = [f'GTEX-{i // 8:05X}-{i % 8:04d}-SM-{i:05d}' for i in range(n_samples)]
    smtsd = TISSUE_ORGANS.SMTSD[~TISSUE_ORGANS.SMTSD.isin(['Cells - Transformed fibroblasts', 'Cells - Leukemia cell line (CML)'])]
    pd.DataFrame({'SAMPID': samples, 'SMTS': 'x', 'SMTSD': rng.choice(smtsd.to_numpy(), n_samples),
                  'SMGEBTCH': [f'LCSET-{i % 40}' for i in range(n_samples)]}).to_csv(
        folder/'GTEx_bench_Annotations_SampleAttributesDS.txt', sep='\t', index=False)
    donors = sorted({'-'.join(s.split('-')[:2]) for s in samples})
    pd.DataFrame({'SUBJID': donors, 'SEX': rng.integers(1, 3, len(donors)),
                  'AGE': rng.choice(['20-29', '30-39', '40-49', '50-59', '60-69', '70-79'], len(donors)), 'DTHHRDY': 2}).to_csv(
        folder/'GTEx_bench_Annotations_SubjectPhenotypesDS.txt', sep='\t', index=False)


def measure(path: Path, n_s: int, n_g: int, chunksize='auto', organs: str | None = None, engine: str = 'auto') -> dict:
    env = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}
    r = subprocess.run([sys.executable, '-c', CHILD, str(path), str(n_s), str(n_g), str(chunksize), engine] + ([organs] if organs else []),
                       capture_output=True, text=True, env=env)
    if r.returncode: raise RuntimeError(r.stderr)
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d['added_rss'] = d['peak_rss'] - d['rss_before']
    d['ratio_added_to_matrix'] = d['added_rss'] / d['matrix_bytes']
    d['ratio_peak_to_matrix'] = d['peak_rss'] / d['matrix_bytes']
    d['selected'] = (f'read_gtex({organs}): ' if organs else '') + f'{d["shape"][0]} samples x {d["shape"][1]} genes'
    d['reader'] = 'read_gtex' if organs else 'read_gct'
    d['organs'] = organs
    d['chunksize'] = chunksize
    d['engine'] = engine
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--samples', type=int, default=5000)
    ap.add_argument('--genes', type=int, default=20000)
    ap.add_argument('--keep', help='folder to keep the generated GCT in (default: a temporary folder)')
    ap.add_argument('--speed-sizes', default='2000x20000,SxG', help="files for the speed comparison, SAMPLESxGENES, comma-separated "
                    "('SxG': the memory cases' file); '' skips it")
    ap.add_argument('--repeats', type=int, default=3, help='fresh processes per reader and file in the speed comparison (median)')
    a = ap.parse_args()
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix='organage-bench-'))
    tmp.mkdir(parents=True, exist_ok=True)
    gct = tmp/f'bench_{a.samples}x{a.genes}_gene_reads.gct'
    t0 = time.perf_counter()
    if not gct.exists(): write_gct(gct, a.samples, a.genes)
    gen_s = time.perf_counter() - t0
    S, G = a.samples, a.genes
    cases = [(1000, 5000), (S // 5, G), (S, G // 10), (S, G)]
    rows = []
    sys.path.insert(0, str(ROOT))
    write_annotations(tmp, S)
    cases = [(n_s, n_g, None, gct) for n_s, n_g in cases] + [(S, G // 4, 'brain,lung,heart,liver,kidney,muscle', gct)]
    # GTEx ships .gct.gz: the same selection from a gzipped copy (level 1 to keep the bench short)
    import gzip as _gz
    gz = Path(tempfile.mkdtemp(prefix='organage-bench-gz-'))/(gct.name + '.gz')
    with open(gct, 'rb') as fi, _gz.open(gz, 'wb', compresslevel=1) as fo: shutil.copyfileobj(fi, fo, 1 << 22)
    cases.append((1000, 5000, None, gz))
    for n_s, n_g, organs, path in cases:
        d = measure(path, n_s, n_g, organs=organs)
        d['gzipped'] = path.suffix == '.gz'
        rows.append(d)
        print(f'{d["selected"] + (" (.gz)" if d["gzipped"] else ""):>28}: matrix {d["matrix_bytes"] / 2**20:7.1f} MiB, added peak RSS '
              f'{d["added_rss"] / 2**20:7.1f} MiB ({d["ratio_added_to_matrix"]:.2f}x), {d["seconds"]:.1f} s', flush=True)
    speed = []
    for size in [x for x in a.speed_sizes.split(',') if x]:
        if size == 'SxG': path = gct
        else:
            n_s, n_g = map(int, size.lower().split('x'))
            sdir = tmp.parent/(tmp.name + '-speed')  # not under the memory cases' folder: read_gtex finds every GCT below it
            sdir.mkdir(exist_ok=True)
            path = sdir/f'bench_{n_s}x{n_g}_gene_reads.gct'
            if not path.exists(): write_gct(path, n_s, n_g)
        sp = measure_speed(path, a.repeats)
        sp['samples'], sp['genes'] = (S, G) if size == 'SxG' else (n_s, n_g)
        speed.append(sp)
        r = sp['readers']
        print(f"speed {sp['samples']} x {sp['genes']} ({sp['bytes'] / 1e6:.0f} MB), median of {a.repeats}, load {sp['loadavg_before'][0]:.1f}: "
              + '; '.join(f"{k} {v['seconds']:.2f} s, peak {v['peak_rss_mib']:.0f} MiB" for k, v in r.items()), flush=True)
    main_case = rows[0]
    res = dict(benchmark='gtex_reader', file=dict(samples=S, genes=G, bytes=gct.stat().st_size, generate_seconds=round(gen_s, 1)),
               target='peak RSS added by read_gct/read_gtex < 2x the selected float32 matrix',
               headline=dict(selected=main_case['selected'], matrix_mib=main_case['matrix_bytes'] / 2**20,
                             added_peak_mib=main_case['added_rss'] / 2**20, ratio=main_case['ratio_added_to_matrix'],
                             meets_target=bool(main_case['ratio_added_to_matrix'] < 2)),
               all_meet_target=bool(all(r['ratio_added_to_matrix'] < 2 for r in rows)),
               cases=rows, speed=speed,
               speed_headline=None if not speed else dict(
                   file=f"{speed[0]['samples']} samples x {speed[0]['genes']} genes ({speed[0]['bytes'] / 1e6:.0f} MB)",
                   **{k: dict(seconds=round(v['seconds'], 2), peak_rss_mib=round(v['peak_rss_mib'], 1)) for k, v in speed[0]['readers'].items()},
                   at_least_pandas_speed=speed[0]['at_least_pandas_speed'], loadavg=speed[0]['loadavg_before']),
               note='timings on a shared machine: see loadavg_before/after per speed file (os.getloadavg, 1/5/15 min)',
               loadavg_end=list(os.getloadavg()),
               python=sys.version.split()[0], platform=platform.platform(), cpus=os.cpu_count())
    OUT.mkdir(parents=True, exist_ok=True)
    from organage.core import write_json, save_figure
    write_json(res, OUT/'gtex_reader.json')
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    lab = [(f"read_gtex, {len(r['organs'].split(','))} organs\n" if r['reader'] == 'read_gtex' else 'read_gct\n')
           + f"{r['shape'][0]} samples\nx {r['shape'][1]} genes" + (' (.gz)' if r['gzipped'] else '') for r in rows]
    x = np.arange(len(rows))
    mat = np.array([r['matrix_bytes'] for r in rows]) / 2**20
    add = np.array([r['added_rss'] for r in rows]) / 2**20
    ax.bar(x - 0.2, mat, 0.4, label='selected matrix (float32)')
    ax.bar(x + 0.2, add, 0.4, label='peak RSS added by reading')
    ax.scatter(x, 2 * mat, marker='_', s=600, c='k', label='target: 2x matrix', zorder=3)
    for i, r in enumerate(rows): ax.text(x[i] + 0.2, add[i], f'{r["ratio_added_to_matrix"]:.2f}x\n{r["seconds"]:.0f}s', ha='center', va='bottom', fontsize=8)
    ax.set_xticks(x, lab, fontsize=8); ax.set_ylabel('MiB'); ax.set_yscale('log')
    ax.set_title(f'GCT reader memory, file {S} samples x {G} genes ({gct.stat().st_size / 2**30:.2f} GiB)', fontsize=10)
    ax.legend(fontsize=8, loc='upper left')
    save_figure(fig, OUT/'gtex_reader.png')
    shutil.rmtree(gz.parent)
    if not a.keep: shutil.rmtree(tmp); shutil.rmtree(tmp.parent/(tmp.name + '-speed'), ignore_errors=True)
    print(json.dumps(res['headline']))


if __name__ == '__main__': main()
