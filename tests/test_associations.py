"Associations: inter-organ gap correlation and the phenotype scan, cross-checked against scipy/statsmodels/pingouin and scored on cohorts with known answers."
import numpy as np, pandas as pd, pytest
import scipy.stats as sps
import statsmodels.formula.api as smf
from statsmodels.stats.multitest import multipletests
import pingouin as pg
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from organage.core import DataError
from organage.evaluate.associations import (simulate_associations, gap_matrix, check_gaps, gap_correlation, bootstrap_correlation,
                                            fisher_interval, true_acceleration_correlation, association_scan, encode_column,
                                            annotate_known_effects, scan_recall)
from organage.report.plots import plot_gap_correlation, plot_volcano, plot_manhattan

SEEDS = range(12)

@pytest.fixture(scope='module')
def sim(): return simulate_associations(2500, seed=11)

@pytest.fixture(scope='module')
def scans():
    out = []
    for s in SEEDS:
        d = simulate_associations(2500, seed=s)
        out.append((d, association_scan(d.gaps, d.phenotypes)))
    return out


# ---------------------------------------------------------------- correlation
def test_correlation_matches_scipy_and_pingouin(sim):
    c = gap_correlation(sim.gaps, n_boot=0)
    W = gap_matrix(sim.gaps)
    assert len(c.table) == 15 and (c.table.status == 'ok').all()
    for row in c.table.itertuples():
        both = W[[row.organ_a, row.organ_b]].dropna()
        ref = sps.pearsonr(both.iloc[:, 0], both.iloc[:, 1]); p = pg.corr(both.iloc[:, 0], both.iloc[:, 1])
        assert row.n == len(both) == p['n'].iloc[0]
        assert row.r == pytest.approx(ref.statistic, abs=1e-12) and row.p == pytest.approx(ref.pvalue, rel=1e-9)
        assert row.r == pytest.approx(p['r'].iloc[0], abs=1e-12)
        assert [row.fisher_low, row.fisher_high] == pytest.approx(list(p['CI95'].iloc[0]), abs=0.006)   # pingouin rounds
        assert c.matrix.loc[row.organ_a, row.organ_b] == c.matrix.loc[row.organ_b, row.organ_a] == row.r
        assert c.n.loc[row.organ_a, row.organ_b] == row.n
    assert np.allclose(c.table.q, sps.false_discovery_control(c.table.p))
    s = gap_correlation(sim.gaps, method='spearman', n_boot=0).table.iloc[0]
    both = W[[s.organ_a, s.organ_b]].dropna()
    assert s.r == pytest.approx(sps.spearmanr(both.iloc[:, 0], both.iloc[:, 1]).statistic, abs=1e-12)


def test_bootstrap_sd_and_interval_known_answer():
    "SD of r is (1 - rho^2) / sqrt(n) for normal data; the percentile interval agrees with Fisher's and covers rho ~95%."
    rng = np.random.default_rng(5); rho, n = 0.35, 2000
    x, y = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], n).T
    b = bootstrap_correlation(x, y, n_boot=3000, seed=1)
    assert b['r_sd'] == pytest.approx((1 - rho**2) / np.sqrt(n), rel=0.1)
    r = sps.pearsonr(x, y).statistic
    assert [b['ci_low'], b['ci_high']] == pytest.approx(list(fisher_interval(r, n)), abs=0.006)
    hits = 0
    for k in range(150):
        x, y = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], 150).T
        bb = bootstrap_correlation(x, y, n_boot=300, seed=k)
        hits += bb['ci_low'] <= rho <= bb['ci_high']
    assert 0.88 <= hits / 150 <= 0.99


def test_true_correlation_recovered_and_attenuation_explained(sim):
    t_all = true_acceleration_correlation(sim.truth, n_boot=0)
    assert t_all.table.r.mean() == pytest.approx(9 / 25, abs=0.02)         # systemic^2 / (systemic^2 + organ^2)
    t = true_acceleration_correlation(sim.truth, sim.gaps, n_boot=300)
    c = t.comparison
    assert (c.n == c.n_true).all() and len(c) == 15
    assert (c.r_estimated < c.r_true).all()                                # attenuated by prediction noise, every pair
    assert not c.covered.any()                                             # ... enough that intervals miss the truth
    assert c.expected_covered.mean() >= 0.8                               # ... and the attenuation formula explains it
    assert c.r_disattenuated.mean() == pytest.approx(c.r_true.mean(), abs=0.04)
    assert c.reliability_a.between(0.6, 0.8).all()                         # shrink 0.8, noise 4: about 0.71


def test_gap_table_errors(sim):
    g = sim.gaps
    with pytest.raises(DataError, match='repeated'): gap_correlation(pd.concat([g, g.iloc[:3]]))
    with pytest.raises(DataError, match='lacks columns'): gap_correlation(g, value='gap_corrected')
    with pytest.raises(DataError, match='infinite'): gap_correlation(g.assign(gap=np.where(g.index == 0, np.inf, g.gap)))
    _, dropped = check_gaps(g.assign(gap=np.where(g.index < 7, np.nan, g.gap)))
    assert dropped == {'missing_gap': 7}
    with pytest.raises(DataError, match='unknown correlation method'): gap_correlation(g, method='kendall')


# ---------------------------------------------------------------- scan
def test_scan_matches_statsmodels_and_pingouin(sim):
    scan = association_scan(sim.gaps, sim.phenotypes)
    for ph, organ in [('smoking', 'lung'), ('alcohol', 'liver'), ('null_binary', 'brain'), ('height', 'heart')]:
        row = scan.query('phenotype == @ph and organ == @organ').iloc[0]
        d = sim.gaps.query('organ == @organ').merge(sim.phenotypes, on='subject_id').dropna(subset=[ph])
        formula = f'gap ~ {ph} + age + sex' if ph != 'null_binary' else 'gap ~ I((null_binary == "yes") * 1.0) + age + sex'
        f = smf.ols(formula, d).fit(); k = [n for n in f.params.index if ph in n][0]   # patsy lists sex[T.male] first
        assert row.n == len(d) == f.nobs
        assert [row.effect, row.se, row.t, row.p] == pytest.approx([f.params[k], f.bse[k], f.tvalues[k], f.pvalues[k]], rel=1e-8)
        assert [row.ci_low, row.ci_high] == pytest.approx(f.conf_int().loc[k].tolist(), rel=1e-8)
        x = d[ph].eq('yes').astype(float) if ph == 'null_binary' else d[ph]
        lr = pg.linear_regression(pd.DataFrame({'x': x, 'age': d.age, 'male': d.sex.eq('male').astype(float)}), d.gap).set_index('names')
        assert [row.effect, row.p] == pytest.approx([lr.loc['x', 'coef'], lr.loc['x', 'pval']], rel=1e-7)
        assert row.effect_sd == pytest.approx(row.effect * x.std(), rel=1e-12)
    assert np.allclose(scan.q, sps.false_discovery_control(scan.p), rtol=0, atol=1e-12)
    assert np.allclose(scan.q, multipletests(scan.p, method='fdr_bh')[1])
    assert np.allclose(scan.p_bonferroni, multipletests(scan.p, method='bonferroni')[1])
    assert scan.significant.tolist() == (scan.q <= 0.05).tolist()


def test_missing_values_counted_per_test(sim):
    ph = sim.phenotypes.iloc[100:].copy()                                  # 100 subjects have no phenotype row
    ph.loc[ph.index[:50], 'sex'] = np.nan                                  # and 50 no sex
    scan = association_scan(sim.gaps, ph)
    assert scan.attrs['subjects_without_phenotype_row'] == sim.gaps.subject_id.isin(sim.phenotypes.subject_id[:100]).groupby(sim.gaps.subject_id).any().sum()
    row = scan.query("phenotype == 'alcohol' and organ == 'kidney'").iloc[0]
    g = sim.gaps.query("organ == 'kidney'").merge(ph, on='subject_id', how='left')
    assert row.n_gap == len(g)
    assert row.n_missing_phenotype == g.alcohol.isna().sum()
    assert row.n_missing_covariates == (g.alcohol.notna() & g.sex.isna()).sum()
    assert row.n == (g.alcohol.notna() & g.sex.notna()).sum()


def test_binary_coding_equivalent(sim):
    "Two-level strings, 1/2 codes and booleans give the 0/1 answer (the sign flips if the levels are swapped)."
    ph = sim.phenotypes
    yes = ph.null_binary.map({'no': 0.0, 'yes': 1.0})
    versions = dict(str=ph.null_binary, code=yes, onetwo=yes + 1, boolean=yes.map({0.0: False, 1.0: True}).astype('boolean'))
    res = {k: association_scan(sim.gaps, ph.assign(null_binary=v), phenotype_columns=['null_binary']) for k, v in versions.items()}
    for k, r in res.items():
        assert (r.kind == 'binary').all()
        assert np.allclose(r.effect, res['code'].effect) and np.allclose(r.p, res['code'].p)
    flipped = association_scan(sim.gaps, ph.assign(null_binary=ph.null_binary.map({'no': 'z', 'yes': 'a'})), phenotype_columns=['null_binary'])
    assert np.allclose(flipped.effect, -res['code'].effect)
    assert encode_column(pd.Series(['M', 'F', None]))['level1'] == 'M'


def test_scan_recall_and_fdr_over_seeds(scans):
    "Known effects are found every time with the right sign; the false discovery proportion averages near alpha."
    rows = pd.concat([scan_recall(s, d.effects) for d, s in scans], ignore_index=True)
    assert (rows.n_true == 3).all() and (rows.n_tests == 54).all()
    assert (rows.recall == 1.0).all() and (rows.sign_agreement == 1.0).all()
    assert rows.fdp.mean() <= 0.12                                          # FDR control: E[FDP] <= 0.05 (raw p < .05 would give ~0.45)
    nulls = np.concatenate([annotate_known_effects(s, d.effects).query('not is_true').p for d, s in scans])
    assert sps.kstest(nulls, 'uniform').pvalue > 0.01                       # null p-values are uniform


def test_effects_attenuated_by_the_prediction_slope(scans):
    "The gap moves `shrink` (0.8) years per year of acceleration, so the estimated effect is about 0.8 x the true one."
    for ph, organ, true in [('smoking', 'lung', 3.0), ('alcohol', 'liver', 0.15), ('activity', 'muscle', -0.6)]:
        est = np.array([s.loc[(s.phenotype == ph) & (s.organ == organ), 'effect'].iloc[0] for _, s in scans])
        assert est.mean() == pytest.approx(0.8 * true, rel=0.1)


def test_covariates_prevent_a_confounded_discovery():
    "height depends on sex and sex shifts the heart: without the sex covariate height -> heart is 'discovered'."
    d = simulate_associations(4000, seed=3)
    naive = association_scan(d.gaps, d.phenotypes, covariates=('age',)).query("phenotype == 'height' and organ == 'heart'").iloc[0]
    adj = association_scan(d.gaps, d.phenotypes).query("phenotype == 'height' and organ == 'heart'").iloc[0]
    assert naive.p < 1e-4 and naive.significant
    assert not adj.significant and adj.covariates_used == 'age, sex'


def test_scan_errors(sim):
    with pytest.raises(DataError, match='repeated subjects'): association_scan(sim.gaps, pd.concat([sim.phenotypes, sim.phenotypes.iloc[:1]]))
    with pytest.raises(DataError, match='covariates not found'): association_scan(sim.gaps, sim.phenotypes, covariates=('age', 'bmi'))
    with pytest.raises(DataError, match='lacks columns'): association_scan(sim.gaps, sim.phenotypes.rename(columns={'subject_id': 'id'}))
    with pytest.raises(DataError, match='lacks columns'): association_scan(sim.gaps, sim.phenotypes, phenotype_columns=['smokin'])
    with pytest.raises(DataError, match='lacks columns'): scan_recall(association_scan(sim.gaps, sim.phenotypes), sim.effects.drop(columns='effect'))


# ---------------------------------------------------------------- plots
def test_plots_draw_what_the_tables_say(sim):
    c = gap_correlation(sim.gaps, n_boot=100)
    t = true_acceleration_correlation(sim.truth, sim.gaps, estimated=c)
    fig = plot_gap_correlation(c, t.comparison)
    assert sum(bool(x.get_text()) for x in fig.axes[0].texts) == 36 and len(fig.axes[1].texts) == 15
    plt.close(fig)
    scan = association_scan(sim.gaps, sim.phenotypes)
    fig = plot_volcano(scan); ax = fig.axes[0]
    assert sum(len(col.get_offsets()) for col in ax.collections) == len(scan)
    labels = {x.get_text() for x in ax.texts}
    assert labels == {f'{r.phenotype} → {r.organ}' for r in scan[scan.significant].itertuples()}
    assert {'smoking → lung', 'alcohol → liver', 'activity → muscle'} <= labels
    plt.close(fig)
    fig = plot_manhattan(scan); assert sum(len(col.get_offsets()) for col in fig.axes[0].collections) == len(scan); plt.close(fig)
