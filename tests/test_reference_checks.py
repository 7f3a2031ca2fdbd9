"""Reference cross-checks (issue 18): each implementation against an independent one on data drawn by hypothesis.

residual bias correction vs statsmodels OLS; conformal quantile vs numpy's inverted-CDF quantile and the exact
exchangeability coverage r/(n+1); pairwise-bootstrap p-values vs a plain numpy loop; Fisher-z intervals vs the closed
form, scipy's pearsonr interval and pingouin.compute_esci; 3-D Grad-CAM vs a hook-based hand computation and MONAI;
integrated gradients on latents vs the closed form of a quadratic and a numpy Riemann sum, and completeness on the
organ-age model; ComBat with the tissue covariate vs scanpy.pp.combat and a simulation with known effects; VST with
default subsampling and design vs pydeseq2; Otsu vs SimpleITK and a brute-force maximiser; MNI registration of a
volume moved by a known affine."""
import zlib
import numpy as np, pandas as pd, pytest, torch
import scipy.stats as sps
from hypothesis import given, settings, assume, strategies as st, HealthCheck
from hypothesis.extra import numpy as hnp
from torch import nn

from organage.evaluate.calibration import fit_bias_correction, fit_intervals
from organage.evaluate.stats import pairwise_mae, resample_indices
from organage.evaluate.associations import fisher_interval
from organage.evaluate.truth import _fisher_ci

SETTINGS = dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ages = st.floats(18, 90, allow_nan=False)
gaps = st.floats(-25, 25, allow_nan=False)


# ---------------------------------------------------------------- residual (polynomial) bias correction
@settings(**SETTINGS)
@given(rows=st.lists(st.tuples(ages, gaps, st.booleans()), min_size=14, max_size=80), degree=st.sampled_from([1, 2, 3]))
def test_residual_correction_equals_statsmodels_ols(rows, degree):
    "The corrected age is mu minus the OLS fit of (mu - age) on 1, age, ..., age^degree over the validation rows."
    import statsmodels.api as sm
    age = np.array([r[0] for r in rows]); mu = age + np.array([r[1] for r in rows])
    split = np.where([r[2] for r in rows], 'val', 'test')
    val = split == 'val'
    assume(val.sum() >= 10 and np.unique(np.round(age[val], 1)).size >= degree + 3)
    t = pd.DataFrame(dict(subject_id=range(len(age)), organ='heart', split=split, age=age, mu=mu, sigma=1.0))
    c = fit_bias_correction(t, 'residual', degree).apply(t)
    V = lambda a: np.vander(a, degree + 1, increasing=True)
    ols = sm.OLS(mu[val] - age[val], V(age[val])).fit()
    np.testing.assert_allclose(c.mu, mu - V(age) @ ols.params, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(c.mu_raw, mu)
    # and numpy.polyfit (highest power first) gives the same correction
    np.testing.assert_allclose(c.mu, mu - np.polyval(np.polyfit(age[val], mu[val] - age[val], degree), age), rtol=1e-7, atol=1e-6)


# ---------------------------------------------------------------- conformal quantile
def _cal_table(score_rows):
    "Prediction rows with |age - mu| / sigma equal to the drawn scores (sigma drawn too)."
    err = np.array([r[0] for r in score_rows]); sig = np.array([r[1] for r in score_rows])
    sign = np.where(np.arange(len(err)) % 2, 1.0, -1.0)
    age = 40 + 0.37 * np.arange(len(err))
    return pd.DataFrame(dict(subject_id=[f's{i}' for i in range(len(err))], organ='brain', split='val', age=age,
                             mu=age + sign * err * sig, sigma=sig)), err

score_rows = st.lists(st.tuples(st.floats(0.0, 20.0, allow_nan=False), st.floats(0.1, 10.0, allow_nan=False)), min_size=1, max_size=60)

@settings(**SETTINGS)
@given(rows=score_rows)
def test_conformal_k_is_the_textbook_finite_sample_quantile(rows):
    "k = the ceil((n+1)(1-alpha))-th smallest score = numpy.quantile(q = ceil((n+1)(1-alpha))/n, method='inverted_cdf')."
    t, _ = _cal_table(rows)
    score = np.abs(t.age - t.mu).to_numpy() / t.sigma.to_numpy()
    n = len(score)
    ic = fit_intervals(t, 'conformal', levels=(0.5, 0.8, 0.9, 0.95)).table
    for lv in (0.5, 0.8, 0.9, 0.95):
        k = ic[np.isclose(ic.level, lv)].k.item()
        q = np.ceil((n + 1) * lv) / n
        if q > 1: assert np.isinf(k); continue   # too few rows: the only valid interval is unbounded
        assert k == np.quantile(score, q, method='inverted_cdf')
        # the common snippet method='higher' is one rank more conservative for some n: never below ours
        assert k <= np.quantile(score, q, method='higher')

@settings(**SETTINGS)
@given(rows=st.lists(st.tuples(st.floats(0.0, 20.0, allow_nan=False), st.floats(0.1, 10.0, allow_nan=False)), min_size=5, max_size=40),
       level=st.sampled_from([0.5, 0.8, 0.9]))
def test_conformal_coverage_on_exchangeable_data_is_exact(rows, level):
    """Exchangeability: each of the n+1 rows is equally likely to be the test row. Averaged over that choice, the
    interval fitted on the other n covers the held-out row with probability >= level, exactly ceil((n+1) level)/(n+1)
    when the scores are distinct. (An off-by-one rank, or a plain empirical quantile, fails this.)"""
    t, _ = _cal_table(rows)
    score = np.abs(t.age - t.mu).to_numpy() / t.sigma.to_numpy()
    m = len(t); n = m - 1
    cover = []
    for i in range(m):
        cal = t.drop(index=i)
        lo, hi = fit_intervals(cal, 'conformal', levels=(level,)).interval(t.iloc[[i]], level)
        cover.append(bool(lo[0] <= t.age.iloc[i] <= hi[0]))
    r = int(np.ceil((n + 1) * level))
    cov = np.mean(cover)
    assert cov >= level - 1e-12
    if r <= n and np.unique(score).size == m: assert cov == pytest.approx(r / (n + 1))


# ---------------------------------------------------------------- pairwise-bootstrap p-values
@settings(**SETTINGS)
@given(a=st.lists(gaps, min_size=10, max_size=40), b=st.lists(gaps, min_size=10, max_size=40), seed=st.integers(0, 2**31))
def test_pairwise_p_values_equal_a_plain_numpy_loop(a, b, seed):
    "Row resampling per organ with the documented seed per group; p = 2 min(1 + #d<=0, 1 + #d>=0) / (B + 1), capped at 1."
    B = 199
    t = pd.concat([pd.DataFrame(dict(subject_id=[f'{o}{i}' for i in range(len(g))], organ=o, age=50.0 + np.arange(len(g)),
                                     mu=50.0 + np.arange(len(g)) + np.array(g))) for o, g in (('heart', a), ('liver', b))],
                  ignore_index=True)
    pw = pairwise_mae(t, split=None, n_resamples=B, seed=seed, resample='row', joint=False, min_n=10)
    reps, est = {}, {}
    for o, g in t.groupby('organ'):
        y, p = g.age.to_numpy(), g.mu.to_numpy(); e = p - y
        order = np.lexsort((y, e, np.abs(e)))                                  # the kernel's canonical row order
        gseed = (seed * 1_000_003 + zlib.crc32(o.encode())) % 2**63           # per-group seed (documented contract)
        reps[o] = np.array([np.abs(e[order][resample_indices(gseed, k, len(e))]).mean() for k in range(B)])
        est[o] = np.abs(e).mean()
    d = reps['heart'] - reps['liver']
    p_ref = min(1.0, 2 * min(1 + (d <= 0).sum(), 1 + (d >= 0).sum()) / (B + 1))
    row = pw.iloc[0]
    assert (row.organ_a, row.organ_b) == ('heart', 'liver')
    assert row.p == pytest.approx(p_ref, rel=1e-12)
    assert row['diff'] == pytest.approx(est['heart'] - est['liver'], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose([row.low, row.high], np.quantile(d, [0.025, 0.975]), rtol=1e-9, atol=1e-9)

def test_pairwise_p_value_is_calibrated_under_the_null():
    "Two organs with the same error distribution: the p-values are roughly uniform (not all tiny, not all 1)."
    rng = np.random.default_rng(0); ps = []
    for k in range(40):
        t = pd.concat([pd.DataFrame(dict(organ=o, age=50.0, mu=50 + rng.normal(0, 5, 60))) for o in ('a', 'b')], ignore_index=True)
        ps.append(pairwise_mae(t, split=None, n_resamples=400, seed=k, resample='row').p.item())
    ps = np.array(ps)
    assert 0.02 < (ps < 0.2).mean() < 0.45 and sps.kstest(ps, 'uniform').pvalue > 0.001


# ---------------------------------------------------------------- Fisher-z interval of r
@settings(**SETTINGS)
@given(xy=st.lists(st.tuples(st.floats(-100, 100, allow_nan=False), st.floats(-100, 100, allow_nan=False)), min_size=5, max_size=80),
       level=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_fisher_interval_equals_closed_form_scipy_and_pingouin(xy, level):
    import pingouin as pg
    x = np.array([v[0] for v in xy]); y = np.array([v[1] for v in xy]); n = len(x)
    assume(np.ptp(x) > 1e-3 and np.ptp(y) > 1e-3)
    res = sps.pearsonr(x, y); r = float(res.statistic)
    assume(abs(r) < 0.999)
    q = sps.norm.ppf(0.5 + level / 2)
    closed = np.tanh(np.arctanh(r) + np.array([-1, 1]) * q / np.sqrt(n - 3))
    ci = res.confidence_interval(confidence_level=level)            # scipy: Fisher transform
    esci = pg.compute_esci(stat=r, nx=n, ny=n, eftype='r', confidence=level, decimals=12)
    for ours in (fisher_interval(r, n, level), _fisher_ci(r, n, level)):
        np.testing.assert_allclose(ours, closed, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours, [ci.low, ci.high], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours, esci, rtol=1e-9, atol=1e-11)
    # Spearman: Fieller's variance 1.06 / (n - 3)
    rs = float(sps.spearmanr(x, y).statistic)
    if np.isfinite(rs) and abs(rs) < 0.999:
        np.testing.assert_allclose(fisher_interval(rs, n, level, 'spearman'),
                                   np.tanh(np.arctanh(rs) + np.array([-1, 1]) * q * np.sqrt(1.06 / (n - 3))), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- 3-D Grad-CAM
def hand_gradcam(layer:nn.Module, forward, x:torch.Tensor) -> np.ndarray:
    "Grad-CAM by hand: hooks on `layer`; channel weights = spatial mean of d(output)/d(activation); ReLU of the weighted sum."
    acts = []
    def keep(mod, inp, out): out.retain_grad(); acts.append(out)   # returns None: the output is left as it is
    h = layer.register_forward_hook(keep)
    try:
        out = forward(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.reshape(len(x), -1)[:, 0].sum().backward()
    finally: h.remove()
    A = acts[0]; G = A.grad
    w = G.mean(dim=tuple(range(2, G.ndim)), keepdim=True)
    return torch.relu((w * A).sum(1)).detach().numpy()

def _net3d(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 1)).eval()

@settings(**{**SETTINGS, 'max_examples': 15})
@given(vol=hnp.arrays(np.float32, (2, 6, 6, 6), elements=st.floats(-2, 2, width=32)), seed=st.integers(0, 50))
def test_gradcam_3d_equals_hand_computation_and_monai(vol, seed):
    from monai.visualize import GradCAM
    from organage.explain.gradcam import gradcam
    import torch.nn.functional as F
    net = _net3d(seed)
    x = torch.as_tensor(vol)[:, None]
    ref = hand_gradcam(net[3], net, x.clone())                                              # (2, 3, 3, 3)
    ours = gradcam(net, vol, layer='3', upsample=False, progress=False)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
    mon = GradCAM(nn_module=net, target_layers='3').compute_map(x.clone(), class_idx=0)[:, 0].detach().numpy()
    np.testing.assert_allclose(ours, mon, rtol=1e-4, atol=1e-6)
    up = gradcam(net, vol, layer='3', progress=False)                                      # trilinear to the input grid
    np.testing.assert_allclose(up, F.interpolate(torch.as_tensor(ref)[:, None], size=(6, 6, 6), mode='trilinear')[:, 0].numpy(),
                               rtol=1e-4, atol=1e-6)
    # 'negative' explains the age going down: ReLU of minus the weighted sum
    neg = gradcam(net, vol, layer='3', upsample=False, sign='negative', progress=False)
    def minus(z): return -net(z)
    np.testing.assert_allclose(neg, hand_gradcam(net[3], minus, x.clone()), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- integrated gradients on latents
def _latent_case(X, W, A, w, n_train):
    import anndata as ad
    enc = lambda x: x @ torch.as_tensor(W)
    As = torch.as_tensor(A)
    f = lambda z: ((z @ As) * z).sum(1) + z @ torch.as_tensor(w)
    obs = pd.DataFrame(dict(organ='liver', subject_id=[f's{i}' for i in range(len(X))]), index=[str(i) for i in range(len(X))])
    full = ad.AnnData(X.astype(np.float32), obs=obs)
    return enc, f, full[n_train:].copy(), full[:n_train].copy()

@settings(**{**SETTINGS, 'max_examples': 20})
@given(X=hnp.arrays(np.float64, (9, 5), elements=st.floats(-3, 3)), W=hnp.arrays(np.float64, (5, 3), elements=st.floats(-1, 1)),
       A=hnp.arrays(np.float64, (3, 3), elements=st.floats(-1, 1)), w=hnp.arrays(np.float64, (3,), elements=st.floats(-2, 2)),
       n_steps=st.integers(2, 12))
def test_latent_ig_equals_quadratic_closed_form_and_riemann_sum(X, W, A, w, n_steps):
    """f(z) = z'Az + w'z on latents z = xW, baseline b = mean training latent. Exact IG: (z - b) * (A_s (z + b) / 2 + w), A_s = A + A';
    Gauss-Legendre with >= 2 points integrates the linear-in-alpha gradient exactly. A numpy midpoint Riemann sum agrees."""
    from organage.explain.attribution import latent_attribution
    X, W, A, w = (a.astype(np.float32) for a in (X, W, A, w))
    enc, f, test, train = _latent_case(X, W, A, w, 4)
    res = latent_attribution(enc, {'liver': f}, test, train, n_steps=n_steps, progress=False)
    _, att = res.samples['liver']
    Z, b = test.X @ W, (train.X @ W).mean(0)
    As = A + A.T
    exact = (Z - b) * ((Z + b) @ As.T / 2 + w)
    np.testing.assert_allclose(att, exact, rtol=1e-3, atol=1e-3)
    al = (np.arange(2000) + 0.5) / 2000                                       # midpoint rule, numpy gradient 2 A_s z + w
    path = b[None, None] + al[None, :, None] * (Z - b)[:, None]
    riemann = (Z - b) * (path @ As.T + w).mean(1)
    np.testing.assert_allclose(att, riemann, rtol=1e-3, atol=1e-3)
    fz = lambda z: np.einsum('ni,ij,nj->n', z, A, z) + z @ w
    np.testing.assert_allclose(att.sum(1), fz(Z) - fz(b[None]), rtol=1e-3, atol=1e-3)    # completeness

def test_latent_ig_completeness_on_the_organ_age_model():
    "explain_latents on the real model: per sample, attributions sum to f(z) - f(mean training latent of the organ)."
    from organage.model.fusion import OrganAgeModel, ModelConfig
    from organage.explain.attribution import explain_latents, rna_latent_encoder, rna_latent_forward
    import anndata as ad
    torch.manual_seed(0)
    m = OrganAgeModel(ModelConfig(kind='aligned', modalities=['rna', 'xray'], organs=['liver', 'lung'], n_genes=12, latent_dim=6,
                                  proj_dim=4, enc_width=4, enc_depth=2, n_heads=2, n_layers=1)).eval()
    rng = np.random.default_rng(0)
    mk = lambda n, o, loc=0.0: ad.AnnData(rng.normal(loc, 1, size=(n, 12)).astype(np.float32),
                                 obs=pd.DataFrame(dict(organ=o, subject_id=[f'{o}{i}' for i in range(n)]), index=[f'{o}{i}' for i in range(n)]))
    train, test = ad.concat([mk(20, 'liver', -1.5), mk(20, 'lung', 1.5)]), ad.concat([mk(6, 'liver'), mk(6, 'lung')])
    train.obs_names_make_unique(); test.obs_names = [f't{i}' for i in range(12)]
    res = explain_latents(m, test, train, n_steps=64, progress=False)
    enc, lat = rna_latent_encoder(m), rna_latent_forward(m)
    for o in ('liver', 'lung'):
        obs, att = res.samples[o]
        with torch.no_grad():
            z = enc(torch.as_tensor(test[test.obs.organ == o].X))
            b = enc(torch.as_tensor(train[train.obs.organ == o].X)).mean(0, keepdim=True)
            gap = (lat(z, o) - lat(b, o)).reshape(-1).numpy()
        assert att.shape == (6, 6) and np.abs(gap).max() > 5e-3
        np.testing.assert_allclose(att.sum(1), gap, rtol=1e-2, atol=2e-4)


# ---------------------------------------------------------------- ComBat with the tissue covariate
def test_combat_with_tissue_covariate_equals_scanpy():
    import scanpy as sc, anndata as ad
    from _counts import nb_adata
    from organage.data.preprocess import combat_correct, log_cpm
    a = nb_adata(n=90, g=40, seed=11, batches=('x', 'y', 'z'), tissues=('lung', 'brain', 'heart'))
    L = log_cpm(a.X.astype(float))
    mine, info = combat_correct(L, a.obs, 'batch', covariates=('tissue',))
    assert info['covariates'] == ['tissue']
    # scanpy codes a categorical covariate with every level (patsy '~ 0 + tissue') next to every batch indicator: a singular
    # design (whether its solver raises LinAlgError or returns a pseudo-solution depends on the numpy/LAPACK build, so it is
    # not asserted). Its numeric covariates enter the design as given, so the tissue goes in as 0/1 indicator columns.
    b = ad.AnnData(L.copy(), obs=a.obs[['batch']].astype('category'))
    for lev in ('heart', 'lung'): b.obs[f'tissue_{lev}'] = (a.obs.tissue == lev).astype(float).to_numpy()
    ref = sc.pp.combat(b, key='batch', covariates=['tissue_heart', 'tissue_lung'], inplace=False)
    np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-8)

@settings(**{**SETTINGS, 'max_examples': 10})
@given(tissue_eff=hnp.arrays(np.float64, 30, elements=st.floats(-2, 2)), batch_loc=hnp.arrays(np.float64, 30, elements=st.floats(-2, 2)),
       batch_scale=hnp.arrays(np.float64, 30, elements=st.floats(0.5, 2.0)), share=st.floats(0.65, 0.85))
def test_combat_removes_a_known_batch_effect_and_keeps_a_known_tissue_effect(tissue_eff, batch_loc, batch_scale, share):
    """Log-scale data = gene mean + tissue effect + batch shift and scale, with tissue and batch correlated (batch b mostly
    brain). After ComBat with the tissue covariate, OLS on [1, brain, batch b] recovers the tissue effect and ~0 batch effect."""
    from organage.data.preprocess import combat_correct
    rng = np.random.default_rng(0); n, g = 240, 30
    batch = np.repeat(['a', 'b'], n // 2)
    brain = np.where(batch == 'b', rng.random(n) < share, rng.random(n) > share)
    noise = rng.normal(0, 0.5, (n, g))
    X = 5 + brain[:, None] * tissue_eff + (batch == 'b')[:, None] * batch_loc + np.where((batch == 'b')[:, None], batch_scale, 1.0) * noise
    obs = pd.DataFrame(dict(batch=batch, tissue=np.where(brain, 'brain', 'lung')))
    Y, info = combat_correct(X, obs, 'batch', covariates=('tissue',))
    D = np.c_[np.ones(n), brain, batch == 'b'].astype(float)
    coef = np.linalg.lstsq(D, Y, rcond=None)[0]
    assert np.abs(coef[1] - tissue_eff).max() < 0.35 and np.median(np.abs(coef[1] - tissue_eff)) < 0.12
    assert np.abs(coef[2]).max() < 0.35 and np.median(np.abs(coef[2])) < 0.12
    raw = np.linalg.lstsq(D, X, rcond=None)[0]
    ok = np.abs(batch_loc) > 0.5                                     # the test sees a real batch effect there
    if ok.any(): assert np.median(np.abs(raw[2][ok])) > 0.4
    sd_ratio = (Y - D[:, :2] @ coef[:2])[batch == 'b'].std(0) / (Y - D[:, :2] @ coef[:2])[batch == 'a'].std(0)
    assert np.median(np.abs(np.log(sd_ratio))) < 0.2


# ---------------------------------------------------------------- VST with default subsampling and design
def test_vst_default_subsample_and_design_equal_pydeseq2():
    "Defaults (200 seeded training samples, design ~tissue): the trend is pydeseq2's vst_fit(use_design=True) on those rows."
    import warnings
    from pydeseq2.dds import DeseqDataSet
    from _counts import nb_adata
    from organage.data.preprocess import ExpressionPreprocessor
    a = nb_adata(n=260, g=120, seed=12, batches=('b1',), tissues=('lung', 'brain'))
    p = ExpressionPreprocessor(method='vst', min_cpm=0, min_frac=0).fit(a)
    assert p.vst_max_samples == 200 and p.vst_design == 'tissue' and p.vst_design_used_ == '~tissue'
    rows = np.sort(np.random.default_rng(p.seed).choice(260, 200, replace=False))
    X = a.X[rows].astype(np.int64); keep = X.sum(0) > 0
    meta = pd.DataFrame(dict(tissue=a.obs.tissue.to_numpy()[rows]), index=[f's{i}' for i in rows])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dds = DeseqDataSet(counts=pd.DataFrame(X[:, keep], index=meta.index, columns=np.asarray(a.var_names)[keep]),
                           metadata=meta, design='~tissue', quiet=True, n_cpus=1)
        dds.vst_fit(use_design=True)
    assert p.vst_used_ == dds.vst_fit_type == 'parametric'
    np.testing.assert_allclose(p.vst_trend_, dds.uns['vst_trend_coeffs'], rtol=1e-6)
    # the design matters on these counts (tissue programmes), so a dropped design would be seen
    p0 = ExpressionPreprocessor(method='vst', min_cpm=0, min_frac=0, vst_design=None).fit(a)
    assert p0.vst_design_used_ == '~1' and not np.allclose(p0.vst_trend_, p.vst_trend_, rtol=1e-3)


# ---------------------------------------------------------------- Otsu threshold
def _between_class_variance(a, t):
    lo, hi = a[a <= t], a[a > t]
    if len(lo) == 0 or len(hi) == 0: return 0.0
    return len(lo) * len(hi) / len(a)**2 * (lo.mean() - hi.mean())**2

@settings(**SETTINGS)
@given(lo=st.lists(st.floats(0, 40, allow_nan=False), min_size=20, max_size=300),
       hi=st.lists(st.floats(60, 100, allow_nan=False), min_size=20, max_size=300), gap=st.floats(0, 150))
def test_otsu_maximises_between_class_variance_and_agrees_with_simpleitk(lo, hi, gap):
    "Against a brute-force maximiser over every cut of the raw values (within a bin) and SimpleITK's Otsu filter."
    import SimpleITK as sitk
    from organage.data.preprocess import otsu_threshold
    a = np.r_[lo, np.array(hi) + gap]
    assume(np.unique(a).size > 10)
    t = otsu_threshold(a)
    cuts = np.unique(a)[:-1]
    best = max(_between_class_variance(a, c) for c in cuts)
    width = np.ptp(a) / 128
    # the threshold is within one histogram bin of a (near-)optimal cut of the raw values. (It is the centre of the last
    # bin of the lower class, as in skimage.filters.threshold_otsu, so `a > t` can move that bin's upper half across.)
    near = [c for c in cuts if abs(c - t) <= width] + [t]
    assert max(_between_class_variance(a, c) for c in near) >= 0.97 * best
    f = sitk.OtsuThresholdImageFilter(); f.SetNumberOfHistogramBins(128); f.SetInsideValue(0); f.SetOutsideValue(1)
    f.Execute(sitk.GetImageFromArray(a.astype(np.float64)[None, None]))
    assert abs(t - f.GetThreshold()) <= 1.5 * width


# ---------------------------------------------------------------- registration to the MNI template
def test_mni_registration_recovers_a_known_affine():   # ~1 s at 32^3
    "The MNI template moved by a known 12-dof affine, written with the template's grid affine, registers back onto it."
    import SimpleITK as sitk
    from organage.data.preprocess import mni_template, register_to_template, _sitk_image
    t1, mask, aff = mni_template(32)
    fixed = _sitk_image(t1, aff)
    true = sitk.AffineTransform(3)
    R = np.array(sitk.Euler3DTransform((0, 0, 0), 0.08, -0.06, 0.1).GetMatrix()).reshape(3, 3)
    true.SetMatrix((R @ np.diag([0.93, 1.06, 1.04])).ravel().tolist()); true.SetTranslation((8.0, -6.0, 10.0))
    true.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([15.5] * 3))
    moved = sitk.GetArrayFromImage(sitk.Resample(fixed, fixed, true, sitk.sitkLinear, 0.0)).transpose(2, 1, 0).astype(np.float32)
    reg = register_to_template((moved, aff), size=32, iterations=200)
    c = lambda v: np.corrcoef(v[mask], t1[mask])[0, 1]
    err = lambda v: np.abs(v - t1)[mask].mean() / t1[mask].mean()
    assert c(moved) < 0.8 and c(reg) > 0.97, (c(moved), c(reg))
    assert err(reg) < 0.1 < err(moved), (err(reg), err(moved))
