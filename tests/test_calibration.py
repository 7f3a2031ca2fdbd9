"Calibration: bias correction, interval calibration (scaling, split conformal), coverage, organ gaps and z-scores."
import numpy as np, pandas as pd, pytest
from scipy import stats as sps
from organage.core import DataError, NotEnoughDataError
from organage.evaluate.predictions import simulate_predictions, check_predictions
from organage.evaluate.calibration import (fit_bias_correction, bias_report, fit_intervals, coverage_table, organ_zscores, calibrate, age_bins, organ_gap,
                                           IntervalCalibration, LEVELS)

def linear_table(a=0.7, b=12.0, n=200, noise=0.0, seed=0, organ='brain'):
    r = np.random.default_rng(seed); age = r.uniform(20, 80, n)
    return pd.DataFrame(dict(subject_id=[f's{i}' for i in range(n)], organ=organ, modality='fusion',
                             split=np.where(np.arange(n) % 2, 'val', 'test'), age=age,
                             mu=a * age + b + r.normal(0, noise, n) if noise else a * age + b, sigma=2.0))

def test_cole_exact_on_noiseless_linear_bias():
    t = linear_table(a=0.7, b=12.0)
    bc = fit_bias_correction(t, 'cole')
    assert bc.params.slope.item() == pytest.approx(0.7) and bc.params.intercept.item() == pytest.approx(12.0)
    c = bc.apply(t)
    np.testing.assert_allclose(c.mu, t.age, atol=1e-9)
    np.testing.assert_allclose(c.sigma, 2.0 / 0.7)
    np.testing.assert_allclose(c.mu_raw, t.mu)

def test_residual_method_removes_quadratic_bias():
    r = np.random.default_rng(1); age = r.uniform(20, 80, 2000)
    gap = 0.004 * (age - 50)**2 - 0.3 * (age - 50) + r.normal(0, 2, 2000)
    t = pd.DataFrame(dict(subject_id=range(2000), organ='heart', modality='fusion', split=np.where(age > 0, 'val', ''), age=age,
                          mu=age + gap, sigma=1.0))
    t.loc[::2, 'split'] = 'test'
    lin, quad = fit_bias_correction(t, 'residual', 1).apply(t), fit_bias_correction(t, 'residual', 2).apply(t)
    te = t.split == 'test'
    # a linear correction leaves the U-shape (gap vs age^2), the quadratic one does not
    u = lambda c: np.corrcoef((c.age[te] - 50)**2, (c.mu - c.age)[te])[0, 1]
    assert u(lin) > 0.3 and abs(u(quad)) < 0.1
    assert (quad.mu - quad.age)[te].std() == pytest.approx(2.0, rel=0.1)

def test_fitted_on_validation_only():
    t = simulate_predictions(n=400, seed=2)
    bc1 = fit_bias_correction(t, 'cole')
    t2 = t.copy(); te = t2.split == 'test'; t2.loc[te, 'mu'] = t2.loc[te, 'mu'] + 100   # test rows cannot matter
    pd.testing.assert_frame_equal(bc1.params, fit_bias_correction(t2, 'cole').params)
    pd.testing.assert_frame_equal(fit_intervals(bc1.apply(t)).table, fit_intervals(bc1.apply(t2)).table)

def test_bias_report_reports_both_and_gap_age_correlation():
    t = simulate_predictions(n=3000, shrink=0.5, seed=3)
    for method in ('cole', 'residual'):
        rep = bias_report(fit_bias_correction(t, method).apply(t)).set_index('organ')
        assert (rep.r_gap_age_raw < -0.5).all() and (rep.r_gap_age.abs() < 0.1).all()
        sub = t[t.split == 'test']
        e = (sub.mu - sub.age)[sub.organ == 'lung']
        assert rep.loc['lung', 'mae_raw'] == pytest.approx(np.abs(e).mean())
        assert rep.loc['lung', 'n'] == len(e)

def test_conformal_quantile_rule_and_coverage():
    t = simulate_predictions(n=4000, seed=4, splits=(('val', .5), ('test', .5)))
    ic = fit_intervals(t, 'conformal')
    val = t[(t.split == 'val') & (t.organ == 'brain')]
    s = np.sort(np.abs(val.age - val.mu) / val.sigma); n = len(s)
    for lv in LEVELS:
        k = ic.table[(ic.table.organ == 'brain') & np.isclose(ic.table.level, lv)].k.item()
        assert k == s[int(np.ceil((n + 1) * lv)) - 1]
    cov = coverage_table(t, ic); allc = cov[cov.group_by == 'all']
    for lv in LEVELS:
        c = allc[np.isclose(allc.level, lv)]
        assert np.all(np.abs(c.coverage - lv) < 0.04), c

def test_scaling_and_coverage_breakdowns():
    t = simulate_predictions(n=3000, seed=5, sigma_scale=0.5, shrink=1.0)
    ic = fit_intervals(t, 'scaling')
    # errors are Gaussian with sd a bit above sigma / 0.5 (the simulator adds 3 years of true-age noise)
    assert ((ic.table.scale > 2.0) & (ic.table.scale < 2.6)).all()
    cov = coverage_table(t, ic)
    assert set(cov.group_by) == {'all', 'age_bin', 'sex', 'site'}
    a = cov[(cov.group_by == 'all') & np.isclose(cov.level, 0.9)]
    assert np.all(np.abs(a.coverage - 0.9) < 0.04)
    w = cov[(cov.group_by == 'all')]
    sub = t[t.split == 'test']
    lo, hi = ic.interval(sub, 0.95)
    assert w[np.isclose(w.level, 0.95)].eval('mean_width * n').sum() / len(sub) == pytest.approx(np.mean(hi - lo))
    # per-group counts add up
    for g in ('age_bin', 'sex', 'site'):
        assert cov[(cov.group_by == g) & np.isclose(cov.level, 0.5)].n.sum() == len(sub)
    # batch stands in for site; an explicit missing column is an error
    c2 = coverage_table(t.rename(columns={'site': 'batch'}), ic)
    assert 'batch' in set(c2.group_by)
    with pytest.raises(DataError, match='scanner'): coverage_table(t, ic, groups=['scanner'])

def test_zscores_and_gaps():
    t = simulate_predictions(n=2000, seed=6)
    c = fit_bias_correction(t).apply(t); ic = fit_intervals(c)
    z = organ_zscores(c, ic)
    sub = c[c.split == 'test']
    np.testing.assert_allclose(z.gap, organ_gap(sub))
    val = c[c.split == 'val']
    sd = (val.mu - val.age)[val.organ == 'heart'].std()
    h = z[z.organ == 'heart']
    np.testing.assert_allclose(h.z, h.gap / sd)
    np.testing.assert_allclose(h.gap_hi - h.gap_lo, h.hi - h.lo)
    # calibrated 95% gap intervals cover 0 - (true gap) ... i.e. the age itself ~95% of the time
    assert abs(((z.lo <= z.age) & (z.age <= z.hi)).mean() - 0.95) < 0.03

def test_calibrate_end_to_end():
    r = calibrate(simulate_predictions(n=1000, seed=7), bias='residual', degree=2, intervals='scaling', levels=(0.5, 0.9))
    assert {'mu_raw', 'sigma_raw', 'gap', 'lo95', 'hi95'} <= set(r.predictions.columns)
    assert set(r.coverage.level) == {0.5, 0.9, 0.95}
    assert len(r.zscores) == (r.predictions.split == 'test').sum()
    r0 = calibrate(simulate_predictions(n=200, seed=7), bias=None)
    assert r0.bias is None and r0.bias_report is None

def test_age_bins():
    b = age_bins([18, 19.99, 20, 89.9], width=10)
    assert b.astype(str).tolist() == ['10-20', '10-20', '20-30', '80-90']
    assert age_bins([20, 40], width=20, start=0).astype(str).tolist() == ['20-40', '40-60']

# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize('col,val,msg', [('age', np.nan, 'column age'), ('mu', np.inf, 'column mu'),
                                         ('sigma', 0.0, 'sigma must be positive'), ('sigma', -1.0, 'sigma must be positive'),
                                         ('age', 'old', 'column age'), ('organ', None, 'column organ: missing values')])
def test_bad_values_are_named(col, val, msg):
    t = simulate_predictions(n=50)
    t[col] = t[col].astype(object); t.loc[7, col] = val
    with pytest.raises(DataError, match=msg) as e: calibrate(t)
    assert '1 of 150 rows (first: 7)' in str(e.value)

def test_bad_tables():
    t = simulate_predictions(n=200)
    with pytest.raises(DataError, match='missing column'): calibrate(t.drop(columns='sigma'))
    with pytest.raises(DataError, match='no rows'): calibrate(t.iloc[:0])
    with pytest.raises(DataError, match="split == 'val'"): calibrate(t.assign(split='test'))
    with pytest.raises(DataError, match='not a table'): check_predictions([1, 2, 3])
    # an organ with too few validation rows is a clear NotEnoughDataError naming it
    small = pd.concat([t, simulate_predictions(n=8, organs=('kidney',), seed=1)])
    with pytest.raises(NotEnoughDataError, match='kidney'): fit_bias_correction(small, strict=True)
    rep = calibrate(small).bias_report.set_index('organ')   # by default: reported, left uncorrected, run goes on
    assert rep.loc['kidney', 'status'].startswith('uncorrected: ') and 'need at least 10' in rep.loc['kidney', 'status']
    assert (rep.drop(index='kidney').status == 'ok').all()
    # an organ with no validation rows at all: uncorrected, unbounded intervals, still in every table
    none = pd.concat([t, simulate_predictions(n=30, organs=('spleen',), seed=2).assign(split='test')])
    r = calibrate(none)
    st = r.bias_report.set_index('organ').loc['spleen', 'status']; assert st.startswith('uncorrected: ') and '0 val rows' in st
    sp = r.predictions[r.predictions.organ == 'spleen']
    assert np.isinf(sp.hi95).all() and (sp.mu == sp.mu_raw).all()
    sp = calibrate(none, bias='residual', degree=2).predictions.query("organ == 'spleen'")
    assert np.isfinite(sp.mu).all() and (sp.mu == sp.mu_raw).all()
    # conformal needs 19 calibration rows for 95%
    few = linear_table(n=30, noise=2.0)
    ic = fit_intervals(few, levels=(0.95,))
    assert np.isinf(ic.table.k).all() and 'needs at least 19' in ic.table.status.iloc[0]
    lo, hi = ic.interval(few, 0.95); assert np.isinf(lo).all() and np.isinf(hi).all()
    with pytest.raises(DataError, match='not calibrated'): fit_intervals(t, levels=(0.9,)).interval(t, 0.95)
    with pytest.raises(DataError, match='no interval calibration'): fit_intervals(t).interval(t.assign(organ='liver'), 0.9)
