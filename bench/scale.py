"""The cost curve of the main job (issue 17): wall time and peak memory of each step at several cohort sizes, with the
growth exponent of each step (slope of log cost against log subjects) and a flag on any step that grows faster than
linearly (exponent > 1.15).

Steps, each in a fresh child process (peak memory = the child's ru_maxrss, its own workers included), quick profile
sizes (64 px radiographs, 32^3 volumes, 2,000 genes), CPU:
  simulate        `organage simulate OUT --subjects N` (every imaging system, as the CLI writes it)
  load            `organage.data.cohort.read_cohort` (what `organage train` reads first)
  preprocess      `organage.data.prepare.CohortData` on the read cohort: split, RNA log-CPM + ComBat + gene selection
                  + z-scores (fitted on training subjects), datasets, pixel statistics (timed by section)
  train_<stage>   `organage train --stages <stage> --set epochs=1 --no-export`, one child per curriculum stage (unimodal
                  covers one encoder per modality; naive and aligned warm-start from it; baselines are the tabular
                  models). Seconds are the stage's own (the child's prepare time is subtracted and reported apart).
  export          `organage export` (validation predictions, calibration and the model card)
  evaluate        `organage evaluate` (validation and test predictions of every stage)
  predict         `organage predict` on every subject of the cohort with the portable model
  stats           calibration (bias, conformal intervals, z-scores), Table 3 (gap Wilcoxon + bootstrap MAE CI),
                  bootstrap by organ and pairwise MAE, as nbs/paper/03_calibration.ipynb calls them (quick: 1,000 resamples)

Sizes: default 600 and 1,200 subjects (`make bench` stays short); `--scale` runs 1,200, 6,000 and 30,000;
`--sizes 1200 6000 12000` chooses. BENCH_THREADS (default 2) torch threads per child.
`--reuse DIR --steps export evaluate predict stats --keep` re-measures some steps of a size on files kept from an earlier
`--reuse DIR` run (its cohort and trained run), merging them into scale.json beside the steps not re-measured.
Writes reports/bench/scale.json, scale.csv and scale.png. The JSON's `extrapolation_195766` is an extrapolation
(labelled so, with its assumptions) of a 195,766-sample run from the measured curve."""
import argparse, contextlib, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'bench'
THREADS = int(os.environ.get('BENCH_THREADS', '2'))
FLAG = 1.15
STAGES = ('unimodal', 'naive', 'aligned', 'baselines')
STEP_NAMES = ('simulate', 'load', 'preprocess', *(f'train_{s}' for s in STAGES), 'export', 'evaluate', 'predict', 'stats')
# Seed 000's cohort (issue 17): what the extrapolation is for
PAPER = {'xray': 187_825, 'rna': 7_378, 'mri': 563}

# Every child runs this prelude, then its step's code (which fills R), then reports R as the last stdout line.
PRELUDE = r'''
import json, os, sys, time, resource, warnings, logging
warnings.filterwarnings('ignore')
for n in ('lightning', 'lightning.pytorch', 'lightning.fabric', 'organage'): logging.getLogger(n).setLevel(logging.ERROR)
import torch; torch.set_num_threads(%d)
A = json.loads(sys.argv[1]); R = {}
def _rss_mb():
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
''' % THREADS
EPILOGUE = r'''
R['peak_rss_mb'] = round(_rss_mb(), 1)
print('@@RESULT ' + json.dumps(R))
'''

STARTUP = r'''
import organage.cli, organage.model.train, organage.model.portable, organage.evaluate.tables, organage.data.synth
R['seconds'] = 0.0
'''

SIMULATE = r'''
from organage.cli import main
import organage.data.synth
t = time.perf_counter()
rc = main(['simulate', A['cohort'], '--subjects', str(A['n']), '--profile', A.get('profile', 'quick'), '--seed', '0'])
R['seconds'] = time.perf_counter() - t
if rc: raise SystemExit(rc)
'''

LOAD = r'''
from organage.data.cohort import read_cohort
t = time.perf_counter(); ads = read_cohort(A['cohort']); R['seconds'] = time.perf_counter() - t
R['observations'] = {m: int(a.n_obs) for m, a in ads.items()}
R['subjects'] = len({s for a in ads.values() for s in a.obs.subject_id.astype(str)})
R['paired_subjects'] = len(set.intersection(*[set(a.obs.subject_id.astype(str)) for a in ads.values()]))
'''

# CohortData's sections are timed by wrapping the functions it calls (no copy of its logic here)
PREPROCESS = r'''
from organage.core import load_config, train_config_for
from organage.data.cohort import read_cohort
import organage.data.prepare as P, organage.data.preprocess as PP
S = {}
def timed(owner, name, key):
    f = getattr(owner, name)
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); S[key] = S.get(key, 0) + time.perf_counter() - t; return r
    setattr(owner, name, g)
timed(P, 'split_table', 'split'); timed(P, 'fit_rna_preprocessor', 'rna_fit')
timed(PP.ExpressionPreprocessor, 'transform', 'rna_transform')
timed(P.SubjectDataset, '__init__', 'datasets'); timed(P.SubjectDataset, 'fit_pixel_stats', 'pixel_stats')
t = time.perf_counter(); ads = read_cohort(A['cohort']); R['load_seconds'] = time.perf_counter() - t
cfg = load_config('quick', overrides={'device': 'cpu', 'seed': 0})
t = time.perf_counter(); data = P.CohortData(ads, cfg, train_config_for(cfg), A['run']); R['seconds'] = time.perf_counter() - t
R['sections'] = {k: round(v, 3) for k, v in S.items()}
R['n_genes'] = data.n_genes
'''

TRAIN = r'''
from organage.cli import main
import organage.model.train as T
_C = T.CohortData
class _Timed(_C):
    def __init__(s, *a, **k):
        t = time.perf_counter(); super().__init__(*a, **k); R['prepare_seconds'] = time.perf_counter() - t
T.CohortData = _Timed
t = time.perf_counter()
sets = [x for kv in A.get('sets', ['epochs=1']) for x in ('--set', kv)]
rc = main(['train', '--profile', A.get('profile', 'quick'), '--device', A.get('device', 'cpu'), '--seed', '0', *sets,
           '--data', A['cohort'], '--run', A['run'], '--stages', A['stage'], '--no-export'])
R['wall_seconds'] = time.perf_counter() - t
if rc: raise SystemExit(rc)
R['seconds'] = R['wall_seconds'] - R['prepare_seconds']
from pathlib import Path
R['stages'] = {}
for d in sorted(Path(A['run']).iterdir()):
    f = d / 'done.json'
    if d.name.split('_')[0] == A['stage'] and f.exists():
        j = json.loads(f.read_text()); R['stages'][d.name] = {k: j.get(k) for k in ('train_seconds', 'n_train', 'n_val', 'epochs_run', 'best_val_mae')}
if torch.cuda.is_available(): R['cuda_max_memory_allocated_mb'] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
'''

CLI = r'''
from organage.cli import main
import organage.model.portable, organage.evaluate.tables
t = time.perf_counter(); rc = main(A['argv']); R['seconds'] = time.perf_counter() - t
if rc: raise SystemExit(rc)
if torch.cuda.is_available(): R['cuda_max_memory_allocated_mb'] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
'''

STATS = r'''
import pandas as pd
from organage.evaluate.predictions import read_predictions
from organage.evaluate.calibration import calibrate
from organage.evaluate.stats import organ_table, bootstrap_by_organ, pairwise_mae, wilcoxon_by_organ
S = {}
def sec(key, f, *a, **k):
    t = time.perf_counter(); r = f(*a, **k); S[key] = round(time.perf_counter() - t, 3); return r
T0 = time.perf_counter()
preds = sec('read', read_predictions, A['run'])
res = sec('calibrate', calibrate, preds, bias='residual', intervals='conformal')
test = res.predictions.query("split == 'test'")
sec('wilcoxon', wilcoxon_by_organ, test, split=None)
sec('organ_table', organ_table, test, split=None, n_resamples=1000, seed=0)
sec('bootstrap_by_organ', bootstrap_by_organ, test, split=None, n_resamples=1000, seed=0)
sec('pairwise_mae', pairwise_mae, test, split=None, n_resamples=1000, seed=0)
R['seconds'] = time.perf_counter() - T0
R['sections'] = S; R['rows'] = len(preds); R['test_rows'] = len(test)
'''


def child(code, args, timeout=1800) -> dict:
    "Run one step in a fresh interpreter; returns its result dict (seconds, peak_rss_mb, ...) plus the child's wall."
    env = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''),
           'OMP_NUM_THREADS': str(THREADS), 'MKL_NUM_THREADS': str(THREADS), 'NUMBA_NUM_THREADS': str(THREADS)}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, '-c', PRELUDE + code + EPILOGUE, json.dumps(args)], capture_output=True, text=True,
                       env=env, timeout=timeout, cwd=ROOT)
    wall = time.perf_counter() - t
    lines = [l for l in p.stdout.splitlines() if l.startswith('@@RESULT ')]
    if p.returncode or not lines:
        raise RuntimeError(f"step failed (rc {p.returncode}) with {args}:\n{p.stderr[-3000:]}")
    r = json.loads(lines[-1][len('@@RESULT '):]); r['child_wall_seconds'] = round(wall, 2)
    return r


def measure(n: int, work: Path, log=print, timeout: int = 3600, steps=None, keep_files: bool = False) -> dict:
    """Every step at `n` subjects (or only those in `steps`); returns {step: result}. A step that fails or runs past `timeout`
    seconds is recorded as failed (NaN). The cohort, run, model and predictions live in `work` as cohort_N, run_N, model_N and
    pred_N, removed at the end unless `keep_files` (then a later call with `steps` reuses them)."""
    cohort, run, model, pred = work / f'cohort_{n}', work / f'run_{n}', work / f'model_{n}', work / f'pred_{n}'
    out = {}
    def step(name, code, **args):
        if steps is not None and name not in steps: return
        la = os.getloadavg()
        try: r = child(code, {'n': n, 'cohort': str(cohort), 'run': str(run), **args}, timeout=timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as e:   # recorded, and the other steps still run
            why = f'timed out after {timeout} s' if isinstance(e, subprocess.TimeoutExpired) else str(e).splitlines()[0]
            out[name] = dict(seconds=float('nan'), peak_rss_mb=float('nan'), child_wall_seconds=float('nan'), failed=why,
                             load_average_before=[round(x, 2) for x in la])
            log(f"  {n:>6} {name:<16} FAILED: {why}"); return
        r['load_average_before'] = [round(x, 2) for x in la]
        out[name] = r
        log(f"  {n:>6} {name:<16} {r['seconds']:8.1f} s  {r['peak_rss_mb']:8.0f} MB  (child wall {r['child_wall_seconds']:.1f} s, load {la[0]:.1f})")
    step('simulate', SIMULATE)
    step('load', LOAD)
    step('preprocess', PREPROCESS, run=str(work / f'prep_{n}'))
    for s in STAGES: step(f'train_{s}', TRAIN, stage=s)
    step('export', CLI, argv=['export', '--run', str(run), '--out', str(model), '--data', str(cohort), '--device', 'cpu'])
    step('evaluate', CLI, argv=['evaluate', '--run', str(run), '--data', str(cohort), '--device', 'cpu'])
    step('predict', CLI, argv=['predict', '--model', str(model), '--data', str(cohort), '--out', str(pred), '--device', 'cpu'])
    step('stats', STATS)
    if not keep_files:
        for p in (cohort, run, model, pred, work / f'prep_{n}'): shutil.rmtree(p, ignore_errors=True)
    return out


def slope(x, y):
    "Least-squares slope of log y on log x (numpy polyfit); None with fewer than two positive points."
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0)
    return round(float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]), 3) if ok.sum() >= 2 else None


def fit(results: dict, base_mb: float) -> dict:
    "Growth exponent of each step's seconds, peak memory, and peak memory above the interpreter baseline."
    sizes = sorted(results)
    steps = list(results[sizes[0]])
    out = {}
    for s in steps:
        sec = [results[n][s]['seconds'] for n in sizes]; mb = [results[n][s]['peak_rss_mb'] for n in sizes]
        e_t, e_m, e_d = slope(sizes, sec), slope(sizes, mb), slope(sizes, [m - base_mb for m in mb])
        out[s] = {'time_exponent': e_t, 'memory_exponent': e_m, 'memory_above_baseline_exponent': e_d,
                  'superlinear_time': bool(e_t is not None and e_t > FLAG),
                  'superlinear_memory': bool(e_d is not None and e_d > FLAG)}
    return out


def extrapolate(results: dict, exps: dict, gpu: dict | None) -> dict:
    "A 195,766-sample run (seed 000's cohort) from the measured curve: an extrapolation, with its assumptions."
    n = max(results); r = results[n]
    obs = r['load']['observations']
    uni = {k.split('_', 1)[1]: v['train_seconds'] for k, v in r['train_unimodal']['stages'].items()}
    per_obs = {m: uni[m] / obs[m] for m in uni if obs.get(m)}   # seconds per observation per epoch, quick sizes, this CPU
    uni_epoch = sum(per_obs[m] * PAPER[m] for m in per_obs)
    ratio = {k: r[f'train_{k}']['seconds'] / sum(uni.values()) for k in ('naive', 'aligned')}
    fusion_epoch = {k: uni_epoch * ratio[k] for k in ratio}
    total_obs, paper_obs = sum(obs.values()), sum(PAPER.values())
    other = {s: r[s]['seconds'] * (paper_obs / total_obs) ** max(1.0, exps[s]['time_exponent'] or 1.0)
             for s in ('simulate', 'load', 'preprocess', 'train_baselines', 'export', 'evaluate', 'predict', 'stats')}
    epochs = 60   # PROFILES['full']['epochs'], every stage; early stopping (patience 10) may end a stage sooner
    cpu_quick_epoch = uni_epoch + sum(fusion_epoch.values())
    res = {'label': 'EXTRAPOLATION, not a measurement',
           'target': {'samples': paper_obs, **PAPER},
           'from_size': {'subjects': n, 'observations': obs},
           'assumptions': [
               'cost per observation of each modality is constant (each training step was measured linear or near it; '
               'steps with a larger fitted exponent are scaled by that exponent instead)',
               'a fusion stage epoch costs the same multiple of the unimodal epochs as measured (naive/aligned over the sum '
               'of unimodal seconds); real cohorts are almost unpaired (CheXpert patients are not GTEx donors), as the '
               'simulated one mostly is (30% paired)',
               f'{epochs} epochs per trained stage (the full profile), no early stop',
               'CPU figures are at the quick profile sizes on this machine; the GPU figure needs the full profile throughput '
               'per modality, taken from reports/bench/gpu_full.json when it holds a measured one, else the stated assumption']}
    res['cpu_quick_profile'] = {
        'seconds_per_observation_epoch': {m: round(v, 6) for m, v in per_obs.items()},
        'epoch_seconds': {'unimodal': round(uni_epoch), **{k: round(v) for k, v in fusion_epoch.items()}},
        'train_hours_all_epochs': round(cpu_quick_epoch * epochs / 3600, 1),
        'other_steps_seconds': {k: round(v) for k, v in other.items()}}
    measured = (gpu or {}).get('samples_per_second_by_stage')
    if measured:
        sps, src = measured, 'measured: reports/bench/gpu_full.json'
    else:   # stated assumption for a full-profile ResNet-18 (224 px) / 3-D CNN (96^3) step with bf16 on one data-centre GPU
        sps, src = {'unimodal_xray': 1500.0, 'unimodal_rna': 20000.0, 'unimodal_mri': 60.0, 'naive': 1000.0, 'aligned': 900.0}, \
            'ASSUMED (no GPU measurement): radiographs 1,500/s (ResNet-18 at 224 px, bf16, JPEG decode by 8 workers the ' \
            'likely limit), expression 20,000/s, MRI volumes 60/s (96^3), fusion stages 1,000 and 900 observations/s'
    uni_gpu = sum(PAPER[m] / sps.get(f'unimodal_{m}', np.inf) for m in PAPER)
    fus_gpu = sum(paper_obs / sps[k] for k in ('naive', 'aligned') if k in sps)
    res['gpu_full_profile'] = {'throughput_source': src, 'samples_per_second': sps,
                               'epoch_seconds': {'unimodal': round(uni_gpu), 'fusion': round(fus_gpu)},
                               'train_hours_all_epochs': round((uni_gpu + fus_gpu) * epochs / 3600, 1),
                               'note': 'prediction of every sample once (predict + evaluate) adds about one fusion epoch without '
                                       'the backward pass; statistics scale with subjects and are minutes (CPU figures above)'}
    return res


def figure(results, exps, path):
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    from organage.core import save_figure
    sizes = sorted(results); steps = list(results[sizes[0]])
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in steps:
        e = exps[s]
        ax[0].plot(sizes, [results[n][s]['seconds'] for n in sizes], 'o-', label=f"{s} ({e['time_exponent']})")
        ax[1].plot(sizes, [results[n][s]['peak_rss_mb'] for n in sizes], 'o-', label=f"{s} ({e['memory_exponent']})")
    ref = np.array([sizes[0], sizes[-1]], float)
    for a in ax: a.set_xscale('log'); a.set_yscale('log'); a.set_xlabel('subjects (log)')
    y0 = max(0.1, min(results[sizes[0]][s]['seconds'] for s in steps))
    ax[0].plot(ref, ref / ref[0] * y0, 'k--', lw=0.8, label='slope 1')
    ax[0].set_ylabel('seconds (log)'); ax[1].set_ylabel('peak RSS MB (log)')
    ax[0].legend(fontsize=6.5, title='step (time exponent)', title_fontsize=7)
    ax[1].legend(fontsize=6.5, title='step (memory exponent)', title_fontsize=7)
    fig.suptitle(f'organage cost curve, quick profile on CPU ({THREADS} threads, one child per step)', fontsize=10)
    fig.tight_layout(); save_figure(fig, path); plt.close(fig)


def report(results, base, out, t0, sizes):
    "Fit, extrapolate and write scale.json / scale.csv / scale.png from the sizes measured so far."
    from organage.core import write_json, write_csv
    import pandas as pd
    exps = fit(results, base['peak_rss_mb'])
    gj = out / 'gpu_full.json'
    gpu = json.loads(gj.read_text()) if gj.exists() else None
    rows = [{'step': s, 'subjects': n, 'seconds': round(r['seconds'], 2), 'peak_rss_mb': r['peak_rss_mb'],
             'child_wall_seconds': r['child_wall_seconds'], 'load_average_1min': r['load_average_before'][0]}
            for n, steps in results.items() for s, r in steps.items()]
    res = {'profile': 'quick', 'device': 'cpu', 'threads': THREADS, 'cpus': os.cpu_count(), 'sizes': sorted(results), 'sizes_asked': sizes,
           'flag_exponent_above': FLAG, 'baseline_rss_mb': base['peak_rss_mb'],
           'note': ('seconds are the work inside each child (interpreter start and imports excluded; the train_* steps '
                    'also exclude the cohort preparation each stage child repeats, reported as prepare_seconds); peak '
                    'RSS is the whole child. The machine is shared: load_average_before says how busy it was.'),
           'exponents': exps, 'superlinear': [s for s, e in exps.items() if e['superlinear_time'] or e['superlinear_memory']],
           'results': {str(n): r for n, r in results.items()},
           'bench_wall_seconds': round(time.perf_counter() - t0, 1), 'load_average_end': os.getloadavg()}
    try: res['extrapolation_195766'] = extrapolate(results, exps, gpu)
    except (KeyError, ZeroDivisionError) as e: res['extrapolation_195766'] = {'label': 'not computed', 'why': repr(e)}
    write_json(res, out / 'scale.json')
    write_csv(pd.DataFrame(rows), out / 'scale.csv')
    figure(results, exps, out / 'scale.png')
    return res, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--scale', action='store_true', help='1,200, 6,000 and 30,000 subjects')
    ap.add_argument('--sizes', type=int, nargs='+', default=None, help='subjects per point (overrides --scale)')
    ap.add_argument('--out', default=str(OUT), help='folder for scale.json, scale.csv, scale.png')
    ap.add_argument('--workdir', default=None, help='where cohorts and runs are written (default: a temporary folder)')
    ap.add_argument('--step-timeout', type=int, default=3600, help='seconds one step may run before it is recorded as failed')
    ap.add_argument('--keep', action='store_true', help="keep the sizes already in OUT/scale.json that this run does not measure "
                                                       "(to re-measure one size on a quieter machine); with --steps, "
                                                       "also the other steps of the sizes measured")
    ap.add_argument('--steps', nargs='+', default=None, choices=STEP_NAMES, metavar='STEP',
                    help=f"measure only these steps ({', '.join(STEP_NAMES)}); the later steps need the earlier ones' files, "
                         "so use it with --reuse")
    ap.add_argument('--reuse', default=None, help='work in this folder (cohort_N, run_N, model_N, pred_N) and keep it, instead '
                                                 'of a temporary folder removed at the end')
    a = ap.parse_args(argv)
    if a.steps and not a.reuse and 'simulate' not in a.steps:
        ap.error('--steps without simulate needs --reuse DIR (the folder holding the cohort and run of an earlier --reuse run)')
    sizes = sorted(a.sizes or ([1200, 6000, 30000] if a.scale else [600, 1200]))
    import pandas as pd
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.reuse: Path(a.reuse).mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(a.reuse) if a.reuse else tempfile.TemporaryDirectory(dir=a.workdir)) as d:
        base = child(STARTUP, {})
        print(f"interpreter + torch + organage imports: {base['peak_rss_mb']:.0f} MB")
        results = {}
        if a.keep and (out / 'scale.json').exists():
            results = {int(k): v for k, v in json.loads((out / 'scale.json').read_text())['results'].items()
                       if int(k) not in sizes or a.steps}
            print('kept from scale.json:', {n: ('all steps' if n not in sizes else 'steps not measured now') for n in results})
        for n in sizes:
            new = measure(n, Path(d), timeout=a.step_timeout, steps=a.steps, keep_files=bool(a.reuse))
            results[n] = {**results.get(n, {}), **new}
            res, rows = report(results, base, out, t0, sizes)   # after every size: a run cut short keeps what it measured
    exps = res['exponents']
    if len(results) < 2: print('one size only: no exponent'); return
    tab = pd.DataFrame(rows).pivot(index='step', columns='subjects', values=['seconds', 'peak_rss_mb'])
    print(tab.to_string())
    print(json.dumps({'exponents': exps, 'superlinear': res['superlinear'],
                      'extrapolation_195766': res['extrapolation_195766']}, indent=1))


if __name__ == '__main__':
    main()
