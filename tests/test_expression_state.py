"""Fitted expression preprocessing applied to new samples: one sample alone == in a cohort, saved state round trip, gene id
versions, missing/extra genes, unseen batches, and ComBat fitted on training samples only."""
import json
import numpy as np
import pandas as pd
import pytest
import anndata as ad
from hypothesis import given, settings, strategies as st, HealthCheck

from _counts import nb_adata as _nb_adata
from organage.core import DataError
from organage.data.preprocess import ExpressionPreprocessor, EXPRESSION_STATE_FORMAT, combat_correct, gene_key



def nb_adata(n=90, g=100, seed=0, batches=('b1', 'b2', 'b3'), tissues=('lung', 'brain'), batch_sd=0.8):
    "Every batch holds every tissue (ComBat's covariates estimable); Ensembl-like versioned ids."
    return _nb_adata(n, g, seed, batches, tissues, batch_sd, balanced=True, versioned=True)


def split(a, n_train=60):
    return a[:n_train].copy(), a[n_train:].copy()


SETUPS = {'logcpm_combat': dict(method='logcpm', combat_key='batch', n_top_genes=50, scale=True),
          'vst_combat': dict(method='vst', combat_key='batch', n_top_genes=50, scale=True),
          'logcpm_raw': dict(method='logcpm', n_top_genes=50, scale=False)}


@pytest.fixture(scope='module')
def fitted():
    a = nb_adata()
    tr, te = split(a)
    return {k: ExpressionPreprocessor(**kw).fit(tr) for k, kw in SETUPS.items()}, tr, te


@pytest.mark.parametrize('setup', list(SETUPS))
def test_each_sample_alone_equals_the_cohort(fitted, setup):
    "ComBat on, three batches, two tissues: every sample transformed on its own gets exactly its row of the whole cohort."
    ps, tr, te = fitted
    p = ps[setup]
    both = ad.concat([tr, te])
    full = p.transform(both).X
    alone = np.concatenate([p.transform(both[i:i + 1].copy()).X for i in range(both.n_obs)])
    np.testing.assert_allclose(alone, full, rtol=1e-6, atol=1e-6)


@settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(idx=st.lists(st.integers(0, 29), min_size=1, max_size=12, unique=True), setup=st.sampled_from(list(SETUPS)))
def test_any_subset_equals_the_cohort(fitted, idx, setup):
    ps, _, te = fitted
    p = ps[setup]
    np.testing.assert_allclose(p.transform(te[idx].copy()).X, p.transform(te).X[idx], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('setup', list(SETUPS))
def test_state_round_trip_gives_identical_transforms(fitted, setup, tmp_path):
    ps, tr, te = fitted
    p = ps[setup]
    meta, arrays = p.state()
    assert json.loads(json.dumps(meta)) == meta and meta['format'] == EXPRESSION_STATE_FORMAT
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    q = ExpressionPreprocessor.from_state(meta, arrays)
    p.save(tmp_path/'m')
    r = ExpressionPreprocessor.load(tmp_path/'m')
    for x in (tr, te):
        ref = p.transform(x)
        np.testing.assert_array_equal(q.transform(x).X, ref.X)
        np.testing.assert_array_equal(r.transform(x).X, ref.X)
        assert list(r.transform(x).var_names) == list(ref.var_names)


def test_load_refuses_unknown_format_and_pickles(fitted, tmp_path):
    p = fitted[0]['logcpm_combat']
    p.save(tmp_path)
    meta = json.loads((tmp_path/'expression.json').read_text())
    (tmp_path/'expression.json').write_text(json.dumps({**meta, 'format': 'organage.expression/2'}))
    with pytest.raises(DataError, match=r"format.*expected 'organage.expression/1'.*found 'organage.expression/2'"):
        ExpressionPreprocessor.load(tmp_path)
    (tmp_path/'expression.json').write_text(json.dumps(meta))
    np.savez(tmp_path/'expression.npz', kept=np.array([object()], dtype=object))
    with pytest.raises(DataError, match='without pickle'): ExpressionPreprocessor.load(tmp_path)
    with pytest.raises(DataError, match='not found'): ExpressionPreprocessor.load(tmp_path/'nowhere')


def test_version_suffixes_are_ignored(fitted):
    ps, _, te = fitted
    p = ps['vst_combat']
    ref = p.transform(te)
    for f in (lambda v: v.split('.')[0], lambda v: v.split('.')[0] + '.99'):
        other = te.copy(); other.var_names = [f(v) for v in te.var_names]
        out = p.transform(other)
        np.testing.assert_array_equal(out.X, ref.X)
        assert list(out.var_names) == list(ref.var_names) and out.uns['preprocess']['genes_missing'] == 0
    assert list(gene_key(['ENSG00000141510.15', 'TP53.1'])) == ['ENSG00000141510', 'TP53.1']   # only Ensembl-like ids lose a version
    dup = te.copy(); dup.var_names = ['ENSG00000000000.1', 'ENSG00000000000.2'] + list(te.var_names[2:])
    with pytest.raises(DataError, match=r'repeat once their version suffixes are removed.*ENSG00000000000.1 = ENSG00000000000.2'):
        p.transform(dup)


@pytest.mark.parametrize('setup', ['logcpm_combat', 'vst_combat'])
def test_missing_genes_imputed_reported_and_refused_past_the_limit(fitted, setup):
    ps, _, te = fitted
    p = ps[setup]
    ref = p.transform(te)
    sel = list(ref.var_names)
    drop = sel[:3]                                                 # 3 of 50 selected genes absent from the file
    out = p.transform(te[:, [v for v in te.var_names if v not in drop]].copy())
    np.testing.assert_allclose(out.obs.genes_imputed_share, 3/50)
    np.testing.assert_array_equal(out.X[:, :3], 0)                # z-scored: the training mean is 0
    assert out.uns['preprocess']['genes_missing'] == 3 and out.uns['preprocess']['genes_imputed'] == 3*te.n_obs
    assert np.isnan(out.layers['counts'][:, :3]).all()
    # the genes still there barely move: library sizes are estimated from the genes present
    assert np.abs(out.X[:, 3:] - ref.X[:, 3:]).mean() < 0.05
    # one sample's NaN genes are missing for it alone and do not touch the other samples
    nan = te.copy(); nan.X[0, te.var_names.get_indexer(drop[:2])] = np.nan
    o2 = p.transform(nan)
    np.testing.assert_allclose(o2.obs.genes_imputed_share.to_numpy(), np.r_[2/50, np.zeros(te.n_obs - 1)])
    np.testing.assert_allclose(o2.X[1:], ref.X[1:], rtol=1e-6, atol=1e-6)
    # past max_missing_share: refused, naming the sample and its share
    many = te.copy(); many.X[4, te.var_names.get_indexer(sel[:11])] = np.nan   # 11/50 = 22% > 20%
    with pytest.raises(DataError, match=r'1 samples miss too many.*c64 \(22%\)'): p.transform(many)
    q = ExpressionPreprocessor.from_state(*p.state()); q.max_missing_share = 0.3
    assert q.transform(many).obs.genes_imputed_share.iloc[4] == pytest.approx(0.22)


def test_logcpm_library_rescaled_by_training_share(fitted):
    "Dropping highly expressed genes would inflate every log-CPM of the sample; the training count share corrects that."
    ps, _, te = fitted
    p = ps['logcpm_raw']
    kept = p.genes_in_[p.kept_]
    top = kept[np.argsort(-p.count_share_)[:5]]                      # the 5 genes carrying most counts
    top = [g for g in top if g not in set(p.genes_out_)][:3] or list(top[:3])
    p2 = ExpressionPreprocessor.from_state(*p.state())
    ref = p2.transform(te)
    out = p2.transform(te[:, [v for v in te.var_names if v not in set(top)]].copy())
    keep = ~np.isin(ref.var_names, top)
    shift = (out.X[:, keep] - ref.X[:, keep]).mean()
    naive = np.log2(1/(1 - p.count_share_[np.isin(kept, top)].sum()))   # what the plain total of the present genes would add
    assert naive > 0.1 and abs(shift) < 0.2*naive, (shift, naive)


def test_extra_genes_ignored_and_counted(fitted):
    ps, _, te = fitted
    p = ps['logcpm_combat']
    extra = ad.AnnData(np.ones((te.n_obs, 4), np.float32), obs=te.obs, var=pd.DataFrame(index=[f"NEW{i}" for i in range(4)]))
    both = ad.concat([te, extra], axis=1, merge='first')
    out = p.transform(both)
    assert out.uns['preprocess']['genes_extra'] == 4
    np.testing.assert_array_equal(out.X, p.transform(te).X)


def test_unseen_batch_flagged_and_not_adjusted(fitted):
    ps, _, te = fitted
    p = ps['logcpm_combat']
    new = te.copy(); new.obs['batch'] = new.obs.batch.astype(str); new.obs.iloc[:5, new.obs.columns.get_loc('batch')] = 'elsewhere'
    out = p.transform(new)
    assert out.obs.batch_seen.tolist() == [False]*5 + [True]*(te.n_obs - 5)
    assert out.obs.batch_adjusted.tolist() == out.obs.batch_seen.tolist()
    c = out.uns['preprocess']['combat']
    assert (c['unseen_batch_samples'], c['unseen_batches'], c['unadjusted_samples']) == (5, ['elsewhere'], 5)
    # not adjusted: the same preprocessor without its ComBat model gives these samples' values
    meta, arrays = p.state()
    meta = {**meta, 'combat': None, 'settings': {**meta['settings'], 'combat_key': None}}
    meta['arrays'] = {k: s for k, s in meta['arrays'].items() if not k.startswith('combat_')}
    plain = ExpressionPreprocessor.from_state(meta, {k: v for k, v in arrays.items() if not k.startswith('combat_')})
    np.testing.assert_allclose(out.X[:5], plain.transform(new[:5].copy()).X, rtol=1e-6)
    assert not np.allclose(out.X[5:], plain.transform(new[5:].copy()).X, atol=1e-3)   # the seen ones are adjusted
    # the batch column absent altogether: no sample is adjusted, none refused
    gone = te.copy(); del gone.obs['batch']
    assert not p.transform(gone).obs.batch_adjusted.any()


def test_training_only_combat(fitted):
    "Changing a test sample changes no training sample's output, nor any other test sample's, nor the fit."
    ps, tr, te = fitted
    for k in ('logcpm_combat', 'vst_combat'):
        p = ps[k]
        both = ad.concat([tr, te])
        ref = p.transform(both).X
        odd = both.copy(); odd.X[-1] = odd.X[-1]*50 + 3
        out = p.transform(odd).X
        np.testing.assert_allclose(out[:-1], ref[:-1], rtol=1e-6, atol=1e-6)
        assert not np.allclose(out[-1], ref[-1])
        q = ExpressionPreprocessor(**SETUPS[k]).fit(tr)                          # the fit never sees test samples
        np.testing.assert_array_equal(q.combat_.gamma, p.combat_.gamma)


def test_pooled_and_lonely_batches():
    a = nb_adata(n=40, g=60, seed=3, batches=('b1', 'b2'))
    a.obs['batch'] = a.obs.batch.astype(str)
    a.obs.iloc[0, a.obs.columns.get_loc('batch')] = 'lonely'
    p = ExpressionPreprocessor(method='logcpm', combat_key='batch', scale=True).fit(a)
    out = p.transform(a)
    assert np.isfinite(out.X).all() and out.uns['preprocess']['combat']['unfitted_samples'] == 1
    assert out.obs.batch_adjusted.tolist() == [False] + [True]*39
    a.obs.iloc[1, a.obs.columns.get_loc('batch')] = 'lonely2'                  # two singletons: pooled and fitted together
    p = ExpressionPreprocessor(method='logcpm', combat_key='batch', scale=True).fit(a)
    out = p.transform(a)
    assert out.obs.batch_adjusted.all() and p.combat_.batches == ['_small_batches', 'b1', 'b2']
    one = a[:1].copy(); one.obs['batch'] = 'lonely'                          # a new sample of a training-pooled batch: adjusted as the pool
    assert p.transform(one).obs.batch_adjusted.iloc[0]


def test_training_only_combat_close_to_all_samples_combat():
    "On a cohort whose batches are all in training, ComBat fitted on training moves test samples about as all-sample ComBat does."
    from organage.data.preprocess import log_cpm
    a = nb_adata(n=240, g=80, seed=5)
    p = ExpressionPreprocessor(method='logcpm', combat_key='batch', min_cpm=0, min_frac=0).fit(a[:160].copy())
    mine = p.transform(a).X
    old, _ = combat_correct(log_cpm(a.X.astype(float)), a.obs, 'batch', ['tissue'])
    d = np.abs(mine - old)[160:]
    assert d.mean() < 0.1*np.abs(old[160:] - log_cpm(a.X.astype(float))[160:]).mean()
