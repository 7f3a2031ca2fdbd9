"""Tests written to kill surviving mutants found by `bench/_mutation.py` (mutmut 3) in organage/data/splits.py.

Each test names the mutants it kills (short names); it asserts behaviour a caller relies on (numbers cross-checked against
numpy/scipy, defaults, arguments passed through, row order, bin edges, strata pooling, error conditions and the fields of
error messages)."""
import warnings
import numpy as np, pandas as pd, pytest
from scipy import stats as sps
from hypothesis import given, settings, strategies as st, HealthCheck
from organage.core import ConfigError, DataError, NotEnoughDataError
from organage.data.splits import (split_subjects, assign_splits, split_report, subject_table, age_bin_edges, age_bins,
                                  kl_divergence)

FAST = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


def make_obs(n_subjects, seed, max_obs=3, sites=('A', 'B', 'C')):
    "Observations of n subjects (1..max_obs each), modalities, a site, ages 18-90; rows deliberately not sorted by subject."
    rng = np.random.default_rng(seed)
    k = rng.integers(1, max_obs + 1, n_subjects)
    sid = np.repeat([f"S{i:04d}" for i in range(n_subjects)], k)
    age = np.repeat(rng.uniform(18, 90, n_subjects), k)
    obs = pd.DataFrame(dict(subject_id=sid, age=age, modality=rng.choice(['rna', 'xray', 'mri'], len(sid)),
                            site=np.repeat(rng.choice(sites, n_subjects), k)))
    return obs.iloc[rng.permutation(len(obs))].reset_index(drop=True)


def ref_kl(p, q, eps=0.5):
    "KL(p||q) with a pseudo-count, via scipy (entropy normalises)."
    return float(sps.entropy(np.asarray(p, float) + eps, np.asarray(q, float) + eps))


def ref_bins(ages, edges):
    "Bin of each age: edges[i] <= a < edges[i+1], the maximum (and anything above) in the last bin, anything below in bin 0."
    nb = max(len(edges) - 1, 1)
    return np.array([0 if a < edges[0] else min(max(i for i in range(len(edges)) if edges[i] <= a), nb - 1) for a in ages])


# ---------------------------------------------------------------- age_bin_edges / age_bins / kl_divergence
@FAST
@given(st.lists(st.integers(180, 900), min_size=1, max_size=40), st.integers(1, 12))
def test_age_bin_edges_are_quantiles(tenths, n_bins):
    # kills x_age_bin_edges__mutmut_31/_34/_35 (wrong number of quantiles), _12 (a single age refused)
    ages = np.asarray(tenths) / 10
    np.testing.assert_allclose(age_bin_edges(ages, n_bins), np.unique(np.quantile(ages, np.linspace(0, 1, n_bins + 1))))
    e = age_bin_edges(ages)   # default: deciles
    np.testing.assert_allclose(e, np.unique(np.quantile(ages, np.linspace(0, 1, 11))))


def test_age_bin_edges_text_ages_and_errors():
    # kills x_age_bin_edges__mutmut_7/_9 (ages given as text no longer converted), _10 (NaN accepted), _20 (found field breaks),
    # _14/_16/_19 (message), _15/_17 (found field)
    np.testing.assert_allclose(age_bin_edges(['20', '40', '60'], 2), [20, 40, 60])
    with pytest.raises(DataError, match='ages must be non-empty and without missing values') as e:
        age_bin_edges([30.0, np.nan, 50.0])
    assert e.value.found == '1 missing of 3'
    assert str(e.value) == 'ages must be non-empty and without missing values (found 1 missing of 3)'   # _18
    with pytest.raises(DataError, match='non-empty') as e: age_bin_edges([])
    assert e.value.found == '0 missing of 0'
    np.testing.assert_allclose(age_bin_edges([42.0]), [42.0])


@FAST
@given(st.lists(st.integers(0, 120), min_size=1, max_size=30), st.lists(st.integers(100, 1000), min_size=1, max_size=30))
def test_age_bins_half_open_with_clipping(ages, raw_edges):
    # kills x_age_bins__mutmut_5 (below the first edge -> -1), _6/_29 (above the maximum -> past the last bin), _10/_23 (offset),
    # _16 (side='left': an age on an interior edge goes to the lower bin), _24 (lowest bin 1), _30 (maximum not in the last bin),
    # _31 (a single-bin/degenerate edge set gives bin 1)
    edges = np.unique(np.asarray(raw_edges) / 10)
    ages = np.concatenate([np.asarray(ages, float), edges])   # ages on every edge, below and above the range
    np.testing.assert_array_equal(age_bins(ages, edges), ref_bins(ages, edges))


def test_age_bins_edge_cases():
    # kills x_age_bins__mutmut_31 (one bin), _30, _16, _18/_20 (text ages not converted)
    assert age_bins([10, 5, 12], np.array([5.0, 10.0])).tolist() == [0, 0, 0]
    assert age_bins([7, 7], np.array([7.0])).tolist() == [0, 0]
    assert age_bins([20, 30, 40], np.array([20.0, 30.0, 40.0])).tolist() == [0, 1, 1]
    assert age_bins(['20', '35', '40'], np.array([20.0, 30.0, 40.0])).tolist() == [0, 1, 1]
    assert age_bins(['9', '100', '60'], np.array([5.0, 50.0, 200.0])).tolist() == [0, 1, 1]   # compared as numbers, not text


@FAST
@given(st.integers(1, 8).flatmap(lambda k: st.tuples(st.lists(st.integers(0, 50), min_size=k, max_size=k),
                                                      st.lists(st.integers(0, 50), min_size=k, max_size=k))),
       st.sampled_from([0.5, 1.0, 0.1]))
def test_kl_divergence_against_scipy(pq, eps):
    # kills x_kl_divergence__mutmut_1 (default pseudo-count 1.5), _18/_19 (not normalised), _24 (log(p*q))
    p, q = pq
    np.testing.assert_allclose(kl_divergence(p, q), ref_kl(p, q, 0.5), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kl_divergence(p, q, eps=eps), ref_kl(p, q, eps), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- _as_obs / subject_table
def test_subject_table_sorted_median_and_index_name():
    # kills x_subject_table__mutmut_55/_52 (rows in order of first appearance, not sorted by subject), _113 (index name lost)
    obs = pd.DataFrame(dict(subject_id=['b', 'c', 'a', 'b', 'a', 'a'], age=[30, 50, 20, 34, 22, 27]))
    t = subject_table(obs)
    assert t.index.tolist() == ['a', 'b', 'c'] and t.index.name == 'subject_id'
    np.testing.assert_allclose(t.age, obs.groupby('subject_id').age.median().sort_index().to_numpy())
    assert t.age.dtype == float


def test_subject_table_modalities_and_columns():
    # kills x_subject_table__mutmut_69/_74/_75/_76 (modality column ignored / used when absent), _77.._82 ('all' when there
    # is no modality column), _88 (modalities joined with '+'), and the most frequent value per subject
    obs = pd.DataFrame(dict(pid=['s1', 's1', 's1', 's2'], years=[40., 40., 40., 61.], modality=['rna', 'mri', 'rna', 'xray'],
                            site=['A', 'B', 'B', 'C']))
    t = subject_table(obs, 'pid', 'years', columns=('modalities', 'site', 'age_decile'))
    assert t.modalities.tolist() == ['mri+rna', 'xray'] and t.site.tolist() == ['B', 'C']
    assert list(t.columns) == ['age', 'modalities', 'site'] and t.index.name == 'pid'
    t2 = subject_table(obs.drop(columns='modality'), 'pid', 'years', columns=('modalities',))
    assert t2.modalities.tolist() == ['all', 'all']


def test_dict_input_modality_from_key_and_row_order():
    # kills x__as_obs__mutmut_11/_14/_15/_16 (modality not taken from the dict key), _13/_19 (an existing modality column
    # overwritten by the key), _21/_23/_24 (the concatenated observations keep duplicate row labels)
    a = pd.DataFrame(dict(subject_id=['s1', 's2'], age=[30., 40.]))
    b = pd.DataFrame(dict(subject_id=['s1', 's3'], age=[30., 50.], modality=['t1', 't2']))
    t = subject_table({'rna': a, 'mri': b}, columns=('modalities',))
    assert t.modalities.to_dict() == {'s1': 'rna+t1', 's2': 'rna', 's3': 't2'}
    sp = pd.Series({'s1': 'train', 's2': 'val', 's3': 'test'})
    per = assign_splits({'rna': a, 'mri': b}, sp)
    assert per.index.tolist() == [0, 1, 2, 3] and per.tolist() == ['train', 'val', 'train', 'test']


def test_as_obs_refuses_other_types():
    # kills x__as_obs__mutmut_25/_26 (the message no longer names the type found)
    with pytest.raises(ConfigError, match='expected a DataFrame, an AnnData or a dict of them, found list'):
        subject_table([1, 2])


def test_subject_table_error_fields():
    # kills x_subject_table__mutmut_11.._27 (missing column: message, where, expected, found, 12 columns shown),
    # _28.._35 (missing subject id), _37.._47 (missing age), _99.._112 (missing stratification column)
    wide = pd.DataFrame({f'c{i:02d}': [1] for i in range(14)}).assign(age=[30.0])
    with pytest.raises(DataError, match="column 'subject_id' missing") as e: subject_table(wide)
    assert (e.value.where, e.value.expected) == ('obs', 'columns subject_id, age')
    assert e.value.found == ', '.join(f'c{i:02d}' for i in range(12))
    with pytest.raises(DataError, match="column 'years' missing") as e: subject_table(wide.assign(pid=['x']), 'pid', 'years')
    assert e.value.expected == 'columns pid, years'
    obs = pd.DataFrame(dict(subject_id=['a', None, None], age=[30., 40., 50.]))
    with pytest.raises(DataError, match='observations without a subject id') as e: subject_table(obs)
    assert (e.value.where, e.value.found) == ('obs.subject_id', '2 missing')
    assert str(e.value) == 'obs.subject_id: observations without a subject id (found 2 missing)'
    obs = pd.DataFrame(dict(subject_id=['a', 'b', 'c'], age=[30., np.nan, 50.]))
    with pytest.raises(DataError, match='observations without an age') as e: subject_table(obs)
    assert (e.value.where, e.value.found) == ('obs.age', '1 missing')
    assert e.value.expected == 'an age on every observation (drop them first)'
    assert str(e.value).startswith('obs.age: observations without an age (expected')
    obs = pd.DataFrame({f'c{i:02d}': ['v'] for i in range(13)}).assign(subject_id=['a'], age=[30.])
    with pytest.raises(DataError, match="stratification column 'scanner' missing") as e: subject_table(obs, columns=('scanner',))
    assert e.value.where == 'obs' and e.value.found == ', '.join(f'c{i:02d}' for i in range(12))


# ---------------------------------------------------------------- split_subjects
def independent_kl(obs, sp, stratify, n_bins=10, names=('train', 'val', 'test')):
    "Sum over the non-training splits and over (age bins + other keys) of KL(split histogram || whole), via scipy."
    t = subject_table(obs, columns=[k for k in stratify])
    s = sp.reindex(t.index).to_numpy()
    edges = np.unique(np.quantile(t.age, np.linspace(0, 1, n_bins + 1)))
    cats = [ref_bins(t.age.to_numpy(), edges)] + [pd.factorize(t[k])[0] for k in stratify if k != 'age_decile']
    return sum(ref_kl(np.bincount(c[s == nm], minlength=c.max() + 1), np.bincount(c)) for c in cats for nm in names[1:])


@FAST
@given(n=st.integers(12, 80), seed=st.integers(0, 10**6),
       strat=st.sampled_from([('age_decile',), ('age_decile', 'site'), ('site',), ('age_decile', 'modalities')]),
       n_bins=st.integers(2, 10))
def test_kl_attribute_is_the_held_out_divergence(n, seed, strat, n_bins):
    # kills x__score__mutmut_7/_8/_9/_10/_11/_20 (wrong candidate score), x_split_subjects__mutmut_51 (n_bins not passed on)
    obs = make_obs(n, seed)
    sp = split_subjects(obs, stratify=strat, seed=seed, n_candidates=3, n_bins=n_bins)
    np.testing.assert_allclose(sp.attrs['kl'], independent_kl(obs, sp, strat, n_bins), rtol=1e-9, atol=1e-12)
    assert sp.attrs['kl'] == min(sp.attrs['candidate_kl'])
    t = subject_table(obs)
    np.testing.assert_allclose(sp.attrs['age_bin_edges'], np.unique(np.quantile(t.age, np.linspace(0, 1, n_bins + 1))))


def test_exact_largest_remainder_sizes():
    # kills x__apportion__mutmut_18 (smallest remainders rounded up), _19 (largest quotas rounded up)
    obs = make_obs(10, 1)
    for fr, want in (((0.61, 0.39), [6, 4]), ((0.67, 0.17, 0.16), [7, 2, 1]), ((0.45, 0.45, 0.1), None)):
        names = ('train', 'val', 'test')[:len(fr)]
        for seed in range(4):
            c = split_subjects(obs, fractions=fr, names=names, stratify=(), seed=seed, n_candidates=2).value_counts()
            got = [int(c.get(nm, 0)) for nm in names]
            if want: assert got == want
            else: assert got[2] == 1 and sorted(got[:2]) == [4, 5]


def test_ties_keep_the_first_candidate():
    # kills x_split_subjects__mutmut_92 (a later candidate with an equal score replaces the first): with every age equal,
    # every candidate has the same score, so more candidates must not change the split
    obs = pd.DataFrame(dict(subject_id=[f's{i}' for i in range(12)], age=40.0))
    one = split_subjects(obs, stratify=('age_decile',), seed=3, n_candidates=1)
    many = split_subjects(obs, stratify=('age_decile',), seed=3, n_candidates=6)
    assert len(set(many.attrs['candidate_kl'])) == 1
    assert many.equals(one)


def test_defaults_seed_candidates_name_and_attrs():
    # kills x_split_subjects__mutmut_1 (default seed 1), _2 (11 candidates), _97/_100/_102/_103 (Series name),
    # _107/_112 (stratify attr), _108/_113 (strata attr), _111 (age_bin_edges attr)
    obs = make_obs(40, 2)
    sp = split_subjects(obs)
    assert sp.equals(split_subjects(obs, seed=0)) and not sp.equals(split_subjects(obs, seed=1))
    assert len(sp.attrs['candidate_kl']) == 10 and sp.name == 'split'
    assert sp.attrs['stratify'] == ['age_decile', 'modalities']
    assert isinstance(sp.attrs['strata'], int) and sp.attrs['strata'] >= 1
    np.testing.assert_allclose(sp.attrs['age_bin_edges'], age_bin_edges(subject_table(obs).age))


def strata_obs():
    "20 subjects: 10 young (20-29), 10 old (60-69); sites chosen so that pooling at 3 is decisive at every level."
    young = ['A'] * 4 + ['B'] * 3 + ['C'] * 2 + ['D']
    old = ['A'] * 5 + ['B'] * 3 + ['C'] + ['E']
    return pd.DataFrame(dict(subject_id=[f's{i:02d}' for i in range(20)], age=np.r_[np.arange(20, 30), np.arange(60, 70)].astype(float),
                             site=young + old))


def test_rare_strata_are_pooled_within_age_bin_then_overall():
    # kills x__strata__mutmut_41 (a stratum of exactly min_stratum pooled), _52 (same at the second level), _38/_40 (rare
    # combinations not pooled within their age bin), _6 (age bins used although 'age_decile' is not asked for),
    # x_split_subjects__mutmut_51 (n_bins not passed on)
    obs = strata_obs()
    # strata: 0|A, 0|B, 0|rare (C, D: 3), 1|A, 1|B, rare (1|C + 1|E: 2)
    assert split_subjects(obs, stratify=('age_decile', 'site'), n_bins=2, n_candidates=1).attrs['strata'] == 6
    # without age: A (9), B (6), C (3), rare (D, E)
    assert split_subjects(obs, stratify=('site',), n_candidates=1).attrs['strata'] == 4
    # min_stratum passed through: with 2, only D and E pool (0|rare: D alone -> rare with 1|rare: E) ...
    assert split_subjects(obs, stratify=('age_decile', 'site'), n_bins=2, n_candidates=1, min_stratum=2).attrs['strata'] == 7


def test_fraction_and_candidate_checks():
    # kills x_split_subjects__mutmut_17 (a negative share accepted), _22 (a zero share refused), _33/_34 (one candidate refused),
    # _35 (message), _45 (exactly as many subjects as splits refused), _46 (message)
    obs = make_obs(12, 4)
    with pytest.raises(ConfigError, match='one non-negative share per split'):
        split_subjects(obs, fractions=(1.2, -0.2), names=('train', 'test'))
    sp = split_subjects(obs, fractions=(0.5, 0.5, 0.0), n_candidates=2)
    assert (sp == 'test').sum() == 0 and (sp == 'train').sum() == 6
    assert len(split_subjects(obs, n_candidates=1).attrs['candidate_kl']) == 1
    with pytest.raises(ConfigError, match='n_candidates=0: expected at least 1'): split_subjects(obs, n_candidates=0)
    three = pd.DataFrame(dict(subject_id=['a', 'b', 'c'], age=[20., 50., 80.]))
    sp = split_subjects(three, fractions=(1/3, 1/3, 1/3), stratify=('age_decile',))
    assert sorted(sp) == ['test', 'train', 'val']
    with pytest.raises(NotEnoughDataError, match='2 subjects cannot fill 3 splits'): split_subjects(three.iloc[:2])


def test_columns_passed_through():
    # kills x_split_subjects__mutmut_43 (age_col not passed to subject_table), x_split_report__mutmut_16/_46 (age_col /
    # subject_col not passed on)
    obs = make_obs(30, 5).rename(columns=dict(subject_id='pid', age='years'))
    sp = split_subjects(obs, subject_col='pid', age_col='years', n_candidates=2)
    assert sp.index.name == 'pid' and len(sp) == 30
    rep = split_report(obs, sp, subject_col='pid', age_col='years')
    assert rep.subjects.sum() == 30 and rep.observations.sum() == len(obs)


# ---------------------------------------------------------------- assign_splits / split_report
def test_assign_splits_error_lists_three_missing_then_ellipsis():
    # kills x_assign_splits__mutmut_14.._30 (where/found fields, at most three subjects listed, '...' only beyond three),
    # _31/_32/_33 (result name)
    obs = pd.DataFrame(dict(subject_id=['a', 'b', 'c', 'd', 'e', 'a'], age=30.0))
    sp = pd.Series({'a': 'train', 'b': 'val'})
    with pytest.raises(DataError, match='subjects without a split') as e: assign_splits(obs, sp)
    assert (e.value.where, e.value.found) == ('obs.subject_id', 'c, d, e')
    assert str(e.value) == 'obs.subject_id: subjects without a split (found c, d, e)'   # _19
    with pytest.raises(DataError) as e: assign_splits(obs, pd.Series({'a': 'train'}))
    assert e.value.found == 'b, c, d ...'
    ok = assign_splits(obs, pd.Series({k: 'train' for k in 'abcde'}))
    assert ok.name == 'split' and ok.index.equals(obs.index)


def report_ref(obs, sp, edges):
    "split_report recomputed with pandas/scipy."
    t = subject_table(obs); s = sp.reindex(t.index)
    b = ref_bins(t.age.to_numpy(), edges); nb = len(edges) - 1; ref = np.bincount(b, minlength=nb)
    rows = {}
    for nm in pd.unique(sp):
        m = (s == nm).to_numpy(); a = t.age[m]
        rows[nm] = dict(subjects=int(m.sum()), observations=int((obs.subject_id.map(sp) == nm).sum()), age_mean=a.mean(),
                        age_sd=a.std(), age_min=a.min(), age_max=a.max(), kl_to_all=ref_kl(np.bincount(b[m], minlength=nb), ref))
    return pd.DataFrame.from_dict(rows, orient='index')


def test_split_report_against_pandas():
    # kills x_split_report__mutmut_56.._76 (column names/values), _84/_85/_91 (KL arguments), _19/_23/_24 (the split's own
    # bin edges ignored), _39 (splits not aligned to the subjects)
    obs = make_obs(60, 6)
    sp = split_subjects(obs, n_bins=4, n_candidates=2)
    sp_shuffled = sp.iloc[np.random.default_rng(0).permutation(len(sp))]
    sp_shuffled.attrs = dict(sp.attrs)
    rep = split_report(obs, sp_shuffled)
    assert list(rep.columns) == ['subjects', 'observations', 'age_mean', 'age_sd', 'age_min', 'age_max', 'kl_to_all']
    want = report_ref(obs, sp_shuffled, np.asarray(sp.attrs['age_bin_edges']))
    pd.testing.assert_frame_equal(rep.rename_axis(None), want.loc[rep.index].rename_axis(None), check_dtype=False, rtol=1e-9)


def test_split_report_default_edges_and_empty_bins():
    # kills x_split_report__mutmut_20/_22 (no attrs: default decile edges not used), _35/_36/_37 (the reference histogram
    # not given one bin per edge interval when the oldest bins are empty), _80/_82/_83 (a split without observations)
    obs = make_obs(60, 7)
    sp = split_subjects(obs, n_bins=5, n_candidates=2)
    plain = pd.Series(sp.to_dict(), name='split')             # no attrs: the report's own deciles
    pd.testing.assert_frame_equal(split_report(obs, plain).rename_axis(None),
                                  report_ref(obs, plain, age_bin_edges(subject_table(obs).age)).loc[list(pd.unique(plain))].rename_axis(None),
                                  check_dtype=False, rtol=1e-9)
    t = subject_table(obs)
    young = t.index[t.age < np.quantile(t.age, 0.55)]
    sub = obs[obs.subject_id.isin(young) & (obs.subject_id.map(sp) != 'test')]     # oldest bins empty, 'test' has no one
    sp_sub = sp[sp.index.isin(sub.subject_id) | (sp == 'test')]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        rep = split_report(sub, sp_sub)
    assert rep.loc['test', 'observations'] == 0 and rep.loc['test', 'subjects'] == 0
    edges = np.asarray(sp.attrs['age_bin_edges'])
    ts = subject_table(sub); b = ref_bins(ts.age.to_numpy(), edges); ref = np.bincount(b, minlength=len(edges) - 1)
    assert ref[-1] == 0
    for nm in ('train', 'val', 'test'):
        m = (sp_sub.reindex(ts.index) == nm).to_numpy()
        np.testing.assert_allclose(rep.loc[nm, 'kl_to_all'], ref_kl(np.bincount(b[m], minlength=len(ref)), ref), rtol=1e-9)


# ---------------------------------------------------------------- reproducibility and input types
def test_seed_reproduces_a_published_split():
    # kills x__apportion__mutmut_25 (the random phase of the dealing reversed): a split recorded for seed 0 must come back
    # unchanged (papers and reruns rely on it); pinned on 24 subjects, deciles, 3 candidates
    sp = split_subjects(make_obs(24, 0), seed=0, n_candidates=3, stratify=('age_decile',))
    assert ''.join(sp.str[0]) == 'tttvttttttttttvttvtttttt'
    assert ''.join(sp.str[1]) == 'rrrarrrrrrrrrraeraeeerrr'


def test_object_counts_and_text_fractions():
    # kills x_kl_divergence__mutmut_8/_10/_14/_16 (object-dtype counts, e.g. from an object column, no longer made numeric),
    # x_split_subjects__mutmut_13/_15 (fractions read from a config file as text no longer made numeric)
    p, q = pd.Series([3, 1, 0], dtype=object), pd.Series([2, 2, 2], dtype=object)
    np.testing.assert_allclose(kl_divergence(p, q), ref_kl([3, 1, 0], [2, 2, 2]), rtol=1e-12)
    np.testing.assert_allclose(kl_divergence([3, 1, 0], q), ref_kl([3, 1, 0], [2, 2, 2]), rtol=1e-12)
    obs = make_obs(12, 8)
    a = split_subjects(obs, fractions=('0.5', '0.5'), names=('train', 'test'), n_candidates=2)
    assert a.equals(split_subjects(obs, fractions=(0.5, 0.5), names=('train', 'test'), n_candidates=2))
