"""The RNA network against the per-organ elastic net on many subject-grouped splits (issue #12): does the MLP lose to
the field's standard transcriptomic clock, or was one split's deficit noise?

On `BENCH_RNA_SPLITS` (default 6) fresh splits (seeds 0..) of the quick simulated cohort, RNA alone: the curriculum's
unimodal RNA stage and the baselines stage (`enet_rna`), both on the same training subjects and the same target ages
(a subject's exact age from its radiograph or MRI replaces the GTEx bracket midpoint: `organage.model.crossfit.subset_modalities`,
as `observation_table` does in a full run), scored on the same validation and test rows. Per split: MAE of each and the paired subject-bootstrap interval
of the difference (`organage.evaluate.repeats.paired_differences`); over splits: mean, sd, t-interval and the
Nadeau-Bengio corrected interval (`across_repeats`). Writes reports/bench/rna_splits.json and rna_splits.csv.
About 40 s per split on 2 idle cores."""
import json, os, shutil, sys, tempfile
from pathlib import Path
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'bench'
SPLITS = int(os.environ.get('BENCH_RNA_SPLITS', '6'))
DATA = Path(os.environ.get('BENCH_DATA', ROOT / 'data' / 'simulated' / 'quick'))


def rna_with_exact_ages(data):
    "The cohort's expression AnnData, bracket midpoints replaced by the subject's exact age from its images where one exists (`subset_modalities`)."
    from organage.data.cohort import read_cohort
    from organage.model.crossfit import subset_modalities
    rna = subset_modalities(read_cohort(data), ['rna'])['rna']
    return rna, int((rna.obs.age_source == 'exact_age_of_subject').sum())


def one_split(rna, seed, work):
    from organage.core import RunConfig
    from organage.model.train import train_curriculum
    from organage.model.predict import open_run, predict_dataset
    from organage.model.weights import load_model
    run = work / f'split{seed}'
    cfg = RunConfig(profile='quick', seed=seed, device='cpu')
    train_curriculum(cfg, {'rna': rna}, run, stages=['unimodal', 'baselines'])
    _, _, cd = open_run(run, {'rna': rna}, 'cpu')
    net = load_model(run / 'unimodal_rna')
    bl = pd.read_csv(run / 'baselines' / 'predictions.csv', dtype={'subject_id': str})
    rows = [predict_dataset(net, cd.ds[s]).assign(model='unimodal_rna', split=s, modality='rna') for s in ('val', 'test')]
    return pd.concat(rows + [bl[bl.model == 'enet_rna']], ignore_index=True)


def main():
    from organage.evaluate.repeats import paired_differences, across_repeats
    if not DATA.exists():
        sys.exit(f"{DATA}: no simulated cohort; run `make reproduce` (or `organage simulate --out {DATA}`) first")
    rna, n_exact = rna_with_exact_ages(DATA)
    per = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(SPLITS):
            allp = one_split(rna, s, Path(tmp))
            n_train = int(pd.read_csv(Path(tmp) / f'split{s}' / 'splits.csv').split.eq('train').sum())
            n_test = int(pd.read_csv(Path(tmp) / f'split{s}' / 'splits.csv').split.eq('test').sum())
            for sp in ('val', 'test'):
                d = paired_differences(allp, comparisons=[('unimodal_rna', 'enet_rna')], split=sp, seed=s)
                per.append(d.assign(repeat=s, split=sp, test_train_ratio=n_test / n_train))
            shutil.rmtree(Path(tmp) / f'split{s}')
            print(per[-1][['repeat', 'split', 'MAE_a', 'MAE_b', 'diff', 'low', 'high']].round(3).to_string(index=False, header=s == 0), flush=True)
    per = pd.concat(per, ignore_index=True)
    over = pd.concat([across_repeats(per[per.split == sp]).assign(split=sp) for sp in ('val', 'test')], ignore_index=True)
    OUT.mkdir(parents=True, exist_ok=True)
    per.to_csv(OUT / 'rna_splits.csv', index=False)
    (OUT / 'rna_splits.json').write_text(json.dumps(dict(splits=SPLITS, data=str(DATA), samples_with_exact_age=n_exact,
                                                         per_split=per.to_dict('records'), over_splits=over.to_dict('records')), indent=1, default=str))
    print(over[['split', 'n_repeats', 'mean_MAE_a', 'mean_MAE_b', 'mean_diff', 'sd_diff', 't_low', 't_high', 'corrected_low', 'corrected_high', 'a_beats_b']].round(3).to_string(index=False))


if __name__ == '__main__':
    main()
