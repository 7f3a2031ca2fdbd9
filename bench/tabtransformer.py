"""Cost and accuracy of seed 001's TabTransformer clock (issue 16) on the quick simulated cohort: the sample table
(methylation TSS200 promoter features + expression, both omics in one table), one training run (samples per second,
seconds per epoch), its test MAE for methylation-only, expression-only and combined samples beside the elastic nets
fitted on the same rows and features, and the cost of an Optuna trial (`tune_tabtransformer`, a few trials of a
shortened training). CPU seconds are given beside wall seconds because the machine may be shared.
Writes reports/bench/tabtransformer.json (runs under a temporary folder; the cohort is only read).

Usage: python bench/tabtransformer.py [--layout blocks] [--k 100] [--trials 3] [--trial-epochs 15] [--keep DIR]
"""
from __future__ import annotations
import argparse, json, os, resource, shutil, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'reports'/'bench'
PAPER = dict(methylation=4.227, expression=6.287, combined=5.622)   # seed 001, Table 1 (MAE, years)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime


def _annotation(meth_dir: Path):
    """The cohort's probe annotation. Simulated cohorts written before the fix of `_manifest` hold a few rows whose
    UCSC_RefGene_Group is a Python tuple ("('SIM00223', 'TSS200')", a probe that drew its own gene as its neighbour);
    those rows are read as the probe's own gene and region, and counted."""
    import pandas as pd
    ann = pd.read_csv(next(meth_dir.glob('*annot*')), dtype=str).fillna('')
    bad = ann.UCSC_RefGene_Group.str.startswith('(')
    ann.loc[bad, 'UCSC_RefGene_Name'] = ann.loc[bad, 'UCSC_RefGene_Name'].str.split(';').str[0]
    ann.loc[bad, 'UCSC_RefGene_Group'] = ann.loc[bad, 'UCSC_RefGene_Group'].str.extract(r"'([^']+)'\)$")[0]
    return ann, int(bad.sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--layout', default='blocks'); ap.add_argument('--k', type=int, default=100)
    ap.add_argument('--trials', type=int, default=3); ap.add_argument('--trial-epochs', type=int, default=15)
    ap.add_argument('--keep'); a = ap.parse_args()
    import numpy as np
    from organage.data.gtex import read_gtex
    from organage.data.methylation import promoter_features, read_methylation
    from organage.model import tabtransformer as tt
    data = Path(os.environ.get('BENCH_DATA', ROOT/'data'/'simulated'/'quick'))
    if not (data/'methylation').is_dir():
        from organage.data.synth import simulate_cohort
        data = simulate_cohort(Path(tempfile.mkdtemp())/'sim', subjects=600, seed=0, n_genes=500, image_size=16, volume_size=16,
                               extras=('methylation',))
    runs = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix='bench_tabtx_'))
    t0, c0 = time.perf_counter(), _cpu()
    ann, repaired = _annotation(data/'methylation')
    exact = data/'gtex_exact_ages.csv'
    ads = dict(methylation=promoter_features(read_methylation(data/'methylation'), ann),
               expression=read_gtex(data/'gtex', exact_ages=exact if exact.exists() else None))
    table = tt.omics_table(ads, split='subject', layout=a.layout, seed=0)
    full_features = len(table.features)
    if a.k: table = tt.select_features(table, a.k)
    table_s, table_cpu = time.perf_counter() - t0, _cpu() - c0
    t0, c0 = time.perf_counter(), _cpu()
    r = tt.evaluate_tabtransformer(table, runs/'clock', n_boot=200, seed=0)
    eval_s, eval_cpu = time.perf_counter() - t0, _cpu() - c0
    fit = r['fit']; n_train = int(table.mask('train').sum())
    m = r['metrics'].set_index(['model', 'subset'])
    metrics = {f'{mo}/{s}': dict(n=int(m.loc[(mo, s), 'n']), **{c: round(float(m.loc[(mo, s), c]), 3) for c in ('mae', 'mae_sd', 'rmse', 'r2', 'medae')})
               for mo, s in m.index}
    t0, c0 = time.perf_counter(), _cpu()
    study = tt.tune_tabtransformer(table, runs/'tune', n_trials=a.trials, rc=tt.default_rc(epochs=a.trial_epochs, patience=a.trial_epochs), seed=0)
    tune_s, tune_cpu = time.perf_counter() - t0, _cpu() - c0
    trials = [dict(number=t.number, val_mae=round(t.value, 3), seconds=t.user_attrs.get('seconds'), epochs=a.trial_epochs) for t in study.trials]
    res = dict(data=str(data), layout=a.layout, features_per_omic=a.k, features=len(table.features), features_before_selection=full_features,
               annotation_rows_repaired=repaired, samples=table.info['samples'], train_samples=n_train,
               table_seconds=round(table_s, 2), table_cpu_seconds=round(table_cpu, 2),
               train=dict(seconds=round(fit.seconds, 2), epochs_run=fit.epochs_run, best_epoch=fit.best_epoch,
                          samples_per_second=round(n_train * fit.epochs_run / fit.seconds, 1), seconds_per_epoch=round(fit.seconds / fit.epochs_run, 3)),
               evaluate_seconds=round(eval_s, 2), evaluate_cpu_seconds=round(eval_cpu, 2), metrics=metrics, paper_mae=PAPER,
               tune=dict(n_trials=len(trials), seconds=round(tune_s, 2), cpu_seconds=round(tune_cpu, 2),
                         seconds_per_trial=round(tune_s / max(len(trials), 1), 2), trials=trials),
               cpus=os.cpu_count())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT/'tabtransformer.json').write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k not in ('metrics', 'tune')}))
    for k, v in metrics.items(): print(k, v)
    print('tune', {k: v for k, v in res['tune'].items() if k != 'trials'})
    if not a.keep: shutil.rmtree(runs, ignore_errors=True)


if __name__ == '__main__':
    main()
