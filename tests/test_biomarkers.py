"Scalar biomarkers: the loader's error paths, the simulator's known answers, nested cross-validation discipline."
import json
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from organage.core import DataError
from organage.data.biomarkers import read_biomarkers, read_phenotypes, read_units
from organage.data.synth import simulate_cohort, PHENOTYPES, BIOMARKERS, ORGANS
from organage.model.baselines import subject_folds
from organage.model.tabular import nested_cv, fit_predict_tabular, TabularConfig, MODELS

UNITS = 'column,unit,organ,min,max\nalt,U/L,liver,1,2000\nsbp,mmHg,heart,60,270\n'
GTEX_ONLY = dict(paired_fraction=0.0, cohort_shares=(1.0, 0.0, 0.0))   # no images to write: the biomarkers are all these tests need
SMALL = TabularConfig(n_outer=3, n_inner=2, enet_alpha=(0.01, 1.0), enet_l1_ratio=(0.5,), hgb_learning_rate=(0.1,),
                      hgb_max_leaf_nodes=(7,), hgb_max_iter=20, mlp_alpha=(1.0,), mlp_max_iter=50)


def _w(tmp_path, name, text):
    p = tmp_path/name; p.write_text(text); return p


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    return simulate_cohort(tmp_path_factory.mktemp('bio')/'c', subjects=300, n_genes=200, image_size=16, volume_size=16,
                           seed=4, messy=True, **GTEX_ONLY)


# ---- loader error paths -------------------------------------------------------------------------------------------
def test_line_numbers_count_blank_lines_and_impossible_ages_are_named(tmp_path):
    t = _w(tmp_path, 'b.csv', 'subject_id,age,sex,alt,sbp\nS1,50,male,20,120\n\nS2,60,female,x,130\nS3,510,male,30,125\n')
    a = read_biomarkers(t, units=_w(tmp_path, 'u.csv', UNITS))
    msg = ' '.join(a.uns['problems'])
    assert "line 4 (S2) alt: 'x'" in msg                                  # the file's own line, the blank line counted
    assert 'ages outside 0-120 years' in msg and 'S3: 510' in msg
    assert 'S3' not in set(a.obs.subject_id) and a.uns['dropped'].get('missing_subject_id') == 1   # no age: dropped, counted


def test_non_numeric_value_set_missing_and_named(tmp_path):
    t = _w(tmp_path, 'b.csv', 'subject_id,age,sex,alt,sbp\nS1,50,male,20,120\nS2,60,female,haemolysed,130\n')
    a = read_biomarkers(t, units=_w(tmp_path, 'u.csv', UNITS))
    assert np.isnan(a['S2', 'alt'].X[0, 0]) and a['S2', 'sbp'].X[0, 0] == 130        # the value, not the row
    assert a.uns['values_set_missing'] == {'non_numeric': 1, 'out_of_range': 0}
    msg = ' '.join(a.uns['problems'])
    assert str(t) in msg and "line 3 (S2) alt: 'haemolysed'" in msg and 'expected a number' in msg


def test_out_of_range_value_set_missing_and_named(tmp_path):
    t = _w(tmp_path, 'b.csv', 'subject_id,age,sex,alt,sbp\nS1,50,male,20,-1\nS2,60,female,2500,130\n')
    a = read_biomarkers(t, units=_w(tmp_path, 'u.csv', UNITS))
    assert np.isnan(a.X).sum() == 2 and a.uns['values_set_missing'] == {'non_numeric': 0, 'out_of_range': 2}
    assert sorted(zip(a.uns['bad_values']['subject_id'], a.uns['bad_values']['expected'], a.uns['bad_values']['found'])) == \
           [('S1', '60 to 270 mmHg', '-1'), ('S2', '1 to 2000 U/L', '2500')]
    assert a.var.loc['alt', 'n_missing'] == 1


def test_duplicate_subjects(tmp_path):
    t = _w(tmp_path, 'b.csv', 'subject_id,age,sex,alt,sbp\nS1,50,male,20,120\nS1,50,male,20,120\nS2,60,f,30,130\nS2,60,f,31,130\nS3,70,m,9,99\n')
    a = read_biomarkers(t, units=_w(tmp_path, 'u.csv', UNITS))
    assert a.obs_names.tolist() == ['S1', 'S3']
    assert a.uns['dropped'] == {'duplicate_identical': 1, 'duplicate_conflicting': 2}
    assert any('S2 (lines 4, 5)' in m for m in a.uns['problems'])


def test_units_file_problems(tmp_path):
    t = _w(tmp_path, 'b.csv', 'subject_id,age,sex,alt,crp\nS1,50,male,20,3\n')
    a = read_biomarkers(t, units=_w(tmp_path, 'u.csv', UNITS))
    assert a.var_names.tolist() == ['alt'] and a.obs['crp'].tolist() == ['3']          # undeclared: kept in obs, not a biomarker
    assert any('sbp' in m and 'not columns' in m for m in a.uns['problems'])           # declared, absent: named
    with pytest.raises(DataError, match='missing max'): read_units(_w(tmp_path, 'u2.csv', 'column,unit,organ,min\nalt,U/L,liver,1\n'))
    with pytest.raises(DataError, match='declared twice'): read_units(_w(tmp_path, 'u3.csv', UNITS + 'alt,U/L,liver,1,5\n'))


def test_missing_id_age_and_subjects_join(tmp_path):
    t = _w(tmp_path, 'b.csv', 'subject_id,alt\nS1,20\nS2,25\n,30\n')
    with pytest.raises(DataError, match="expected a column 'eid'"): read_biomarkers(t, id_column='eid')
    a = read_biomarkers(t, subjects=pd.DataFrame(dict(subject_id=['S1'], age=[44.0], sex=['female'])))
    assert a.obs_names.tolist() == ['S1'] and a.obs.age.tolist() == [44.0] and a.obs.sex.tolist() == ['female']
    assert a.uns['dropped'] == {'missing_subject_id': 1, 'missing_age': 1}


def test_read_phenotypes(tmp_path):
    p = _w(tmp_path, 'p.csv', 'subject_id,pack_years,diabetes\nS1,10,0\nS2,?,1\nS3,,1\nS3,,1\nS4,5,x\n')
    ph = read_phenotypes(p)
    assert ph.index.tolist() == ['S1', 'S2', 'S3', 'S4'] and ph.attrs['dropped'] == {'duplicate_identical': 1}
    assert ph.attrs['values_set_missing'] == {'pack_years': 1, 'diabetes': 1}
    assert ph.loc['S1'].tolist() == [10.0, 0.0] and ph.pack_years.isna().sum() == 2


def test_parquet(tmp_path):
    t = _w(tmp_path, 'b.csv', 'subject_id,age,sex,alt\nS1,50,male,20\nS2,60,female,<5\n')
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        q = tmp_path/'b.parquet'; q.write_bytes(b'PAR1')
        with pytest.raises(DataError, match='pip install pyarrow'): read_biomarkers(q)
        return
    q = tmp_path/'b.parquet'; pd.read_csv(t, dtype=str).to_parquet(q)
    a = read_biomarkers(q); assert a.n_obs == 2 and a.uns['values_set_missing']['non_numeric'] == 1


# ---- simulator known answers --------------------------------------------------------------------------------------
def test_simulated_files_and_injected_mess(cohort):
    a = read_biomarkers(cohort/'biomarkers'/'biomarkers.csv')
    mess = json.loads((cohort/'simulation.json').read_text())['imperfections']
    assert a.n_obs == 299 and mess['biomarker_duplicated_subject'] not in a.obs_names
    assert a.uns['values_set_missing'] == {'non_numeric': 3, 'out_of_range': 2}
    assert 0.03 < np.isnan(a.X).mean() < 0.08
    assert list(a.var_names) == list(BIOMARKERS.column)
    truth = pd.read_csv(cohort/'truth.csv')
    np.testing.assert_allclose(truth.systemic + truth.organ_specific, truth.acceleration, atol=2e-3)
    ph = read_phenotypes(cohort/'phenotypes'/'phenotypes.csv')
    assert list(ph.columns) == [p[0] for p in PHENOTYPES] and len(ph) == 300
    assert 0.02 < ph.isna().to_numpy().mean() < 0.09


def test_biomarkers_follow_their_organs_bio_age(cohort):
    from scipy import stats
    a = read_biomarkers(cohort/'biomarkers'/'biomarkers.csv')
    bio = pd.read_csv(cohort/'truth.csv').pivot(index='subject_id', columns='organ', values='bio_age').loc[a.obs_names]
    spec = BIOMARKERS.set_index('column')
    for j, c in enumerate(a.var_names):
        x = a.X[:, j].astype(float); ok = ~np.isnan(x)
        o = spec.organ[c]
        if o == 'none': assert abs(stats.spearmanr(x[ok], a.obs.age.to_numpy()[ok]).statistic) < 0.2, c
        else: assert np.sign(spec.per_year[c])*stats.spearmanr(x[ok], bio[o].to_numpy()[ok]).statistic > 0.08, c


def test_known_exposure_effects_in_truth(tmp_path):
    "The effects in phenotype_effects.csv are what a regression of the true acceleration recovers (nulls included)."
    root = simulate_cohort(tmp_path/'c', subjects=1500, n_genes=200, image_size=16, volume_size=16, seed=11, **GTEX_ONLY)
    ph = pd.read_csv(root/'phenotypes'/'phenotypes.csv').set_index('subject_id')
    eff = pd.read_csv(root/'phenotypes'/'phenotype_effects.csv').set_index(['organ', 'phenotype']).effect
    people = pd.read_csv(root/'subjects.csv').set_index('subject_id')
    acc = pd.read_csv(root/'truth.csv').pivot(index='subject_id', columns='organ', values='acceleration')
    for o in ('lung', 'liver', 'muscle', 'kidney', 'brain'):
        hits = 0
        for p in ph.columns:
            d = pd.concat([acc[o], ph[p], people.age, (people.sex == 'male').astype(float)], axis=1).dropna()
            fit = sm.OLS(d.iloc[:, 0], sm.add_constant(d.iloc[:, 1:])).fit()
            lo, hi = fit.conf_int(0.001).loc[p]
            assert lo <= eff[(o, p)] <= hi, (o, p, eff[(o, p)], lo, hi)
            hits += lo > 0 or hi < 0
        assert hits == int((eff[o] != 0).sum())   # every effect on these organs is found on the true acceleration, no null is


def test_exposure_scale_zero_keeps_the_old_truth(tmp_path):
    kw = dict(subjects=40, n_genes=200, image_size=16, volume_size=16, seed=2, **GTEX_ONLY)
    a = pd.read_csv(simulate_cohort(tmp_path/'a', exposure_scale=0, **kw)/'truth.csv')
    b = pd.read_csv(simulate_cohort(tmp_path/'b', **kw)/'truth.csv')
    assert (a.exposure == 0).all() and (b.exposure != 0).any()
    np.testing.assert_allclose(b.acceleration - b.exposure, a.acceleration, atol=2e-3)


# ---- nested cross-validation ----------------------------------------------------------------------------------------
def test_nested_cv_folds_and_signal(cohort):
    a = read_biomarkers(cohort/'biomarkers'/'biomarkers.csv')
    tab, st = nested_cv(a, organs=['lung', 'none'], cfg=SMALL)
    outer = subject_folds(a.obs.subject_id, SMALL.n_outer, 0)
    assert (tab.fold.to_numpy() == outer.loc[tab.subject_id].to_numpy()).all()
    assert set(tab.model) == set(MODELS.values()) and (tab.modality == 'biomarkers').all()
    err = tab.assign(e=(tab.mu - tab.age).abs()).groupby(['organ', 'model']).e.mean()
    base = tab.groupby('organ').age.apply(lambda s: np.mean(np.abs(s - s.mean())))
    assert (err['lung'] < 0.9*base['lung']).all() and (err['none'] > 0.95*base['none']).all()
    for m, info in st['organs']['lung']['models'].items():   # sigma of outer model r: its inner CV RMSE, not the subjects' own errors
        lung = tab[(tab.organ == 'lung') & (tab.model == m)]
        for c in info['outer']:
            assert np.allclose(lung[lung.outer == c['fold']].sigma, c['inner_rmse'])
        assert lung.groupby('outer').sigma.nunique().eq(1).all() and lung.sigma.nunique() > 1


def test_outer_test_rows_do_not_reach_the_choice(cohort):
    a = read_biomarkers(cohort/'biomarkers'/'biomarkers.csv')
    cfg = SMALL.model_copy(update=dict(enet_alpha=(0.01, 0.3, 3.0), enet_l1_ratio=(0.2, 0.9)))
    t1, s1 = nested_cv(a, organs=['liver'], models=('enet',), cfg=cfg)
    b = a.copy(); f0 = (subject_folds(a.obs.subject_id, cfg.n_outer, 0).loc[a.obs.subject_id] == 0).to_numpy()
    X = b.X.copy(); X[f0] = X[f0]*1.7 + 3; b.X = X                                       # fold 0's values changed (missing stay missing)
    t2, s2 = nested_cv(b, organs=['liver'], models=('enet',), cfg=cfg)
    o1, o2 = (s['organs']['liver']['models']['enet_bio']['outer'] for s in (s1, s2))
    assert o1[0]['params'] == o2[0]['params'] and o1[0]['inner_rmse'] == o2[0]['inner_rmse']
    assert o1[1]['inner_rmse'] != o2[1]['inner_rmse']                                    # the other folds train on fold 0


def test_fit_predict_tabular_uses_training_rows_only(cohort):
    a = read_biomarkers(cohort/'biomarkers'/'biomarkers.csv')
    sp = pd.Series(np.where(np.arange(a.n_obs) % 4 == 0, 'test', 'train'), index=a.obs_names)
    t1, s1 = fit_predict_tabular(a, sp, organs=['kidney'], models=('enet', 'hgb'), cfg=SMALL)
    b = a.copy(); X = b.X.copy(); X[(sp == 'test').to_numpy()] *= 3; b.X = X
    t2, s2 = fit_predict_tabular(b, sp, organs=['kidney'], models=('enet', 'hgb'), cfg=SMALL)
    tr = t1.split == 'train'
    np.testing.assert_allclose(t1[tr].mu, t2[tr].mu)
    assert not np.allclose(t1[~tr].mu, t2[~tr].mu)
    assert {k: v['kidney']['params'] for k, v in s1.items()} == {k: v['kidney']['params'] for k, v in s2.items()}


def test_with_val_follows_seed_004_and_shares_external_folds(cohort):
    a = read_biomarkers(cohort/'biomarkers'/'biomarkers.csv')
    ext = pd.Series(np.arange(a.n_obs) % 4, index=a.obs_names)      # e.g. the networks' data folds
    t, s = nested_cv(a, organs=['muscle'], models=('hgb',), cfg=SMALL, folds=ext, with_val=True)
    assert list(t.columns) == ['model', 'subject_id', 'organ', 'modality', 'split', 'age', 'mu', 'sigma', 'outer', 'fold']
    assert (t.fold.to_numpy() == ext.loc[t.subject_id].to_numpy()).all()
    test, val = t[t.split == 'test'], t[t.split == 'val']
    assert (test.outer == test.fold).all() and ((val.outer - val.fold) % 4 == 1).all()
    assert test.subject_id.is_unique and val.subject_id.is_unique and len(test) == len(val) == s['organs']['muscle']['n']
    with pytest.raises(DataError, match='have no outer fold'): nested_cv(a, organs=['muscle'], cfg=SMALL, folds=ext.iloc[1:])
