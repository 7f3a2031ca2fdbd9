"""Tests written to kill surviving mutants found by `bench/_mutation.py` (mutmut 3) in organage/evaluate/stats.py:
`pairwise_mae`, `_joint_replicates` (subject-level joint resampling) and the error fields of `nested_models_table`.

Each test names the mutants it kills; it asserts behaviour a caller relies on (estimates, intervals, p-values, defaults,
which groups are compared, error messages), cross-checked against numpy where a number is involved."""
import logging, warnings
import numpy as np, pandas as pd, pytest
from hypothesis import given, settings, strategies as st
from organage.core import DataError
from organage.evaluate.stats import pairwise_mae, bootstrap_replicates, resample_indices, nested_models_table, _group_seed


def _shared(n=12, seed=0, organs=('brain', 'heart'), scale=(3.0, 6.0)):
    "Every subject has one row per organ (groups share subjects: joint resampling)."
    rng = np.random.default_rng(seed); age = rng.uniform(30, 80, n); rows = []
    for o, s in zip(organs, scale):
        rows.append(pd.DataFrame(dict(subject_id=[f'S{i:03d}' for i in range(n)], organ=o, age=age,
                                      mu=age + rng.normal(0, s, n), split='test')))
    return pd.concat(rows, ignore_index=True)


def _separate(sizes=(12, 14), seed=0, reps=1):
    "Distinct subjects per organ, each with `reps` rows (no sharing: independent resampling)."
    rng = np.random.default_rng(seed); rows = []
    for j, n in enumerate(sizes):
        ids = np.repeat([f'{"abcdefgh"[j]}{i:03d}' for i in range(n)], reps)
        age = rng.uniform(30, 80, len(ids))
        rows.append(pd.DataFrame(dict(subject_id=ids, organ=f'o{j}', age=age, mu=age + rng.normal(0, 2 + 2 * j, len(ids)),
                                      split='test')))
    return pd.concat(rows, ignore_index=True)


def _joint_reference(t, stat, B, seed, level=0.95):
    "numpy re-implementation of the joint subject bootstrap from `resample_indices`: (est_a, est_b, low, high, p)."
    ids = np.unique(t['subject_id'].astype(str)); K = len(ids)
    f = dict(mae=np.abs, mse=np.square, rmse=np.square, mean_gap=lambda e: e)[stat]
    per = []
    for o in sorted(t['organ'].unique()):
        g = t[t['organ'] == o]; e = (g['mu'] - g['age']).to_numpy()
        pos = np.searchsorted(ids, g['subject_id'].astype(str).to_numpy())
        per.append((np.bincount(pos, f(e), K), np.bincount(pos, minlength=K).astype(float)))
    reps, ests = [], []
    for s, c in per:
        cnt = np.array([np.bincount(resample_indices(seed, b, K), minlength=K) for b in range(B)], float)
        r = (cnt @ s) / (cnt @ c); est = s.sum() / c.sum()
        if stat == 'rmse': r, est = np.sqrt(r), np.sqrt(est)
        reps.append(r); ests.append(est)
    d = reps[0] - reps[1]; a = (1 - level) / 2
    p = min(1.0, 2 * min(1 + np.sum(d <= 0), 1 + np.sum(d >= 0)) / (B + 1))
    lo, hi = np.quantile(d, [a, 1 - a])
    return ests[0], ests[1], lo, hi, p


@pytest.mark.parametrize('stat', ['mae', 'rmse', 'mean_gap'])
def test_joint_pairwise_matches_a_numpy_reference(stat):
    # kills x__joint_replicates__mutmut_137/139/140/143 (rmse not square-rooted, or sqrt(None)),
    # x_pairwise_mae__mutmut_160/163 (alpha (1-level)*2 or /3: wrong interval), _183/_186/_192/_195/_197/_201/_202
    # (p-value formula changed); estimates are cross-checked on the raw errors
    t = _shared(n=15, seed=3)
    out = pairwise_mae(t, stat=stat, n_resamples=400, seed=7, level=0.9)
    assert len(out) == 1 and bool(out['joint'].iloc[0])
    ea, eb, lo, hi, p = _joint_reference(t, stat, 400, 7, level=0.9)
    r = out.iloc[0]
    e = {o: (g['mu'] - g['age']).to_numpy() for o, g in t.groupby('organ')}
    direct = dict(mae=lambda x: np.abs(x).mean(), rmse=lambda x: np.sqrt(np.mean(x**2)), mean_gap=np.mean)[stat]
    np.testing.assert_allclose([r[f'{stat}_a'], r[f'{stat}_b']], [direct(e['brain']), direct(e['heart'])], rtol=1e-12)
    np.testing.assert_allclose([r[f'{stat}_a'], r[f'{stat}_b'], r['diff']], [ea, eb, ea - eb], rtol=1e-12)
    np.testing.assert_allclose([r['low'], r['high']], [lo, hi], rtol=1e-9, atol=1e-9)
    assert r['p'] == pytest.approx(p, abs=2.5 / 401)
    assert r['p_adj'] == pytest.approx(r['p'])   # one comparison: BH leaves it


def test_joint_identical_groups_give_p_one_and_zero_interval():
    # kills x_pairwise_mae__mutmut_194/_199 (d < 0 / d > 0: ties at zero no longer counted, p tiny),
    # _183 (p capped at 2.0 instead of 1.0): two organs with identical errors resampled jointly have d == 0 in every replicate
    t = _shared(n=12, seed=1)
    t.loc[t['organ'] == 'heart', 'mu'] = t.loc[t['organ'] == 'brain', 'mu'].to_numpy()
    out = pairwise_mae(t, n_resamples=300, seed=2)
    assert out['p'].iloc[0] == 1.0 and out['low'].iloc[0] == 0 and out['high'].iloc[0] == 0 and out['diff'].iloc[0] == 0


def test_joint_seed_is_taken_modulo_2_64():
    # kills x__joint_replicates__mutmut_107/108 (seed % 3**64 or % 2**65: seeds -1 and 2**64 overflow uint64)
    t = _shared(n=12, seed=4)
    a = pairwise_mae(t, n_resamples=200, seed=0); b = pairwise_mae(t, n_resamples=200, seed=2**64)
    pd.testing.assert_frame_equal(a, b)
    c = pairwise_mae(t, n_resamples=200, seed=-1); d = pairwise_mae(t, n_resamples=200, seed=2**64 - 1)
    pd.testing.assert_frame_equal(c, d)


def test_joint_small_group_emits_no_invalid_warning():
    # kills x__joint_replicates__mutmut_120/122 (invalid='ignore' dropped: a replicate that draws none of a small group's
    # subjects divides 0 by 0 and warns); the NaN replicates are dropped from the difference
    t = _shared(n=20, seed=5)
    t = t[(t['organ'] == 'brain') | t['subject_id'].isin(['S000', 'S001'])]
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        out = pairwise_mae(t, n_resamples=300, seed=0, min_n=2)
    assert len(out) == 1 and bool(out['joint'].iloc[0]) and np.isfinite(out['low'].iloc[0])


def test_auto_joint_only_when_subjects_shared_across_groups():
    # kills x_pairwise_mae__mutmut_49 ('or': joint whenever a subject_id column exists),
    # _54 (drop_duplicates(None): a subject's repeated rows within one organ look like sharing),
    # _15/_16/_46/_47 ('auto' misspelt: the string stays truthy, every call is joint)
    t = _separate(sizes=(11, 12), reps=2)
    out = pairwise_mae(t, n_resamples=200)
    assert len(out) == 1 and not bool(out['joint'].iloc[0])
    assert bool(pairwise_mae(_shared(n=11), n_resamples=200)['joint'].iloc[0])


def test_medae_allowed_when_not_joint():
    # kills x_pairwise_mae__mutmut_15/_16/_46/_47 (joint stays 'auto', so medae is refused as a joint statistic)
    out = pairwise_mae(_separate(), stat='medae', n_resamples=200)
    assert 'medae_a' in out.columns and not bool(out['joint'].iloc[0])


def test_joint_error_fields():
    # kills x_pairwise_mae__mutmut_63/_66/_70 (found changed/dropped), _64/_67/_71/_72/_73 (expected changed/dropped),
    # _69 (list separator); _78/_79/_80 (message of the missing subject_id error)
    with pytest.raises(DataError) as ei: pairwise_mae(_shared(), stat='medae', n_resamples=50)
    assert ei.value.found == "'medae'" and ei.value.expected == 'one of those, or joint=False'
    assert 'joint resampling supports mae, mse, rmse, mean_gap' in str(ei.value)
    with pytest.raises(DataError, match='^joint resampling needs a subject_id column$'):
        pairwise_mae(_shared().drop(columns='subject_id'), joint=True, n_resamples=50)


def test_defaults_n_resamples_seed_min_n():
    # kills x_pairwise_mae__mutmut_7 (default 10001 resamples), _9 (default seed 1), _12 (default min_n 11: a group of
    # exactly 10 subjects is dropped), _101 (units <= min_n: same)
    t = _separate(sizes=(10, 10))
    a = pairwise_mae(t); b = pairwise_mae(t, n_resamples=10_000, seed=0, min_n=10)
    assert len(a) == 1
    pd.testing.assert_frame_equal(a, b)


def _independent_reference(t, key_a, key_b, B, seed, groups, level=0.95):
    r = []
    for k in (key_a, key_b):
        g = t[t['organ'] == k]
        est, reps, _ = bootstrap_replicates(g['age'], g['mu'], 'mae', B, _group_seed(seed, (k,)),
                                            g['subject_id'].to_numpy() if groups else None)
        r.append((est['mae'], reps['mae']))
    d = r[0][1] - r[1][1]; a = (1 - level) / 2
    return r[0][0] - r[1][0], np.quantile(d, [a, 1 - a]), min(1.0, 2 * min(1 + np.sum(d <= 0), 1 + np.sum(d >= 0)) / (B + 1))


@pytest.mark.parametrize('flip', [False, True])
def test_subject_resampling_passes_clusters(flip):
    # kills x_pairwise_mae__mutmut_138/_144 (the subject clusters not passed: rows resampled instead of subjects);
    # also _160/_163 (alpha) and the p formula mutants on the independent path; flip (first group worse: diff > 0, the
    # d <= 0 count is the smaller one) kills _192 (2 + count)
    t = _separate(sizes=(10, 12), reps=3, seed=2)
    if flip: t.loc[t['organ'] == 'o0', 'mu'] += np.random.default_rng(9).normal(0, 12, 30)
    out = pairwise_mae(t, n_resamples=300, seed=5, resample='subject', joint=False)
    diff, (lo, hi), p = _independent_reference(t, 'o0', 'o1', 300, 5, groups=True)
    r = out.iloc[0]
    np.testing.assert_allclose([r['diff'], r['low'], r['high'], r['p']], [diff, lo, hi, p], rtol=1e-12)
    np.testing.assert_allclose(r['mae_a'], np.abs(t[t['organ'] == 'o0'].eval('mu - age')).mean(), rtol=1e-12)


def test_row_resampling_counts_rows_and_needs_no_subject_id():
    # kills x_pairwise_mae__mutmut_90 (units always from subject_id: KeyError without the column),
    # _93/_96/_97 (resample='row' ignored: a group of 12 rows from 6 subjects is counted as 6 < min_n and dropped)
    t = _separate(sizes=(6, 6), reps=2)
    out = pairwise_mae(t, n_resamples=200, resample='row', joint=False, min_n=10)
    assert len(out) == 1
    out2 = pairwise_mae(t.drop(columns='subject_id'), n_resamples=200, resample='row', min_n=10)
    pd.testing.assert_frame_equal(out, out2)


def test_needs_only_the_grouping_age_and_pred_columns_and_checks_pred():
    # kills x_pairwise_mae__mutmut_26 (default column check demands subject_id, organ, mu), _27 (numeric=(pred,) dropped:
    # a non-finite value in a non-default prediction column is not refused)
    t = _separate(sizes=(10, 11)).rename(columns=dict(organ='site', mu='p')).drop(columns='subject_id')
    out = pairwise_mae(t, pred='p', by='site', n_resamples=100, resample='row')
    assert list(out['site_a']) == ['o0'] and list(out['site_b']) == ['o1']
    bad = t.assign(split='test'); bad.loc[3, 'split'] = 'train'; bad.loc[3, 'p'] = np.nan   # NaN outside the split
    with pytest.raises(DataError, match='p'): pairwise_mae(bad, pred='p', by='site', n_resamples=100, resample='row')


def test_split_restricts_rows():
    # kills x_pairwise_mae__mutmut_34 (split replaced by None: every row used)
    t = _separate(sizes=(12, 12), seed=6)
    t.loc[t.index[::3], 'split'] = 'train'; t.loc[t.index[::3], 'mu'] += 50
    out = pairwise_mae(t, n_resamples=100, min_n=5)
    te = t[t['split'] == 'test']
    exp = [np.abs(g['mu'] - g['age']).mean() for _, g in te.groupby('organ')]
    np.testing.assert_allclose([out['mae_a'].iloc[0], out['mae_b'].iloc[0]], exp, rtol=1e-12)


def test_skipped_group_is_logged_and_later_groups_kept(caplog):
    # kills x_pairwise_mae__mutmut_109 (break: every group after a skipped one is dropped),
    # _112/_113/_117/_120 (the warning's statistic, list or text changed)
    t = _separate(sizes=(3, 4, 11, 12))
    with caplog.at_level(logging.WARNING, logger='organage'):
        out = pairwise_mae(t, n_resamples=100)
    assert list(zip(out['organ_a'], out['organ_b'])) == [('o2', 'o3')]
    assert 'pairwise mae: not enough data for o0 (n=3), o1 (n=4)' in caplog.messages


def test_skipped_multi_column_group_is_logged_with_slash(caplog):
    # kills x_pairwise_mae__mutmut_104 (the key parts of a skipped group joined by 'XX/XX' instead of '/')
    t = _separate(sizes=(3, 11, 12)).assign(sex='f')
    with caplog.at_level(logging.WARNING, logger='organage'):
        pairwise_mae(t, by=['organ', 'sex'], n_resamples=50)
    assert 'pairwise mae: not enough data for o0/f (n=3)' in caplog.messages


@settings(max_examples=15, deadline=None)
@given(n=st.integers(10, 16), scale=st.floats(0.5, 8), shift=st.floats(-5, 5), B=st.integers(50, 200))
def test_joint_mae_estimate_and_interval_drawn(n, scale, shift, B):
    # kills x__joint_replicates__mutmut_137/140 and x_pairwise_mae__mutmut_160/163/186/192/197/201 on drawn data
    rng = np.random.default_rng(n); age = rng.uniform(20, 90, n)
    t = pd.concat([pd.DataFrame(dict(subject_id=[f's{i}' for i in range(n)], organ=o, age=age, split='test',
                                     mu=age + shift * (o == 'b') + scale * rng.standard_normal(n))) for o in 'ab'], ignore_index=True)
    out = pairwise_mae(t, stat='rmse', n_resamples=B, seed=n)
    ea, eb, lo, hi, p = _joint_reference(t, 'rmse', B, n)
    np.testing.assert_allclose(out[['rmse_a', 'rmse_b', 'low', 'high']].iloc[0].to_numpy(float), [ea, eb, lo, hi],
                               rtol=1e-9, atol=1e-9)
    assert out['p'].iloc[0] == pytest.approx(p, abs=2.5 / (B + 1))


# ---------------------------------------------------------------------------------------------------------------- nested_models_table
def test_nested_unseen_test_levels_error_fields():
    # kills x_nested_models_table__mutmut_84/_87 (where changed/dropped), _85/_88/_92/_93 (expected changed/dropped),
    # _90 (separator of the list), _91 (unseen[:6]: six unseen levels must list only the first five)
    rng = np.random.default_rng(0)
    d = pd.DataFrame(dict(x=rng.normal(size=40), site=np.repeat(['A', 'B'], 20))); d['age'] = 50 + 3 * d['x']
    test = pd.DataFrame(dict(x=rng.normal(size=6), site=list('CDEFGH'))); test['age'] = 50.0
    with pytest.raises(DataError) as ei:
        nested_models_table(d, 'age', {'X': ['x'], 'XS': ['x', 'site']}, test=test)
    assert ei.value.where == "nested_models_table model 'XS'"
    assert ei.value.expected == 'the levels of the training data'
    assert str(ei.value).startswith("nested_models_table model 'XS': categories of the test rows not seen in the training "
                                    "rows: site_C, site_D, site_E, site_F, site_G (expected")
    assert 'site_H' not in str(ei.value)
