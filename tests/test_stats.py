"Statistics: Wilcoxon against scipy/pingouin, bootstrap against scipy.stats.bootstrap and a numpy reference, properties."
import numpy as np, pandas as pd, pytest, numba
import scipy.stats as sps
from hypothesis import given, settings, assume, strategies as st, HealthCheck
from sklearn.metrics import r2_score, median_absolute_error
from organage.core import DataError, NotEnoughDataError
from organage.evaluate.predictions import simulate_predictions
from organage.evaluate.stats import (bootstrap_ci, bootstrap_replicates, resample_indices, wilcoxon_by_organ, rank_biserial,
                                     bootstrap_by_organ, pairwise_mae, metrics_table, age_bin_table, site_table,
                                     nested_models_table, wide_predictions, organ_table, bh_adjust, STATS)
from organage.evaluate.stats import _jackknife, _prepare

REF = dict(mae=lambda y, p: np.mean(np.abs(p - y)), mse=lambda y, p: np.mean((p - y)**2),
           rmse=lambda y, p: np.sqrt(np.mean((p - y)**2)), r2=r2_score,
           medae=lambda y, p: np.median(np.abs(p - y)), mean_gap=lambda y, p: np.mean(p - y))

def data(n=300, seed=0, sd=8.0):
    r = np.random.default_rng(seed); y = r.uniform(18, 90, n)
    return y, y + r.normal(1, sd, n) + r.exponential(3, n)


# ---------------------------------------------------------------- Wilcoxon
def test_wilcoxon_identical_to_scipy():
    r = np.random.default_rng(1)
    sizes = dict(brain=563, cortex=270, heart=913, small=30, lung=20000)
    shift = dict(brain=0, cortex=1.5, heart=0.1, small=0, lung=-6.9)
    t = pd.concat([pd.DataFrame(dict(organ=o, age=50.0, mu=50 + np.round(r.normal(shift[o], 10, n), 1)))
                   for o, n in sizes.items()], ignore_index=True)        # rounding: ties and zeros
    w = wilcoxon_by_organ(t, split=None).set_index('organ')
    for o in sizes:
        d = t.mu[t.organ == o].to_numpy() - 50
        ref = sps.wilcoxon(d)
        assert w.loc[o, 'statistic'] == ref.statistic and w.loc[o, 'p'] == ref.pvalue
        assert w.loc[o, 'n'] == len(d) and w.loc[o, 'n_nonzero'] == np.count_nonzero(d)
    np.testing.assert_allclose(w.loc[list(sizes), 'p_adj'],
                               __import__('statsmodels.stats.multitest', fromlist=['x']).multipletests(
                                   w.loc[list(sizes), 'p'], method='fdr_bh')[1])

def test_rank_biserial_matches_pingouin_small():
    import pingouin as pg
    r = np.random.default_rng(2)
    for n in (8, 25, 120):
        x = np.round(r.normal(0.5, 2, n)); y = np.round(r.normal(0, 2, n))   # ties and zeros
        ref = pg.wilcoxon(x, y)['RBC'].iloc[0]
        assert rank_biserial(x - y) == pytest.approx(ref, abs=1e-12)

def test_wilcoxon_small_and_zero_and_subject_level():
    t = pd.DataFrame(dict(organ=['a'] * 4 + ['z'] * 12, subject_id=[f's{i}' for i in range(16)], age=40.0,
                          mu=[41, 39, 45, 40] + [40.0] * 12))
    w = wilcoxon_by_organ(t, split=None).set_index('organ')
    assert np.isnan(w.loc['a', 'p']) and w.loc['a', 'status'].startswith('not enough data')
    assert w.loc['z', 'p'] == 1.0 and w.loc['z', 'p_adj'] == 1.0
    # a subject with two rows counts once at subject level
    t2 = pd.DataFrame(dict(organ='a', subject_id=np.repeat([f's{i}' for i in range(20)], 2), age=40.0,
                           mu=40 + np.repeat(np.arange(1, 21.0), 2)))
    assert wilcoxon_by_organ(t2, split=None, subject_level=True).n.item() == 20

def test_wilcoxon_large_is_cheap():
    # 200k gaps: must not go near pingouin's n x n CLES matrix
    r = np.random.default_rng(0)
    t = pd.DataFrame(dict(organ='lung', age=50.0, mu=50 + r.normal(-0.05, 12, 200_000)))
    w = wilcoxon_by_organ(t, split=None)
    assert w.p.item() == sps.wilcoxon(t.mu - 50).pvalue


# ---------------------------------------------------------------- bootstrap: exactness
@pytest.mark.parametrize('grouped', [False, True])
def test_replicates_equal_numpy_reference(grouped):
    """Each replicate equals the statistic computed directly on the resample drawn by `resample_indices`."""
    y, p = data(120, seed=3)
    groups = np.repeat(np.arange(40), 3)[np.random.default_rng(0).permutation(120)] if grouped else None
    est, reps, prep = bootstrap_replicates(y, p, STATS, 20, seed=11, groups=groups)
    e = p - y
    if grouped:
        ids = np.unique(groups.astype(str))
        rows = [np.flatnonzero(groups.astype(str) == s) for s in ids]
    else:
        order = np.lexsort((y, e, np.abs(e))); rows = [[i] for i in order]
    for b in range(20):
        idx = np.concatenate([rows[k] for k in resample_indices(11, b, len(rows))])
        for s in STATS:
            assert reps[s][b] == pytest.approx(REF[s](y[idx], p[idx]), rel=1e-10, abs=1e-10), (s, b)
    for s in STATS: assert est[s] == pytest.approx(REF[s](y, p), rel=1e-12)

def test_median_against_sklearn():
    y, p = data(501, seed=4)
    assert bootstrap_ci(y, p, 'medae', 10).estimate.item() == median_absolute_error(y, p)

@pytest.mark.parametrize('grouped', [False, True])
def test_closed_form_jackknife_equals_brute_force(grouped):
    y, p = data(60, seed=5)
    groups = np.random.default_rng(1).integers(0, 25, 60) if grouped else None
    comps, vals, m, ov, oc = _prepare(y, p, groups, list(STATS))
    g = groups.astype(str) if grouped else None
    ids = np.unique(g) if grouped else None
    e = p - y; order = np.lexsort((y, e, np.abs(e)))
    for s in STATS:
        jk = _jackknife(s, comps, vals, m, ov, oc)
        for k in range(len(m)):
            keep = (g != ids[k]) if grouped else np.ones(60, bool)
            if not grouped: keep[order[k]] = False
            assert jk[k] == pytest.approx(REF[s](y[keep], p[keep]), rel=1e-9, abs=1e-9), (s, k)

def test_same_result_for_any_thread_count():
    y, p = data(3000, seed=6)
    n0 = numba.get_num_threads()
    try:
        numba.set_num_threads(1); a = bootstrap_ci(y, p, STATS, 300, method='both', seed=9)
        numba.set_num_threads(n0); b = bootstrap_ci(y, p, STATS, 300, method='both', seed=9)
    finally: numba.set_num_threads(n0)
    pd.testing.assert_frame_equal(a, b)


# ---------------------------------------------------------------- bootstrap: against scipy.stats.bootstrap
def _scipy_stat(s):
    f = REF[s]
    if s == 'r2':
        return lambda y, p, axis=-1: 1 - np.sum((p - y)**2, axis) / np.sum((y - y.mean(axis, keepdims=True))**2, axis)
    if s == 'medae': return lambda y, p, axis=-1: np.median(np.abs(p - y), axis)
    base = dict(mae=np.abs, mse=np.square, rmse=np.square, mean_gap=lambda x: x)[s]
    if s == 'rmse': return lambda y, p, axis=-1: np.sqrt(np.mean((p - y)**2, axis))
    return lambda y, p, axis=-1: np.mean(base(p - y), axis)

@pytest.mark.parametrize('method', ['percentile', 'bca'])
def test_intervals_agree_with_scipy_within_monte_carlo_error(method):
    y, p = data(400, seed=7)
    B = 10_000
    ours = bootstrap_ci(y, p, STATS, B, method=method, seed=1).set_index('statistic')
    for s in STATS:
        ref = sps.bootstrap((y, p), _scipy_stat(s), paired=True, vectorized=True, n_resamples=B, batch=500,
                            method='BCa' if method == 'bca' else 'percentile', rng=np.random.default_rng(2))
        se = ref.standard_error
        # MC sd of a 2.5% quantile of B draws ~ 2.7 se / sqrt(B); two independent runs: x sqrt(2); allow 4 sd
        # the median's bootstrap distribution is lumpy (few distinct values): measured MC sd ~3x the smooth formula
        tol = 4 * np.sqrt(2) * 2.7 * se / np.sqrt(B) * (1.5 if method == 'bca' else 1) * (3 if s == 'medae' else 1)
        assert abs(ours.loc[s, 'low'] - ref.confidence_interval.low) < tol, (s, ours.loc[s, 'low'], ref.confidence_interval)
        assert abs(ours.loc[s, 'high'] - ref.confidence_interval.high) < tol, (s, ours.loc[s, 'high'], ref.confidence_interval)
        assert ours.loc[s, 'se'] == pytest.approx(se, rel=0.05)

def test_bca_is_told_apart_from_percentile_on_a_skewed_statistic():
    """On skewed errors (log-normal, mostly positive, n=80) BCa and percentile bounds differ by several times the Monte-Carlo
    tolerance: ours (BCa) must match scipy's BCa within it, while the percentile bounds miss it (so this check would fail
    if `method='bca'` silently answered percentile intervals)."""
    r = np.random.default_rng(3); n = 80
    y = r.uniform(20, 80, n); p = y + r.lognormal(1.0, 1.0, n) * r.choice([-1, 1], n, p=[0.2, 0.8])
    B = 20_000
    ours = bootstrap_ci(y, p, ('mse', 'rmse', 'mae'), B, method='both', seed=1)
    for s in ('mse', 'rmse', 'mae'):
        ref = sps.bootstrap((y, p), _scipy_stat(s), paired=True, vectorized=True, n_resamples=B, batch=2000, method='BCa',
                            rng=np.random.default_rng(2))
        tol = 4 * np.sqrt(2) * 2.7 * ref.standard_error / np.sqrt(B) * 1.5      # as in the test above
        o = ours[ours.statistic == s].set_index('method')
        lo, hi = ref.confidence_interval.low, ref.confidence_interval.high
        assert abs(o.loc['bca', 'low'] - lo) < tol and abs(o.loc['bca', 'high'] - hi) < tol, (s, o, ref.confidence_interval, tol)
        assert max(abs(o.loc['percentile', 'low'] - lo), abs(o.loc['percentile', 'high'] - hi)) > 2.5 * tol, (s, o, tol)


def test_bca_acceleration_matches_scipy_exactly_given_replicates():
    """Our closed-form jackknife gives scipy's BCa levels: feed both the same bootstrap distribution."""
    from scipy.stats._resampling import _bca_interval
    from organage.evaluate.stats import _bca_levels
    y, p = data(200, seed=8)
    est, reps, prep = bootstrap_replicates(y, p, ('mae', 'medae', 'r2'), 2000, seed=3)
    for s in ('mae', 'medae', 'r2'):
        jk = _jackknife(s, prep['comps'], prep['vals'], prep['m'], prep['ord_val'], prep['ord_clu'])
        a1, a2 = _bca_levels(reps[s], est[s], jk, 0.025)
        f = _scipy_stat(s)
        # paired data as scipy handles it: resample an index array
        r1, r2, _ = _bca_interval((np.arange(len(y)),), lambda i, axis=-1: f(y[i], p[i], axis), axis=-1, alpha=0.025,
                                  theta_hat_b=reps[s], batch=None, xp=np)
        assert a1 == pytest.approx(float(r1), rel=1e-9) and a2 == pytest.approx(float(r2), rel=1e-9)


# ---------------------------------------------------------------- bootstrap: properties (hypothesis)
finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.floats(18, 90), finite), min_size=8, max_size=200), st.integers(0, 2**32))
def test_ci_contains_estimate(rows, seed):
    y = np.array([r[0] for r in rows]); p = y + np.array([r[1] for r in rows])
    ci = bootstrap_ci(y, p, ('mae', 'mse', 'rmse', 'mean_gap'), 400, seed=seed)
    assert ((ci.low <= ci.estimate + 1e-9) & (ci.estimate <= ci.high + 1e-9)).all()

@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(finite, min_size=15, max_size=100, unique=True), st.sampled_from(['mae', 'rmse', 'mean_gap']))
def test_more_replicates_never_widen_monte_carlo_spread(gaps, stat):
    # Continuous statistics of non-degenerate data. (For a lumpy bootstrap distribution, e.g. the median of a few
    # distinct values, a bound sitting exactly on an atom can be constant at small B: hypothesis finds such cases.)
    assume(np.unique(np.round(gaps, 3)).size >= 10)
    y = np.full(len(gaps), 50.0); p = y + np.array(gaps)
    def spread(B):
        b = np.array([bootstrap_ci(y, p, stat, B, seed=s)[['low', 'high']].to_numpy()[0] for s in range(30)])
        return b.std(0)
    small, large = spread(100), spread(1600)
    assert (large <= small + 1e-12).all()

def test_more_replicates_shrink_median_spread_on_realistic_data():
    y, p = data(500, seed=10)
    sd = {B: np.array([bootstrap_ci(y, p, 'medae', B, seed=s)[['low', 'high']].to_numpy()[0] for s in range(30)]).std(0)
          for B in (100, 1600)}
    assert (sd[1600] < sd[100]).all()

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(18, 90, allow_nan=False), min_size=10, max_size=300))
def test_constant_zero_gap_gives_p_one(ages):
    t = pd.DataFrame(dict(organ='x', age=ages))
    t['mu'] = t.age
    w = wilcoxon_by_organ(t, split=None)
    assert w.p.item() == 1.0 and w.n.item() == len(ages) and w.n_nonzero.item() == 0

@st.composite
def _rows_and_permutation(draw):
    "Ages, gaps (rounded: ties), subject ids (some repeated) and a permutation of the rows, all drawn."
    rows = draw(st.lists(st.tuples(st.floats(18, 90, allow_nan=False), st.floats(-30, 30, allow_nan=False).map(lambda v: round(v, 1)),
                                   st.integers(0, 40)), min_size=12, max_size=150))
    perm = draw(st.permutations(range(len(rows))))
    return rows, np.array(perm)

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rows_and_permutation(), st.booleans(), st.integers(0, 2**32))
def test_permuting_rows_changes_nothing(rows_perm, grouped, seed):
    rows, perm = rows_perm; n = len(rows)
    y = np.array([v[0] for v in rows]); p = y + np.array([v[1] for v in rows])
    g = np.array([v[2] for v in rows]) if grouped else None
    assume(g is None or len(np.unique(g)) >= 2)
    a = bootstrap_ci(y, p, STATS, 200, method='both', seed=seed, groups=g)
    b = bootstrap_ci(y[perm], p[perm], STATS, 200, method='both', seed=seed, groups=None if g is None else g[perm])
    pd.testing.assert_frame_equal(a, b, rtol=1e-10)
    t = pd.DataFrame(dict(subject_id=[f's{i}' for i in range(n)], organ=np.where(np.arange(n) % 2, 'a', 'b'), age=y, mu=p))
    pd.testing.assert_frame_equal(organ_table(t, split=None, n_resamples=100, seed=seed),
                                  organ_table(t.iloc[perm], split=None, n_resamples=100, seed=seed), rtol=1e-10)


# ---------------------------------------------------------------- organ-level helpers
def test_subject_level_resampling_when_subjects_repeat():
    t = simulate_predictions(n=200, organs=('lung',), seed=1)
    t2 = pd.concat([t, t.assign(mu=t.mu + 1)], ignore_index=True)     # two radiographs per patient
    b = bootstrap_by_organ(t2, stats=('mae',), split=None, n_resamples=200)
    assert b.n.item() == 400 and b.n_clusters.item() == 200
    assert bootstrap_by_organ(t, stats=('mae',), split=None, n_resamples=200).n_clusters.item() == 200
    assert bootstrap_by_organ(t2, stats=('mae',), split=None, n_resamples=200, resample='row').n_clusters.item() == 400

def test_pairwise_detects_difference_and_not_equality():
    t = simulate_predictions(n=800, organs=('a', 'b', 'c'), seed=2)
    t.loc[t.organ == 'c', 'mu'] += np.random.default_rng(0).normal(0, 8, 800)
    pw = pairwise_mae(t, split=None, n_resamples=2000).set_index(['organ_a', 'organ_b'])
    assert pw.loc[('a', 'c'), 'p'] < 0.01 and pw.loc[('b', 'c'), 'p'] < 0.01
    assert pw.loc[('a', 'b'), 'p'] > 0.01
    assert (pw.low <= pw['diff']).all() and (pw['diff'] <= pw.high).all()
    np.testing.assert_allclose(pw.p_adj, bh_adjust(pw.p))

def test_tables():
    t = simulate_predictions(n=400, seed=3)
    ab = age_bin_table(t, widths=(10, 20))
    sub = t[t.split == 'test']
    for w in (10, 20):
        x = ab[(ab.width == w) & (ab.organ != 'all')]
        assert x.n.sum() == len(sub)
    m = metrics_table(t).set_index('organ')
    e = (sub.mu - sub.age)[sub.organ == 'heart']
    assert m.loc['heart', 'mse'] == pytest.approx(np.mean(e**2)) and m.loc['heart', 'residual_sd'] == pytest.approx(e.std())
    s = site_table(t); assert set(s.site) == {'A', 'B', 'C'}
    with pytest.raises(DataError, match="no 'scanner' column"): site_table(t, site='scanner')

def test_nested_anova_matches_statsmodels():
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm
    r = np.random.default_rng(4); n = 400; age = r.uniform(20, 90, n)
    d = pd.DataFrame(dict(age=age, mu_mri=age + r.normal(0, 5, n), mu_rna=age + r.normal(0, 7, n),
                          sex=r.choice(['female', 'male'], n)))
    tab = nested_models_table(d, 'age', {'T': ['mu_mri'], 'TA': ['mu_mri', 'mu_rna'], 'TAS': ['mu_mri', 'mu_rna', 'sex']}).set_index('model')
    ref = anova_lm(smf.ols('age ~ mu_mri + mu_rna', d).fit(), smf.ols('age ~ mu_mri + mu_rna + sex', d).fit())
    assert tab.loc['TAS', 'p_vs_TA'] == pytest.approx(ref['Pr(>F)'].iloc[1])
    assert tab.loc['TA', 'r2'] == pytest.approx(smf.ols('age ~ mu_mri + mu_rna', d).fit().rsquared)

def test_wide_predictions():
    t = simulate_predictions(n=50, organs=('brain',), seed=0)
    t = pd.concat([t, t.assign(modality='rna', mu=t.mu + 1)])
    w = wide_predictions(t, extra=('sex',))
    assert list(w.columns) == ['subject_id', 'age', 'sex', 'mu_fusion', 'mu_rna'] and len(w) == 50

def test_organ_table_csv(tmp_path):
    t = simulate_predictions(n=300, seed=5)
    t = pd.concat([t, pd.DataFrame(dict(subject_id=['k1', 'k2'], organ='kidney', modality='fusion', split='test',
                                        age=[50., 60.], mu=[52., 58.], sigma=1.0))])
    tab = organ_table(t, n_resamples=300, path=tmp_path / 'table3.csv')
    back = pd.read_csv(tmp_path / 'table3.csv')
    assert list(back.columns) == ['organ', 'n', 'mae', 'residual_sd', 'mean_gap', 'median_gap', 'wilcoxon_w', 'wilcoxon_p',
                                  'wilcoxon_p_adj', 'rank_biserial', 'status', 'mae_ci_low', 'mae_ci_high']
    k = back.set_index('organ').loc['kidney']
    assert np.isnan(k.wilcoxon_p) and np.isnan(k.mae_ci_low) and 'not enough data' in k.status and k.n == 2
    ok = back[back.organ != 'kidney']
    assert (ok.mae_ci_low < ok.mae).all() and (ok.mae < ok.mae_ci_high).all()


# ---------------------------------------------------------------- bad input
def test_bad_input():
    y, p = data(50)
    with pytest.raises(DataError, match='differ in length'): bootstrap_ci(y, p[:-1])
    with pytest.raises(DataError, match='y_pred: non-finite'): bootstrap_ci(y, np.r_[p[:-1], np.inf])
    with pytest.raises(DataError, match='y_true: non-finite'): bootstrap_ci(np.r_[np.nan, y[1:]], p)
    with pytest.raises(NotEnoughDataError): bootstrap_ci(y[:1], p[:1])
    with pytest.raises(NotEnoughDataError, match='2 subjects'): bootstrap_ci(y, p, groups=np.zeros(50))
    with pytest.raises(DataError, match='groups differ'): bootstrap_ci(y, p, groups=np.zeros(3))
    with pytest.raises(DataError, match='method'): bootstrap_ci(y, p, method='basic')
    t = simulate_predictions(n=30)
    t.loc[4, 'age'] = np.nan
    with pytest.raises(DataError, match='column age'): wilcoxon_by_organ(t)
    with pytest.raises(DataError, match='column age'): organ_table(t)
    with pytest.raises(DataError, match='no rows'): wilcoxon_by_organ(t.iloc[:0])
    with pytest.raises(DataError, match="split == 'holdout'"): wilcoxon_by_organ(simulate_predictions(n=30), split='holdout')
    b = bootstrap_by_organ(simulate_predictions(n=30, organs=('a',)).head(5), split=None, stats=('mae',))
    assert b.status.item().startswith('not enough data')


def test_known_traps_are_unreachable(monkeypatch):
    """pingouin.wilcoxon (n x n CLES) and scipy.stats.bootstrap (replicate matrix) are never called by our code paths."""
    import pingouin, scipy.stats
    def boom(*a, **k): raise AssertionError('trap reached')
    monkeypatch.setattr(pingouin, 'wilcoxon', boom); monkeypatch.setattr(scipy.stats, 'bootstrap', boom)
    t = simulate_predictions(n=300, seed=9)
    organ_table(t, n_resamples=200); pairwise_mae(t, n_resamples=200); wilcoxon_by_organ(t)
    bootstrap_by_organ(t, n_resamples=200, method='both')

def test_too_few_subjects_is_an_entry_not_an_error():
    # 40 rows but only 4 patients: subject-level resampling has too few units for an interval
    t = pd.DataFrame(dict(subject_id=np.repeat(['p1', 'p2', 'p3', 'p4'], 10), organ='lung', age=np.repeat([30., 40, 50, 60], 10)))
    t['mu'] = t.age + np.random.default_rng(0).normal(0, 5, 40)
    b = bootstrap_by_organ(t, split=None, stats=('mae',), n_resamples=100)
    assert b.status.item() == 'not enough data (n=4 subjects < 10)'
    tab = organ_table(t, split=None, n_resamples=100)
    assert np.isnan(tab.mae_ci_low.item()) and tab.wilcoxon_p.notna().item()   # rows suffice for the rank test
    assert len(pairwise_mae(pd.concat([t, t.assign(organ='x', subject_id=[f's{i}' for i in range(40)])]), split=None, n_resamples=100)) == 0


def _paired_organs(n=300, seed=0, shared_sd=10.0):
    "Two organs measured on the same subjects, errors sharing a per-subject component."
    r = np.random.default_rng(seed); age = r.uniform(20, 80, n); u = r.normal(0, shared_sd, n)
    return pd.concat([pd.DataFrame(dict(subject_id=[f's{i:04d}' for i in range(n)], organ=o, age=age,
                                        mu=age + u + r.normal(0, 3, n))) for o in ('heart', 'liver')], ignore_index=True)

def test_joint_pairwise_equals_numpy_reference():
    from organage.evaluate.stats import _joint_replicates
    t = _paired_organs(60).sample(frac=0.8, random_state=1)          # not every subject has both organs
    t['_e'] = t.mu - t.age
    parts = [(('heart',), t[t.organ == 'heart']), (('liver',), t[t.organ == 'liver'])]
    out = _joint_replicates(parts, 'mae', 15, seed=4)
    ids = np.unique(t.subject_id.astype(str))
    for b in range(15):
        drawn = ids[resample_indices(4, b, len(ids))]
        for (k, g) in parts:
            rows = pd.concat([g[g.subject_id == s] for s in drawn])
            assert out[k][1][b] == pytest.approx(np.abs(rows._e).mean(), rel=1e-12)
    assert out[('heart',)][0] == pytest.approx(np.abs(parts[0][1]._e).mean())

def test_joint_pairwise_keeps_the_correlation():
    t = _paired_organs(400)
    j = pairwise_mae(t, split=None, n_resamples=2000)
    i = pairwise_mae(t, split=None, n_resamples=2000, joint=False)
    assert j.joint.item() and not i.joint.item()
    assert (j.high - j.low).item() < 0.6 * (i.high - i.low).item()   # correlated errors: a much tighter difference
    with pytest.raises(DataError, match='joint resampling supports'): pairwise_mae(t, split=None, stat='medae')
    assert not pairwise_mae(t, split=None, stat='medae', joint=False, n_resamples=200).empty
