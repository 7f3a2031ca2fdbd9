"""Training throughput of each encoder and of the fusion stages on CPU, loader throughput beside it, peak memory,
and (unless BENCH_CURRICULUM=0) the wall time and peak memory of the whole quick curriculum in a child process.
Writes reports/bench/train.json and reports/bench/train.png."""
import json, os, resource, subprocess, sys, tempfile, time, warnings, logging
from pathlib import Path
warnings.filterwarnings('ignore')
logging.getLogger('lightning').setLevel(logging.WARNING); logging.getLogger('lightning.pytorch').setLevel(logging.WARNING)
import numpy as np, torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'bench'
THREADS = int(os.environ.get('BENCH_THREADS', '2'))
torch.set_num_threads(THREADS)


def peak_rss_mb(who=resource.RUSAGE_SELF):
    return resource.getrusage(who).ru_maxrss / 1024


def main():
    from organage.core import load_config, write_json, save_figure
    from organage.data.synth import simulate_cohort
    from organage.core import TrainConfig
    from organage.data.prepare import CohortData
    from organage.model.train import model_config_for
    from organage.data.datasets import collate_subjects
    from organage.model.fusion import OrganAgeModel
    cfg = load_config('quick', overrides={'device': 'cpu'})
    res = {'threads': THREADS, 'profile': 'quick', 'subjects': cfg.subjects, 'batch_size': cfg.batch_size}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t = time.perf_counter(); simulate_cohort(d / 'cohort', subjects=cfg.subjects, seed=0, paired_fraction=0.3)
        res['simulate_seconds'] = round(time.perf_counter() - t, 1)
        t = time.perf_counter(); data = CohortData(d / 'cohort', cfg, TrainConfig(), d / 'run')
        res['prepare_seconds'] = round(time.perf_counter() - t, 1)   # read, preprocess, split, decode + cache pixels
        train = data.ds['train']
        # loader throughput: subjects and observations per second through DataLoader + collate (cached pixels)
        loader = {}
        for name, ds in [('all', train)] + [(m, train.view([m])) for m in data.modalities]:
            dl = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate_subjects)
            t = time.perf_counter(); n_subj = n_obs = 0
            for b in dl:
                n_subj += len(b['subject_id']); n_obs += sum(len(v) for k, v in b.items() if k.endswith('_subj'))
            s = time.perf_counter() - t
            loader[name] = {'subjects_per_s': round(n_subj / s, 1), 'observations_per_s': round(n_obs / s, 1)}
        res['loader'] = loader
        # model throughput: forward + backward + AdamW step on real batches
        model_tp = {}
        base = model_config_for(cfg, organs=data.organs, n_genes=data.n_genes)
        runs = [(f'unimodal_{m}', 'unimodal', [m]) for m in data.modalities] + [('naive', 'naive', data.modalities), ('aligned', 'aligned', data.modalities)]
        for name, kind, mods in runs:
            ds = train.view(mods) if kind == 'unimodal' else train
            model = OrganAgeModel(base.model_copy(update={'kind': kind, 'modalities': mods})).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            batches = [b for _, b in zip(range(6), DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate_subjects))]
            n_subj = n_obs = 0
            for i, b in enumerate(batches):
                if i == 1: t = time.perf_counter()
                out = model.loss(b); opt.zero_grad(); out['loss'].backward(); opt.step()
                if i >= 1:
                    n_subj += len(b['subject_id']); n_obs += sum(len(v) for k, v in b.items() if k.endswith('_subj'))
            s = time.perf_counter() - t
            model_tp[name] = {'subjects_per_s': round(n_subj / s, 1), 'observations_per_s': round(n_obs / s, 1),
                              'parameters': sum(p.numel() for p in model.parameters()),
                              'epoch_seconds_est': round(len(ds) / (n_subj / s), 2)}
        res['model_train'] = model_tp
        res['peak_rss_mb_throughput'] = round(peak_rss_mb(), 1)
        if os.environ.get('BENCH_CURRICULUM', '1') != '0':
            code = ("import sys, time, json, warnings, logging; warnings.filterwarnings('ignore');"
                    "logging.getLogger('lightning.pytorch').setLevel(logging.WARNING);"
                    "import torch; torch.set_num_threads(%d);"
                    "from organage.core import load_config; from organage.model.train import train_curriculum;"
                    "t=time.perf_counter(); out=train_curriculum(load_config('quick', overrides={'device':'cpu'}), sys.argv[1], sys.argv[2]);"
                    "print(json.dumps({'seconds': time.perf_counter()-t, 'stages': out}))") % THREADS
            t = time.perf_counter()
            p = subprocess.run([sys.executable, '-c', code, str(d / 'cohort'), str(d / 'curriculum')], capture_output=True, text=True)
            if p.returncode: raise RuntimeError(p.stderr[-2000:])
            r = json.loads(p.stdout.strip().splitlines()[-1])
            res['curriculum'] = {'wall_seconds': round(time.perf_counter() - t, 1), 'train_seconds': round(r['seconds'], 1),
                                 'peak_rss_mb': round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1),
                                 'stage_seconds': {k: v['train_seconds'] for k, v in r['stages'].items()},
                                 'budget': 'under 300 s on 2 cores within 4096 MB'}
    res['load_average'] = os.getloadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(res, OUT / 'train.json')
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    names = list(res['model_train']); ax[0].barh(names, [res['model_train'][n]['observations_per_s'] for n in names], label='model (train step)')
    ln = [n.replace('unimodal_', '') for n in names if n.startswith('unimodal_')] + ['all']
    ax[0].barh([f'loader {n}' for n in ln], [res['loader'][n]['observations_per_s'] for n in ln], color='grey', label='loader')
    ax[0].set_xscale('log'); ax[0].set_xlabel('observations / s (log)'); ax[0].legend(fontsize=7)
    if 'curriculum' in res:
        st = res['curriculum']['stage_seconds']; ax[1].barh(list(st), list(st.values())); ax[1].set_xlabel('seconds')
        ax[1].set_title(f"quick curriculum: {res['curriculum']['train_seconds']} s, peak {res['curriculum']['peak_rss_mb']:.0f} MB", fontsize=9)
    fig.suptitle(f'organage training throughput on CPU ({THREADS} threads)', fontsize=10); fig.tight_layout()
    save_figure(fig, OUT / 'train.png')
    print(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
