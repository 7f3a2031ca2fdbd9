"Preprocessing: fitted on training data only, agrees with pydeseq2/scanpy, removes batch effects, image transforms."
import numpy as np
import pandas as pd
import pytest
import anndata as ad
from hypothesis import given, settings, strategies as st, HealthCheck
from scipy import stats

from _counts import nb_adata
from organage.core import DataError, ConfigError
from organage.data.preprocess import (ExpressionPreprocessor, log_cpm, combat_correct, TopPercentNormalize, BrainMask,
                                      radiograph_transform, volume_transform, resample_to_grid, register_to_template,
                                      mni_template, otsu_threshold)




def test_logcpm_formula():
    a = nb_adata()
    out = ExpressionPreprocessor(method='logcpm', min_cpm=0, min_frac=0).fit(a).transform(a)
    X = a.X.astype(float)
    np.testing.assert_allclose(out.X, np.log2(X/X.sum(1, keepdims=True)*1e6 + 1), rtol=1e-5)
    np.testing.assert_array_equal(out.layers['counts'], a.X)


def test_vst_matches_pydeseq2_when_fitted_on_everything():
    "With no subsampling and no design, our VST equals pydeseq2's vst_fit + vst_transform on the same training counts."
    import warnings
    from pydeseq2.dds import DeseqDataSet
    a = nb_adata(n=40, g=60, seed=1, batches=('b1',))
    tr, te = a[:30].copy(), a[30:].copy()
    p = ExpressionPreprocessor(method='vst', min_cpm=0, min_frac=0, vst_max_samples=10**6, vst_max_genes=10**6, vst_design=None).fit(tr)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dds = DeseqDataSet(counts=pd.DataFrame(tr.X.astype(int), index=tr.obs_names, columns=tr.var_names),
                           metadata=pd.DataFrame(index=tr.obs_names), design='~1', quiet=True, n_cpus=1)
        dds.vst_fit()
        ref = dds.vst_transform(te.X.astype(float))
    assert p.vst_used_ == dds.vst_fit_type
    np.testing.assert_allclose(p.transform(te).X, ref, rtol=1e-4, atol=1e-4)


@settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(idx=st.lists(st.integers(0, 39), min_size=1, max_size=15, unique=True), method=st.sampled_from(['vst', 'logcpm']))
def test_no_test_statistics_leak(idx, method, fitted):
    "Without ComBat, a test sample's output does not depend on which other test samples are transformed with it."
    p, te = fitted[method]
    full = p.transform(te).X
    part = p.transform(te[idx].copy()).X
    np.testing.assert_allclose(part, full[idx], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def fitted():
    a = nb_adata(n=100, g=80, seed=2, tissues=('lung', 'brain'))
    tr, te = a[:60].copy(), a[60:].copy()
    return {m: (ExpressionPreprocessor(method=m, n_top_genes=40, scale=True).fit(tr), te) for m in ('vst', 'logcpm')}


def test_fit_state_comes_from_training_only():
    a = nb_adata(n=100, g=80, seed=3)
    tr, te = a[:60].copy(), a[60:].copy()
    p1 = ExpressionPreprocessor(method='vst', n_top_genes=30, scale=True).fit(tr)
    te2 = te.copy(); te2.X = te2.X*5 + 7  # wildly different test data
    p1.transform(te2)
    p2 = ExpressionPreprocessor(method='vst', n_top_genes=30, scale=True).fit(tr)
    np.testing.assert_array_equal(p1.genes_out_, p2.genes_out_)
    np.testing.assert_allclose(p1.mean_, p2.mean_); np.testing.assert_allclose(p1.vst_trend_, p2.vst_trend_)
    out = p1.transform(tr)
    np.testing.assert_allclose(out.X.mean(0), 0, atol=1e-4); np.testing.assert_allclose(out.X.std(0), 1, atol=1e-3)
    assert out.n_vars == 30 and set(out.var_names) <= set(tr.var_names)


def test_vst_stabilises_variance():
    "Across genes, SD depends on the mean for normalised counts, much less after VST (one condition, NB noise)."
    a = nb_adata(n=120, g=200, seed=4, batches=('b1',))
    v = ExpressionPreprocessor(method='vst', min_cpm=0, min_frac=0).fit(a).transform(a).X
    X = a.X/a.X.sum(1, keepdims=True)*a.X.sum(1).mean()
    r_raw = stats.spearmanr(X.mean(0), X.std(0))[0]
    r_vst = stats.spearmanr(v.mean(0), v.std(0))[0]
    assert r_raw > 0.9 and abs(r_vst) < 0.6


def _batch_F(X, batch):
    "Median over genes of the one-way ANOVA F statistic for batch."
    groups = [X[batch == b] for b in np.unique(batch)]
    return float(np.median(stats.f_oneway(*groups, axis=0).statistic))


def test_combat_removes_batch_keeps_tissue():
    a = nb_adata(n=160, g=100, seed=5, batches=('b1', 'b2', 'b3'), tissues=('lung', 'brain'))
    raw = ExpressionPreprocessor(method='logcpm').fit(a).transform(a)
    cor = ExpressionPreprocessor(method='logcpm', combat_key='batch').fit(a).transform(a)
    b, t = a.obs.batch.to_numpy(), a.obs.tissue.to_numpy()
    assert _batch_F(raw.X, b) > 10 and _batch_F(cor.X, b) < 2
    assert _batch_F(cor.X, t) > 0.8*_batch_F(raw.X, t)  # tissue differences preserved (covariate)
    assert cor.uns['preprocess']['combat']['covariates'] == ['tissue']


def test_combat_pools_singleton_batches(caplog):
    a = nb_adata(n=40, g=50, seed=6)
    a.obs['batch'] = a.obs.batch.astype(str); a.obs.iloc[0, a.obs.columns.get_loc('batch')] = 'lonely'
    with caplog.at_level('WARNING', logger='organage'):
        out = ExpressionPreprocessor(method='logcpm', combat_key='batch').fit(a).transform(a)
    assert out.uns['preprocess']['combat']['pooled_samples'] == 1 and 'pooled' in caplog.text
    with pytest.raises(DataError, match="batch column 'plate' missing"):
        ExpressionPreprocessor(method='logcpm', combat_key='plate').fit(a)


def test_combat_agrees_with_scanpy():
    import scanpy as sc
    a = nb_adata(n=60, g=40, seed=7, batches=('x', 'y'))
    L = log_cpm(a.X.astype(float))
    mine, _ = combat_correct(L, a.obs, 'batch', covariates=())
    b = ad.AnnData(L.copy(), obs=a.obs[['batch']].astype('category'))
    np.testing.assert_allclose(mine, sc.pp.combat(b, key='batch', inplace=False), rtol=1e-6)


def test_errors():
    a = nb_adata()
    with pytest.raises(ConfigError): ExpressionPreprocessor(method='tpm')
    with pytest.raises(ConfigError, match='before fit'): ExpressionPreprocessor().transform(a)
    p = ExpressionPreprocessor(method='logcpm').fit(a)
    # missing training genes are imputed up to max_missing_share, refused past it with the samples named
    with pytest.raises(DataError, match=r"80 samples miss too many of the model's genes.*c0 \(92%\)"): p.transform(a[:, :10].copy())
    assert p.transform(a[:, 5:].copy()).obs.genes_imputed_share.max() <= 0.2
    bad = a.copy(); bad.X[0, 0] = -1
    with pytest.raises(DataError, match='negative'): ExpressionPreprocessor(method='logcpm').fit(bad)


def test_on_a_simulated_cohort_age_signal_survives(tmp_path):
    "VST + ComBat fitted on train keeps the lung age signal: ridge on train predicts test bio age well."
    from sklearn.linear_model import RidgeCV
    from organage.data.synth import simulate_cohort
    import organage.data.cohort as cohort
    from organage.data.splits import split_subjects, assign_splits
    root = simulate_cohort(tmp_path/'c', subjects=400, n_genes=1000, image_size=16, volume_size=16, paired_fraction=0.2, seed=4,
                           cohort_shares=(1.0, 0.0, 0.0))
    rna = cohort.read_cohort(root, modalities=['rna'])['rna']
    sp = assign_splits(rna.obs, split_subjects(rna.obs, seed=0))
    tr, te = rna[(sp == 'train').to_numpy()].copy(), rna[(sp == 'test').to_numpy()].copy()
    p = ExpressionPreprocessor(method='vst', combat_key='batch', scale=True).fit(tr)
    A, B = p.transform(tr), p.transform(te)
    truth = pd.read_csv(root/'truth.csv').set_index(['subject_id', 'organ']).bio_age
    y = lambda o: truth.loc[list(zip(o.subject_id, o.organ))].to_numpy()
    m = RidgeCV(alphas=np.logspace(0, 5, 11)).fit(A.X, y(A.obs))
    mae = np.abs(m.predict(B.X) - y(B.obs)).mean()
    null = np.abs(y(A.obs).mean() - y(B.obs)).mean()
    assert mae < 0.8*null, (mae, null)


# ---------------------------------------------------------------- images
def test_top_percent_normalize_matches_definition():
    rng = np.random.default_rng(0)
    v = np.zeros((20, 20, 20), np.float32); v[4:16, 4:16, 4:16] = rng.gamma(2, 100, (12, 12, 12))
    out = TopPercentNormalize(1.0)(v).numpy()
    nz = v[v != 0]; k = int(round(nz.size*0.01))
    np.testing.assert_allclose(out, v/np.sort(nz)[-k:].mean(), rtol=1e-5)


def test_otsu_and_brain_mask_on_a_simulated_volume(tmp_path):
    from organage.data.synth import simulate_cohort
    import nibabel as nib
    root = simulate_cohort(tmp_path/'c', subjects=30, n_genes=200, image_size=16, volume_size=32, seed=1, cohort_shares=(0, 0, 1))
    f = sorted((root/'ixi'/'IXI-T1').glob('*.nii.gz'))[0]
    v = np.asarray(nib.load(f).dataobj, np.float32)
    m = BrainMask().compute(v)
    assert 0.1 < m.mean() < 0.6 and m[16, 16, 16]
    assert not m[0, 0, 0]
    t = volume_transform(24, 'top1', mask=True)(v)
    assert tuple(t.shape) == (1, 24, 24, 24) and float(t[0, 0, 0, 0]) == 0
    # registration to MNI brings the volume closer to the template than resampling alone
    t1, mask, _ = mni_template(32)
    raw = resample_to_grid(f, 32, centre=(0, -17, 5)); reg = register_to_template(f, size=32)
    c = lambda a: np.corrcoef(a[mask], t1[mask])[0, 1]
    assert reg.shape == (32, 32, 32) and c(reg) > c(raw)
    two = np.r_[np.zeros(100), np.ones(100)]
    assert ((two > otsu_threshold(two)) == (two == 1)).all()


def test_radiograph_transform_on_a_simulated_jpg(tmp_path):
    from organage.data.synth import simulate_cohort
    from PIL import Image
    root = simulate_cohort(tmp_path/'c', subjects=20, n_genes=200, image_size=48, volume_size=16, seed=1, cohort_shares=(0, 1, 0))
    f = sorted((root/'chexpert').rglob('*_frontal.jpg'))[0]
    im = np.asarray(Image.open(f), np.float32)/255
    x = radiograph_transform(32)(im)
    assert tuple(x.shape) == (1, 32, 32) and abs(float(x.min())) < 1e-6 and abs(float(x.max()) - 1) < 1e-6
    z = radiograph_transform(32, 'zscore')(im)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 0.02
    with pytest.raises(ConfigError): radiograph_transform(32, 'hist')
