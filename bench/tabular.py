"""Cost of the scalar-biomarker models' nested cross-validation and of the hierarchical ensemble (issue #14): seconds
per organ and model on this machine, for the quick simulated cohort's biomarker table (1,200 subjects, 23 markers),
5 outer folds with seed 004's validation fold, inner folds of each outer training part (`TabularConfig`). Writes
reports/bench/tabular.json."""
import json, os, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'reports' / 'bench'


def main():
    import organage as oa
    from organage.data.synth import simulate_cohort
    data = Path(os.environ.get('BENCH_DATA', ROOT / 'data' / 'simulated' / 'quick'))
    if not (data / 'biomarkers' / 'biomarkers.csv').exists():
        import tempfile
        data = Path(tempfile.mkdtemp()) / 'sim'
        simulate_cohort(data, subjects=1200, seed=0, n_genes=200, image_size=16, volume_size=16)
    bio = oa.read.read_biomarkers(data / 'biomarkers' / 'biomarkers.csv')
    folds = oa.tl.outer_folds(bio, k=5, seed=0)
    t0 = time.perf_counter()
    oof, st = oa.tl.nested_cv(bio, folds=folds, with_val=True, seed=0)
    nested = time.perf_counter() - t0
    t0 = time.perf_counter()
    ens = oa.tl.hierarchical_ensemble(oof, mode='val')
    ens_s = time.perf_counter() - t0
    organs = {o: dict(subjects=s['n'], markers=len(s['features']), seconds=s['seconds'],
                      models={m: dict(seconds=v['seconds'], oof_mae=round(v['mae'], 3)) for m, v in s['models'].items()})
              for o, s in st['organs'].items()}
    res = dict(subjects=int(bio.n_obs), markers=int(bio.n_vars), outer_folds=5, nested_cv_seconds=round(nested, 2),
               seconds_per_organ=round(nested / len(organs), 2), ensemble_seconds=round(ens_s, 2), organs=organs,
               cpus=os.cpu_count())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / 'tabular.json').write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != 'organs'}))
    for o, v in organs.items(): print(o, v['seconds'], {m: x['oof_mae'] for m, x in v['models'].items()})


if __name__ == '__main__':
    main()
