"""The `full` profile on one GPU (issue 17): the main job (`organage simulate`, `organage train` stage by stage,
`organage evaluate`, `organage export`, `organage predict`) at full-profile settings (224 px ResNet-18 radiographs,
96^3 volumes, 20,000 genes, bf16-mixed, 8 workers, pinned memory), at a size chosen to fit about an hour of one GPU.

Size: a short calibration run (GPU_CALIB_SUBJECTS, default 600, one epoch per stage) measures samples/s per stage; the
main run's subjects are then chosen so that 60 epochs of every stage fit GPU_BUDGET_S (default 3,000 s, leaving
~10 minutes for simulation, evaluation and prediction), capped at the profile's 20,000. GPU_SUBJECTS forces a size.
`--reproduce` runs `organage reproduce --profile full --set subjects=N` instead (every paper notebook: far longer).
Records throughput per stage, peak GPU memory (torch.cuda.max_memory_allocated in each child and nvidia-smi polled
every second), test MAE and what the bf16, pinned-memory and worker paths did into reports/bench/gpu_full.json.
No CUDA GPU visible: writes a JSON saying so and exits 0. `--dry-run` prints the commands and writes nothing."""
import argparse, json, os, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import scale   # the child runner and step code of the cost curve

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'bench'
STAGES = scale.STAGES


class SmiPoll:
    "Poll nvidia-smi's used memory (MiB) every second in a thread; `.peak` is the largest seen (None without nvidia-smi)."
    def __init__(self): self.peak, self._stop = None, False
    def _run(self):
        while not self._stop:
            try:
                o = subprocess.run(['nvidia-smi', '--query-gpu=memory.used', '--format=csv,noheader,nounits'],
                                   capture_output=True, text=True, timeout=10).stdout.split()
                if o: self.peak = max(self.peak or 0, max(int(x) for x in o))
            except (OSError, subprocess.SubprocessError, ValueError): return
            time.sleep(1)
    def __enter__(self):
        if shutil.which('nvidia-smi'): self.t = threading.Thread(target=self._run, daemon=True); self.t.start()
        return self
    def __exit__(self, *a): self._stop = True


def plan(n, work: Path, epochs=None, reproduce=False) -> list[tuple[str, str, dict]]:
    "The steps of one full-profile run at `n` subjects: (name, child code, arguments)."
    cohort, run, model, pred = work / f'cohort_{n}', work / f'run_{n}', work / f'model_{n}', work / f'pred_{n}'
    A = {'n': n, 'cohort': str(cohort), 'run': str(run), 'profile': 'full', 'device': 'cuda'}
    if reproduce:
        return [('reproduce', scale.CLI, {**A, 'argv': ['reproduce', '--profile', 'full', '--device', 'cuda', '--set', f'subjects={n}',
                                                         '--out', str(work / 'reports'), '--no-progress']})]
    sets = [f'epochs={epochs}'] if epochs else []
    steps = [('simulate', scale.SIMULATE, A)]
    steps += [(f'train_{s}', scale.TRAIN, {**A, 'stage': s, 'sets': sets}) for s in STAGES]
    steps += [('evaluate', scale.CLI, {**A, 'argv': ['evaluate', '--run', str(run), '--data', str(cohort), '--device', 'cuda']}),
              ('export', scale.CLI, {**A, 'argv': ['export', '--run', str(run), '--out', str(model), '--data', str(cohort), '--device', 'cuda']}),
              ('predict', scale.CLI, {**A, 'argv': ['predict', '--model', str(model), '--data', str(cohort), '--out', str(pred), '--device', 'cuda']})]
    return steps


def throughput(res: dict) -> dict:
    "Samples (training subjects x epochs run) per second of each trained network stage, from the stages' done.json."
    out = {}
    for k, r in res.items():
        for st, d in r.get('stages', {}).items():
            if d.get('train_seconds') and d.get('n_train'):
                out[st] = round(d['n_train'] * max(1, d.get('epochs_run') or 1) / d['train_seconds'], 1)
    return out


def paths_used() -> dict:
    "What the full profile asks of bf16, pinned memory and workers, and what this machine gives it."
    import torch
    from organage.core import PROFILES
    p = PROFILES['full']
    return {'precision_asked': p['precision'], 'bf16_supported': bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
            'num_workers_asked': p['num_workers'], 'cpus': os.cpu_count(),
            'pin_memory': 'on when the device is cuda (organage.model.train.run_stage: pin_memory=dev == "cuda")',
            'note': 'precision falls back to 32-true with a message when bf16 is not supported (see each child\'s stderr tail)'}


def run_steps(steps, log=print) -> dict:
    res = {}
    for name, code, args in steps:
        with SmiPoll() as smi:
            r = scale.child(code, args, timeout=4 * 3600)
        r['nvidia_smi_peak_mib'] = smi.peak
        res[name] = r
        log(f"  {name:<16} {r['seconds']:8.1f} s  RSS {r['peak_rss_mb']:.0f} MB  GPU {r.get('cuda_max_memory_allocated_mb')} MB")
    return res


def test_mae(run) -> dict:
    from organage.evaluate.predictions import read_predictions
    p = read_predictions(run); t = p[p.split == 'test']
    return {'test_mae_by_organ': {o: round(float((g.mu - g.age).abs().mean()), 2) for o, g in t.groupby('organ')},
            'test_mae': round(float((t.mu - t.age).abs().mean()), 2), 'test_rows': int(len(t))}


def choose_size(tp: dict, budget_s: float, epochs: int = 60, cap: int = 20000, calib_n: int = 600, calib_train: dict | None = None) -> int:
    "Subjects whose `epochs` epochs of every stage fit `budget_s`, from samples/s per stage (time linear in subjects)."
    # seconds per subject-epoch summed over stages: each stage trains on (its n_train / calib_n) of the subjects
    per_subject = sum((calib_train or {}).get(st, calib_n * 0.7) / calib_n / v for st, v in tp.items() if v)
    return int(min(cap, max(calib_n, budget_s / (epochs * per_subject)))) if per_subject else calib_n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dry-run', action='store_true', help='print the commands; run nothing')
    ap.add_argument('--reproduce', action='store_true', help='organage reproduce --profile full at the chosen size')
    ap.add_argument('--out', default=str(OUT))
    ap.add_argument('--workdir', default=None)
    a = ap.parse_args(argv)
    from organage.core import write_json
    out = Path(a.out)
    calib_n = int(os.environ.get('GPU_CALIB_SUBJECTS', '600')); budget = float(os.environ.get('GPU_BUDGET_S', '3000'))
    forced = os.environ.get('GPU_SUBJECTS')
    if a.dry_run:
        w = Path(a.workdir or '/tmp/gpu_full')
        for label, steps in (('calibration', plan(calib_n, w / 'calib', epochs=1)), ('main (N chosen from calibration)', plan(int(forced or 0) or 'N', w, reproduce=a.reproduce))):
            print(f'# {label}')
            for name, code, args in steps:
                argv_ = args.get('argv') or ({'simulate': ['simulate', args['cohort'], '--subjects', str(args['n']), '--profile', 'full']}.get(name)
                         or ['train', '--profile', 'full', '--device', 'cuda', *[x for kv in args.get('sets', []) for x in ('--set', kv)],
                             '--data', args['cohort'], '--run', args['run'], '--stages', args['stage'], '--no-export'])
                print('organage ' + ' '.join(map(str, argv_)))
        return 0
    import torch
    res = {'profile': 'full', 'cuda': torch.cuda.is_available(), 'paths': paths_used()}
    if not torch.cuda.is_available():
        res['message'] = 'no CUDA GPU visible to torch: nothing run (the full-profile GPU bench needs one)'
        write_json(res, out / 'gpu_full.json'); print(json.dumps(res, indent=1)); return 0
    res['gpu'] = torch.cuda.get_device_name(0)
    res['gpu_memory_total_mb'] = round(torch.cuda.get_device_properties(0).total_memory / 2**20)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=a.workdir) as d:
        d = Path(d)
        if forced: n, res['size_choice'] = int(forced), 'GPU_SUBJECTS'
        else:
            print(f'calibration: {calib_n} subjects, one epoch per stage')
            cal = run_steps(plan(calib_n, d / 'calib', epochs=1)[:5])
            tp = throughput(cal)
            n_train = {st: v['n_train'] for r in cal.values() for st, v in r.get('stages', {}).items()}
            n = choose_size(tp, budget, calib_n=calib_n, calib_train=n_train)
            res['calibration'] = {'subjects': calib_n, 'samples_per_second_by_stage': tp, 'steps': cal}
            res['size_choice'] = f'60 epochs of every stage in {budget:.0f} s at the calibration throughput (linear in subjects)'
        res['subjects'] = n
        print(f'main run: {n} subjects')
        main_res = run_steps(plan(n, d, reproduce=a.reproduce))
        res['steps'] = main_res
        res['samples_per_second_by_stage'] = throughput(main_res)
        res['peak_gpu_memory_allocated_mb'] = max((r.get('cuda_max_memory_allocated_mb') or 0) for r in main_res.values())
        res['peak_nvidia_smi_mib'] = max((r.get('nvidia_smi_peak_mib') or 0) for r in main_res.values())
        if not a.reproduce: res.update(test_mae(d / f'run_{n}'))
    res['wall_seconds'] = round(time.perf_counter() - t0, 1)
    write_json(res, out / 'gpu_full.json'); print(json.dumps(res, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
