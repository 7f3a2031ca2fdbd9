"""Tests written to kill surviving mutants found by `bench/_mutation.py` (mutmut 3) in organage/evaluate/stats.py:
the tables (`age_bin_table`, `site_table`, `wide_predictions`, `nested_models_table`) and the `_jit` decorator.

Each test names the mutants it kills; it asserts behaviour a caller relies on (numbers cross-checked against numpy/pandas,
row selection, column names, error conditions and the fields of `DataError`), not code."""
import numpy as np, pandas as pd, pytest
from hypothesis import given, settings, strategies as st
from organage.core import DataError
from organage.evaluate.predictions import simulate_predictions
from organage.evaluate.stats import age_bin_table, site_table, wide_predictions, nested_models_table, _jit


@pytest.fixture(scope='module')
def preds(): return simulate_predictions(n=120, seed=7)

# ---------------------------------------------------------------------------------------------------------------- age_bin_table

def _ref_bins(age, w, start):
    lo = np.floor(age.min() / w) * w if start is None else start
    return (lo + np.floor((age - lo) / w) * w)

def test_age_bin_table_split_none_uses_every_row_and_start_sets_the_edges(preds):
    # kills x_age_bin_table__mutmut_42 (split=None not passed to metrics_table: only 'test' rows counted),
    # x_age_bin_table__mutmut_28/31 (start not passed to age_bins: bins start at a multiple of the width)
    ab = age_bin_table(preds, widths=(10,), split=None, start=5)
    x = ab[ab.organ != 'all']
    assert x.n.sum() == len(preds)
    lo = _ref_bins(preds.age.to_numpy(), 10, 5)
    ref = preds.assign(age_bin=[f'{a:g}-{a + 10:g}' for a in lo]).groupby(['organ', 'age_bin'])
    got = x.set_index(['organ', 'age_bin'])
    assert set(got.index) == set(ref.groups)
    for k, g in ref:
        e = g.mu - g.age
        assert got.loc[k, 'n'] == len(g)
        assert got.loc[k, 'mae'] == pytest.approx(np.mean(np.abs(e))) and got.loc[k, 'mse'] == pytest.approx(np.mean(e**2))
    assert all(str(b).split('-')[0].endswith('5') for b in x.age_bin)

def test_age_bin_table_works_without_split_column_when_split_none(preds):
    # kills x_age_bin_table__mutmut_42 (metrics_table's default split='test' then needs a split column)
    t = preds.drop(columns='split')
    ab = age_bin_table(t, widths=(20,), split=None)
    assert ab[ab.organ != 'all'].n.sum() == len(t)

@settings(max_examples=15, deadline=None)
@given(ages=st.lists(st.floats(0, 99, allow_nan=False), min_size=3, max_size=30),
       w=st.sampled_from([5, 10, 20]), start=st.sampled_from([None, -3.0, 0.0]))
def test_age_bin_table_bins_match_numpy_floor(ages, w, start):
    # kills x_age_bin_table__mutmut_28/31 (start ignored) on drawn ages; counts per bin equal numpy's floor binning
    a = np.array(ages)
    t = pd.DataFrame(dict(subject_id=[f's{i}' for i in range(len(a))], organ='brain', age=a, mu=a + 1.0))
    ab = age_bin_table(t, widths=(w,), split=None, start=start)
    lo = _ref_bins(a, w, start)
    ref = pd.Series([f'{v:g}-{v + w:g}' for v in lo]).value_counts()
    got = ab.set_index('age_bin')['n'].astype(int)
    assert got.to_dict() == ref.to_dict()

def test_age_bin_table_index_is_a_fresh_range(preds):
    # kills x_age_bin_table__mutmut_48/50/51 (pd.concat without ignore_index: repeated row labels across widths)
    ab = age_bin_table(preds, widths=(10, 20))
    assert list(ab.index) == list(range(len(ab)))
    assert set(ab.width) == {10, 20}

def test_age_bin_table_needs_only_age_and_pred(preds):
    # kills x_age_bin_table__mutmut_19 (columns=('age',) dropped: the default check then demands subject_id and mu)
    t = preds.drop(columns=['subject_id']).rename(columns={'mu': 'p2'})
    ab = age_bin_table(t, widths=(10,), pred='p2')
    assert ab[ab.organ != 'all'].n.sum() == (t.split == 'test').sum()

def test_age_bin_table_checks_pred_on_every_row(preds):
    # kills x_age_bin_table__mutmut_20 (numeric=(pred,) dropped: a non-finite prediction outside the split is not reported)
    t = preds.assign(p2=preds.mu)
    t.loc[t.index[t.split == 'train'][0], 'p2'] = np.nan
    with pytest.raises(DataError, match='p2'): age_bin_table(t, pred='p2')

# ---------------------------------------------------------------------------------------------------------------- site_table

def test_site_table_missing_column_error_fields(preds):
    # kills x_site_table__mutmut_14/17/19/20 (where changed/dropped), x_site_table__mutmut_15/18/22 (found changed/dropped)
    with pytest.raises(DataError, match="no 'scanner' column") as ei: site_table(preds, site='scanner')
    assert ei.value.where == 'predictions'
    assert ei.value.found == ', '.join(preds.columns)
    assert str(ei.value).startswith('predictions: ')

def test_site_table_counts_the_requested_split(preds):
    # kills x_site_table__mutmut_26 (split replaced by None: every row), x_site_table__mutmut_30 (split dropped: always 'test')
    for split in ('test', 'train'):
        s = site_table(preds, split=split)
        s = s[s.organ != 'all'].set_index(['organ', 'site'])
        ref = preds[preds.split == split].groupby(['organ', 'site'])
        assert s.n.sum() == (preds.split == split).sum()
        for k, g in ref:
            assert s.loc[k, 'n'] == len(g)
            assert s.loc[k, 'mae'] == pytest.approx(np.mean(np.abs(g.mu - g.age)))
    assert site_table(preds, split=None).query("organ != 'all'").n.sum() == len(preds)

# ---------------------------------------------------------------------------------------------------------------- wide_predictions

def _two_organs():
    t = simulate_predictions(n=30, organs=('brain', 'heart'), seed=3)
    return pd.concat([t, t.assign(modality='rna', mu=t.mu + 2.0)], ignore_index=True)

def test_wide_predictions_restricts_to_the_organ():
    # kills x_wide_predictions__mutmut_20 (organ ignored), _22/_23 (wrong column name: KeyError), _24 (== turned to !=)
    t = _two_organs()
    w = wide_predictions(t, organ='heart').set_index('subject_id')
    h = t[t.organ == 'heart']
    ref = h.pivot_table(index='subject_id', columns='modality', values='mu', aggfunc='mean')
    assert set(w.index) == set(h.subject_id)
    np.testing.assert_allclose(w.loc[ref.index, 'mu_fusion'], ref['fusion'])
    np.testing.assert_allclose(w.loc[ref.index, 'mu_rna'], ref['rna'])
    np.testing.assert_allclose(w.loc[ref.index, 'age'], h.groupby('subject_id').age.first().loc[ref.index])

def test_wide_predictions_needs_no_organ_column_and_checks_its_own():
    # kills x_wide_predictions__mutmut_12 (the default column check demands 'organ' and 'mu', and misses `columns`)
    t = _two_organs()
    t = t[t.organ == 'brain'].drop(columns='organ').rename(columns={'mu': 'p2'})
    w = wide_predictions(t, pred='p2')
    assert list(w.columns) == ['subject_id', 'age', 'p2_fusion', 'p2_rna'] and len(w) == t.subject_id.nunique()
    with pytest.raises(DataError, match='modality'): wide_predictions(t.drop(columns='modality'), pred='p2')

def test_wide_predictions_refuses_a_non_finite_prediction():
    # kills x_wide_predictions__mutmut_13 (numeric=(pred,) dropped: a NaN prediction is silently averaged away)
    t = _two_organs().assign(p2=lambda d: d.mu)
    t.loc[0, 'p2'] = np.nan
    with pytest.raises(DataError, match='p2'): wide_predictions(t, pred='p2')

# ---------------------------------------------------------------------------------------------------------------- nested_models_table

def _subjects(n=60, seed=0):
    r = np.random.default_rng(seed); age = r.uniform(20, 80, n)
    return pd.DataFrame(dict(age=age, x=age + r.normal(0, 5, n), z=r.normal(0, 1, n),
                             site=r.choice(['A', 'B', 'C'], n), sex=r.choice(['f', 'm'], n)))

def _design(d, num, cats, levels):
    "Independent dummy coding: intercept, numeric columns, one 0/1 column per non-baseline level of the training data."
    cols = [np.ones(len(d))] + [d[c].to_numpy(float) for c in num]
    for c in cats: cols += [(d[c] == lv).to_numpy(float) for lv in levels[c][1:]]
    return np.column_stack(cols)

def _ols(train, test, num, cats=()):
    levels = {c: sorted(train[c].unique()) for c in cats}
    X = _design(train, num, cats, levels); b = np.linalg.lstsq(X, train.age.to_numpy(), rcond=None)[0]
    rss = np.sum((train.age.to_numpy() - X @ b)**2)
    return _design(test, num, cats, levels) @ b, rss, len(train) - X.shape[1]

def test_nested_models_table_evaluates_on_the_test_set():
    # kills x_nested_models_table__mutmut_44 (test ignored: metrics in-sample),
    # _47/_49 (no reindex to the fitted columns: the test set lacks site_C), _48/_50 (fill NaN: NaN metrics), _56 (fill 1.0)
    d = _subjects(80, 1); test = _subjects(30, 2); test = test[test.site != 'C']
    tab = nested_models_table(d, 'age', {'X': ['x'], 'XS': ['x', 'site']}, test=test).set_index('model')
    for name, cats in (('X', ()), ('XS', ('site',))):
        p, _, _ = _ols(d, test, ['x'], cats); e = p - test.age.to_numpy()
        assert tab.loc[name, 'mae'] == pytest.approx(np.mean(np.abs(e)))
        assert tab.loc[name, 'mse'] == pytest.approx(np.mean(e**2))
        assert tab.loc[name, 'r2'] == pytest.approx(1 - np.sum(e**2) / np.sum((test.age - test.age.mean())**2))

def test_nested_models_table_keeps_the_intercept_when_a_test_predictor_is_constant():
    # kills x_nested_models_table__mutmut_26 (add_constant's default has_constant='skip': no intercept for a test set whose
    # predictor is constant, so the reindex fills the intercept with 0)
    d = _subjects(50, 3); test = _subjects(10, 4).assign(x=40.0)
    tab = nested_models_table(d, 'age', {'X': ['x']}, test=test).set_index('model')
    p, _, _ = _ols(d, test, ['x'])
    assert tab.loc['X', 'mae'] == pytest.approx(np.mean(np.abs(p - test.age.to_numpy())))

def test_nested_models_table_columns_predictors_and_anova_text():
    # kills x_nested_models_table__mutmut_59/61/63/66 (predictors column), _69/_72 (every metric instead of mae, mse, r2),
    # _109 (= instead of +=: only the last comparison kept), _111 (text on the other models), _127/_128/_129 (anova column lost),
    # _130/_131 (trailing '; ' kept), _92/_95 (anova of a model without comparisons not '')
    d = _subjects(70, 5)
    models = {'X': ['x'], 'XZ': ['x', 'z'], 'XZS': ['x', 'z', 'sex']}
    tab = nested_models_table(d, 'age', models)
    assert list(tab.columns) == ['model', 'predictors', 'mae', 'mse', 'r2', 'anova', 'p_vs_X', 'p_vs_XZ']
    assert tab.predictors.tolist() == ['x', 'x + z', 'x + z + sex']
    tab = tab.set_index('model')
    assert tab.loc['X', 'anova'] == ''
    fits = {m: _ols(d, d, [c for c in cols if c != 'sex'], [c for c in cols if c == 'sex']) for m, cols in models.items()}
    def F(a, b):
        (_, ra, da), (_, rb, db) = fits[a], fits[b]
        from scipy import stats
        f = ((ra - rb) / (da - db)) / (rb / db); return f, stats.f.sf(f, da - db, db)
    parts = {b: [] for b in models}
    for a, b in [('X', 'XZ'), ('X', 'XZS'), ('XZ', 'XZS')]:
        f, p = F(a, b); parts[b].append(f"{a} vs {b}: F={f:.3g}, p={p:.3g}")
        assert tab.loc[b, f'p_vs_{a}'] == pytest.approx(p, rel=1e-6)
    assert tab.loc['XZ', 'anova'] == '; '.join(parts['XZ'])
    assert tab.loc['XZS', 'anova'] == '; '.join(parts['XZS'])
    assert np.isnan(tab.loc['X', 'p_vs_X']) and np.isnan(tab.loc['XZ', 'p_vs_XZ'])

def test_nested_models_table_no_comparison_gives_empty_anova():
    # kills x_nested_models_table__mutmut_85 (names[i - 1:]: a smaller model listed later is compared with an earlier larger one),
    # _88 (<=: two models with the same predictors are compared, and then refused as not nested), _92/_95 (anova not '')
    d = _subjects(40, 6)
    for models in ({'big': ['x', 'z'], 'small': ['x']}, {'m1': ['x', 'z'], 'm2': ['z', 'x']}):
        tab = nested_models_table(d, 'age', models)
        assert list(tab.columns) == ['model', 'predictors', 'mae', 'mse', 'r2', 'anova']
        assert tab['anova'].tolist() == ['', '']

def test_nested_models_table_refuses_pairs_that_are_not_nested():
    # kills x_nested_models_table__mutmut_98 (<=: equal predictor sets accepted),
    # _100/_102 (message lost), _101/_103 (expected lost)
    d = _subjects(40, 7)
    models = {'a': ['x'], 'b': ['x'], 'c': ['z']}
    for pair in (('a', 'b'), ('a', 'c')):
        with pytest.raises(DataError, match=f"models '{pair[0]}' and '{pair[1]}' are not nested") as ei:
            nested_models_table(d, 'age', models, comparisons=[pair])
        assert ei.value.expected == f"the predictors of {pair[0]} inside those of {pair[1]}"

def test_nested_models_table_missing_column_error():
    # kills x_nested_models_table__mutmut_4 (no check: KeyError), _7/_9/_11/_12 (message), _8/_10/_13/_14 (where)
    d = _subjects(30, 8)
    for data, test, where in ((d, None, 'data'), (d, d.drop(columns='z'), 'test')):
        with pytest.raises(DataError, match=r'missing column\(s\) z$') as ei:
            nested_models_table(data if test is not None else d.drop(columns='z'), 'age', {'XZ': ['x', 'z']}, test=test)
        assert ei.value.where == f'nested_models_table {where}'   # which table lacks it
        assert str(ei.value) == f'nested_models_table {where}: missing column(s) z'
    with pytest.raises(DataError, match=r'missing column\(s\) q, w$'):
        nested_models_table(d, 'age', {'Q': ['q', 'x', 'w']})

# ---------------------------------------------------------------------------------------------------------------- _jit

def _plus_one(x): return x + 1

def test_jit_caches_and_passes_options():
    # kills x__jit__mutmut_5/6/8 (cache=True lost: compiled kernels not cached on disk), _7 (options such as fastmath dropped),
    # _4 (the function not compiled)
    import numba
    d = _jit(fastmath=True)(_plus_one)
    assert isinstance(d, numba.core.registry.CPUDispatcher) and d.py_func is _plus_one
    assert type(d._cache).__name__ != 'NullCache'
    assert d.targetoptions.get('fastmath') is True

def test_jit_falls_back_without_a_cache_locator():
    # kills x__jit__mutmut_9 (fallback compiles None): a function with no source file cannot be cached, it still compiles
    import numba
    ns = {}; exec(compile('def f(x):\n    return 2 * x\n', '<string>', 'exec'), ns)
    d = _jit(fastmath=True)(ns['f'])
    assert isinstance(d, numba.core.registry.CPUDispatcher) and d.py_func is ns['f']
    assert d(3) == 6 and d.targetoptions.get('fastmath') is True


def test_nested_models_table_codes_test_rows_with_the_training_levels():
    # a test set holding only the training data's non-baseline level was coded on its own (drop_first dropped that level)
    # and every test row was predicted as the baseline; the bug found by the x_nested_models_table__mutmut_17/20/22 survivors
    r = np.random.default_rng(3); n = 400
    d = pd.DataFrame(dict(x=r.uniform(20, 80, n), sex=r.choice(['f', 'm'], n)))
    d['age'] = d.x + 10 * (d.sex == 'm') + r.normal(0, 1, n)
    t = d[d.sex == 'm']
    got = nested_models_table(d, 'age', {'XS': ['x', 'sex']}, test=t)
    X = np.column_stack([np.ones(n), d.x, (d.sex == 'm').astype(float)])
    beta = np.linalg.lstsq(X, d.age.to_numpy(), rcond=None)[0]
    pred = np.column_stack([np.ones(len(t)), t.x, np.ones(len(t))]) @ beta
    np.testing.assert_allclose(got.mae.iloc[0], np.mean(np.abs(pred - t.age.to_numpy())), rtol=1e-9)
    assert got.mae.iloc[0] < 2          # read as the baseline it was about 10
    with pytest.raises(DataError, match='not seen in the training rows: sex_x'):
        nested_models_table(d, 'age', {'XS': ['x', 'sex']}, test=t.assign(sex='x'))
