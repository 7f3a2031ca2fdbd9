"Seed 002 stacking with the nested-model ANOVA, seed 004's hierarchical ensemble and its fold discipline, metrics with bootstrap spreads and the ensemble-vs-best comparison, on synthetic prediction tables with known answers (seconds)."
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as sps
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score, median_absolute_error

from organage.core import DataError
from organage.evaluate.stats import nested_models_table
from organage.model.crossfit import outer_folds, outer_split
from organage.evaluate.metrics import metrics_with_sd, ensemble_vs_best, add_age_group
from organage.model.ensembles import (stack_predictions, hierarchical_ensemble, simulate_oof, EnsembleSettings,
                                      corrected_ages, ENSEMBLE_MODALITY)

FAST = EnsembleSettings(l1_ratio=(0.5, 1.0), n_alphas=10, inner_cv=3)
PRED_COLS = ['model', 'subject_id', 'organ', 'modality', 'split', 'age', 'mu', 'sigma']


def two_sources(n=400, seed=0, pure_noise=False, sex_effect=0.0):
    "T and A predictions of the same subjects, half validation and half test rows; A informative or pure noise."
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 80, n); sex = rng.choice(['female', 'male'], n)
    T = age + rng.normal(0, 4, n) + sex_effect * (sex == 'male')
    A = rng.uniform(20, 80, n) if pure_noise else age + rng.normal(0, 4, n)
    ids = [f'S{i:04d}' for i in range(n)]
    split = np.where(np.arange(n) < n // 2, 'val', 'test')
    return pd.concat([pd.DataFrame(dict(model=m, subject_id=ids, organ='brain', modality='mri', split=split, age=age, mu=v,
                                        sigma=1.0, sex=sex)) for m, v in (('net_t1', T), ('net_cbv', A))], ignore_index=True)


def wide(tab):
    w = tab.pivot(index='subject_id', columns='model', values='mu').join(tab.groupby('subject_id')[['age', 'sex', 'split']].first())
    return w[w.split == 'val'], w[w.split == 'test']


def test_stack_coefficients_are_least_squares_and_predict_the_test_rows():
    tab = two_sources(seed=1)
    res = stack_predictions(tab, {'T': 'net_t1', 'A': 'net_cbv'})
    fit, te = wide(tab)
    X = lambda d: np.column_stack([np.ones(len(d)), d.net_t1, d.net_cbv, (d.sex == 'male').astype(float)])
    beta = np.linalg.lstsq(X(fit), fit.age.to_numpy(), rcond=None)[0]
    c = res.coefficients[res.coefficients.model == 'stack_TAS'].set_index('term')
    np.testing.assert_allclose(c.loc[['Intercept', 'T', 'A', 'C(sex)[T.male]'], 'coef'], beta, rtol=1e-8, atol=1e-8)
    # statsmodels' interval is coef +- t quantile * se
    q = sps.t.ppf(0.975, len(fit) - 4)
    np.testing.assert_allclose(c.ci_high - c.coef, q * c.se, rtol=1e-10)
    p = res.predictions[res.predictions.model == 'stack_TAS'].set_index('subject_id').loc[te.index]
    np.testing.assert_allclose(p.mu, X(te) @ beta, rtol=1e-10)
    assert list(res.predictions.columns[:8]) == PRED_COLS
    assert set(res.predictions.modality) == {ENSEMBLE_MODALITY} and set(res.predictions.split) == {'test'}
    # sigma is the regression's residual SD on the fitting rows
    resid = fit.age - X(fit) @ beta
    np.testing.assert_allclose(p.sigma.iloc[0], np.sqrt(np.sum(resid**2) / (len(fit) - 4)), rtol=1e-10)


def test_anova_F_is_the_residual_sum_of_squares_F_and_agrees_with_nested_models_table():
    tab = two_sources(seed=2, sex_effect=-1.5)
    res = stack_predictions(tab, {'T': 'net_t1', 'A': 'net_cbv'})
    fit, _ = wide(tab)
    def ssr(cols):
        X = np.column_stack([np.ones(len(fit)), *cols])
        return np.sum((fit.age - X @ np.linalg.lstsq(X, fit.age, rcond=None)[0])**2)
    s_t, s_ta, s_tas = ssr([fit.net_t1]), ssr([fit.net_t1, fit.net_cbv]), ssr([fit.net_t1, fit.net_cbv, (fit.sex == 'male').astype(float)])
    n = len(fit)
    a = res.anova.set_index(['smaller', 'larger'])
    for (small, large), (s0, s1, df1) in {('stack_T', 'stack_TA'): (s_t, s_ta, n - 3), ('stack_TA', 'stack_TAS'): (s_ta, s_tas, n - 4),
                                          ('stack_T', 'stack_TAS'): (s_t, s_tas, n - 4)}.items():
        r = a.loc[(small, large)]
        F = (s0 - s1) / r.df_diff / (s1 / df1)
        np.testing.assert_allclose(r.F, F, rtol=1e-8)
        np.testing.assert_allclose(r.p, sps.f.sf(F, r.df_diff, df1), rtol=1e-8)
    # the project's nested_models_table (statsmodels too) gives the same p-values on the same rows
    d = fit.rename(columns={'net_t1': 'T', 'net_cbv': 'A'})
    nm = nested_models_table(d, 'age', {'stack_T': ['T'], 'stack_TA': ['T', 'A'], 'stack_TAS': ['T', 'A', 'sex']}).set_index('model')
    np.testing.assert_allclose(nm.loc['stack_TA', 'p_vs_stack_T'], a.loc[('stack_T', 'stack_TA')].p, rtol=1e-10)
    np.testing.assert_allclose(nm.loc['stack_TAS', 'p_vs_stack_TA'], a.loc[('stack_TA', 'stack_TAS')].p, rtol=1e-10)


def test_informative_source_is_significant_and_pure_noise_is_not():
    p_sig = [stack_predictions(two_sources(seed=s), {'T': 'net_t1', 'A': 'net_cbv'}, covariates=()).anova.p.iloc[0] for s in range(25)]
    p_null = [stack_predictions(two_sources(seed=s, pure_noise=True), {'T': 'net_t1', 'A': 'net_cbv'}, covariates=()).anova.p.iloc[0]
              for s in range(25)]
    assert all(p < 1e-6 for p in p_sig)
    assert sum(p < 0.05 for p in p_null) <= 4          # binomial(25, 0.05) > 4 with probability 0.7%
    assert np.mean(p_null) > 0.3                        # null p-values are spread over (0, 1)


def test_stack_counts_subjects_missing_a_source_and_refuses_bad_models():
    tab = two_sources(seed=3)
    gone = (tab.model == 'net_cbv') & tab.subject_id.isin(['S0000', 'S0399'])
    res = stack_predictions(tab[~gone], {'T': 'net_t1', 'A': 'net_cbv'})
    assert res.counts.set_index('rows').dropped.to_dict() == {'fit': 1, 'apply': 1}
    assert res.anova.n_fit.unique().tolist() == [199]
    with pytest.raises(DataError, match='not nested'):
        stack_predictions(tab, {'T': 'net_t1', 'A': 'net_cbv'}, models={'a': ['T', 'A'], 'b': ['A']}, comparisons=[('a', 'b')])
    with pytest.raises(DataError, match='covariate'):
        stack_predictions(tab.drop(columns='sex'), {'T': 'net_t1', 'A': 'net_cbv'})


@pytest.fixture(scope='module')
def next_fold():
    oof = simulate_oof(400, seed=2, missing=0.1, validation=False)
    return oof, hierarchical_ensemble(oof, settings=FAST)


def mae(d): return float((d.mu - d.age).abs().mean())


def test_ensemble_beats_each_component_and_ignores_noise(next_fold):
    oof, res = next_fold
    assert res.mode == 'next_fold'
    P = res.predictions
    assert list(P.columns[:8]) == PRED_COLS and set(P.modality) == {'ensemble'}
    for node, comps in {'ens_brain_mri': ['cnn_mri', 'pcr_mri'], 'ens_lung_xray': ['cnn_xray', 'pcr_xray']}.items():
        common = set.intersection(*[set(oof.subject_id[oof.model == m]) for m in comps])
        assert mae(P[(P.model == node) & P.subject_id.isin(common)]) < min(mae(oof[(oof.model == m) & oof.subject_id.isin(common)]) for m in comps)
    w = res.weights[res.weights.complete]
    noise = w[(w.node == 'ens_brain_rna') & (w.component == 'noise_rna')].weight
    assert noise.mean() < 0.05 and noise.max() < 0.1
    assert (w.weight >= 0).all()                                     # non-negative weights
    assert set(w.groupby('node').outer.nunique()) == {5}             # one fit per node and outer model


def test_no_subject_is_predicted_by_weights_fitted_on_it(next_fold):
    oof, res = next_fold
    fold_of = oof.drop_duplicates('subject_id').set_index('subject_id').fold
    assert res.records
    for r in res.records:
        assert not (r['fit'] & r['applied'])
        assert {fold_of[s] for s in r['applied']} == {r['outer']}
        assert {fold_of[s] for s in r['fit']} == {(r['outer'] - 1) % 5}     # fitted on the previous fold only
    # every prediction row's subject is among the subjects its node and outer model applied weights to
    applied = {}
    for r in res.records: applied.setdefault((r['node'], r['outer']), set()).update(r['applied'])
    for (node, outer), g in res.predictions.groupby(['model', 'outer']):
        assert set(g.subject_id) <= applied[(node, outer)]
        assert (g.fold == outer).all()


def test_missing_components_are_counted_and_pattern_fits_recorded(next_fold):
    oof, res = next_fold
    c = res.counts.groupby('node')[['n_subjects', 'n_complete', 'n_predicted', 'n_predicted_partial', 'n_unpredicted']].sum()
    assert (c.n_predicted + c.n_unpredicted == c.n_subjects).all()
    assert c.loc['ens_brain', 'n_predicted_partial'] > 0 and c.loc['ens_brain', 'n_complete'] < c.loc['ens_brain', 'n_subjects']
    assert res.predictions.groupby('model').subject_id.nunique().to_dict() == c.n_predicted.to_dict()
    partial = res.predictions[(res.predictions.model == 'ens_brain') & (res.predictions.n_components == 1)]
    assert len(partial) == c.loc['ens_brain', 'n_predicted_partial']
    # a pattern needs min_fit fitting subjects: with a huge minimum nothing is predicted, and every subject is counted
    none = hierarchical_ensemble(oof[oof.organ == 'lung'], settings=EnsembleSettings(l1_ratio=(1.0,), n_alphas=5, inner_cv=3, min_fit=10_000))
    assert len(none.predictions) == 0 and none.counts.n_unpredicted.sum() == none.counts.n_subjects.sum() > 0


def test_validation_mode_is_seed_004s_discipline():
    oof = simulate_oof(240, {'brain': {'mri': {'cnn': 5.0, 'pcr': 7.0}, 'rna': {'enet': 7.0}}}, seed=3)
    res = hierarchical_ensemble(oof, settings=FAST)
    assert res.mode == 'val' and set(res.predictions.split) == {'val', 'test'}
    for r in res.records:
        assert not (r['fit'] & r['applied'])
        val_k = set(oof.subject_id[(oof.outer == r['outer']) & (oof.split == 'val')])
        assert r['fit'] <= val_k                                     # fitted on fold k's validation rows only
    test = res.predictions[res.predictions.split == 'test']
    assert test.groupby('model').subject_id.apply(lambda s: s.duplicated().any()).sum() == 0
    assert set(test.subject_id[test.model == 'ens_brain']) == set(oof.subject_id)
    bad = pd.concat([oof, oof[(oof.split == 'test') & (oof.outer == 1)].assign(split='val')], ignore_index=True)
    with pytest.raises(DataError, match='both in the fitting and the predicted rows'):
        hierarchical_ensemble(bad, settings=FAST)


def test_fold_to_fold_refuses_too_few_folds_for_its_levels():
    three = simulate_oof(240, seed=4, n_folds=3, validation=False)
    with pytest.raises(DataError, match='more folds than ensemble levels'):
        hierarchical_ensemble(three, settings=FAST)
    two_levels = hierarchical_ensemble(three, settings=FAST, overall=False)      # two levels fit in three folds
    assert 'ens_brain' in set(two_levels.predictions.model)


def test_corrected_ages_are_seed_004s_residual_regression(next_fold):
    _, res = next_fold
    cor = corrected_ages(res.predictions)
    for _, g in cor.groupby(['model', 'organ']):
        ols = sm.OLS((g.mu_raw - g.age).to_numpy(), sm.add_constant(g.age.to_numpy())).fit()
        np.testing.assert_allclose(g.gap, ols.resid, atol=1e-8)
        np.testing.assert_allclose(g.mu, g.age + ols.resid, atol=1e-8)


def test_metrics_match_sklearn_and_the_bootstrap_sd_the_analytic_se():
    rng = np.random.default_rng(0); n = 20_000
    big = pd.DataFrame(dict(model='m', organ='brain', subject_id=[f's{i}' for i in range(n)], age=rng.uniform(20, 80, n)))
    big['mu'] = big.age + rng.normal(0, 5, n) * rng.uniform(0.5, 1.5, n)
    r = metrics_with_sd(big, n_boot=800).iloc[0]
    np.testing.assert_allclose([r.mae, r.rmse, r.r2, r.medae],
                               [mean_absolute_error(big.age, big.mu), np.sqrt(mean_squared_error(big.age, big.mu)),
                                r2_score(big.age, big.mu), median_absolute_error(big.age, big.mu)], rtol=1e-9)
    e = (big.mu - big.age).abs()
    assert abs(r.mae_sd / (e.std(ddof=1) / np.sqrt(n)) - 1) < 0.08
    # subjects are resampled: a duplicated subject changes no replicate
    small = big.iloc[:400]
    one, two = metrics_with_sd(small, n_boot=300).iloc[0], metrics_with_sd(pd.concat([small, small]), n_boot=300).iloc[0]
    np.testing.assert_allclose([two.mae_sd, two.r2_sd], [one.mae_sd, one.r2_sd], rtol=1e-9)
    # age groups as a grouping column
    g = metrics_with_sd(add_age_group(small, bins=(20, 50, 80)), by=['model', 'age_group'], n_boot=100)
    assert g.age_group.astype(str).tolist() == ['20-50', '50-80'] and g.n.sum() == 400


def test_ensemble_vs_best_gives_a_paired_interval():
    rng = np.random.default_rng(1); n = 300
    ids = [f's{i}' for i in range(n)]; age = rng.uniform(20, 80, n); e = rng.normal(0, 5, n)
    mk = lambda m, mu: pd.DataFrame(dict(model=m, subject_id=ids, organ='brain', age=age, mu=mu))
    tab = pd.concat([mk('ens_brain', age + e), mk('c1', age + e + np.sign(e)), mk('c2', age + 2 * e)], ignore_index=True)
    r = ensemble_vs_best(tab, 'ens_{organ}', n_boot=200).iloc[0]
    assert r.best == 'c1' and r.n_subjects == n
    np.testing.assert_allclose([r['diff'], r.low, r.high], [-1, -1, -1], atol=1e-9)
    # an ensemble equal to its best candidate: difference 0, interval around it
    same = pd.concat([mk('ens_brain', age + e), mk('c1', age + e), mk('c2', age + 2 * e)], ignore_index=True)
    r0 = ensemble_vs_best(same, {'brain': 'ens_brain'}, n_boot=200).iloc[0]
    assert r0['diff'] == 0 and r0.low <= 0 <= r0.high


def test_reads_cross_fits_table_format():
    "Rows laid out as `cross_fit` writes them (outer model r: test fold r, validation fold r-1, from `outer_split`)."
    rng = np.random.default_rng(7); n = 300
    obs = pd.DataFrame(dict(subject_id=[f'P{i:04d}' for i in range(n)], age=rng.uniform(20, 80, n), modality='mri'))
    folds = outer_folds(obs, k=5, seed=0)
    age = obs.set_index('subject_id').age
    rows = []
    for r in range(5):
        sp = outer_split(folds, r); sp = sp[sp.split != 'train']
        for model, sd in (('unimodal_mri', 5.0), ('pcr_mri', 6.0)):
            a = age.loc[sp.subject_id].to_numpy()
            rows.append(sp.assign(model=model, organ='brain', modality='mri', age=a, mu=a + rng.normal(0, sd, len(sp)), sigma=sd,
                                  outer=r, fold=np.where(sp.split == 'test', r, (r - 1) % 5)))
    oof = pd.concat(rows, ignore_index=True)
    res = hierarchical_ensemble(oof, settings=FAST)
    assert res.mode == 'val'
    t = res.predictions[res.predictions.split == 'test']
    assert len(t) == n and t.subject_id.is_unique and (t.fold == t.outer).all()
    for r in res.records:
        assert {folds[s] for s in r['fit']} <= {(r['outer'] - 1) % 5} and not (r['fit'] & r['applied'])
    held = oof[oof.split == 'test']
    vb = ensemble_vs_best(pd.concat([held, t]), 'ens_{organ}_mri').iloc[0]
    assert vb['diff'] < 0 and vb.high < 0
