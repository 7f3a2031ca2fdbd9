"Enrichment: ORA against scipy/gseapy, prerank offline and reproducible, GMT refusals, and recovery of the simulator's true sets from data."
import socket
from unittest import mock
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from organage.core import DataError
from organage.explain.enrichment import read_gmt, write_gmt, enrich_ora, enrich_prerank, recovery_table
from organage.data.case_control import simulate_case_control_files, read_case_control
from _cc_cohort import _cohort


def test_ora_matches_scipy_and_gseapy():
    import gseapy
    rng = np.random.default_rng(0)
    U = [f'G{i}' for i in range(400)]
    sets = {f's{k}': list(rng.choice(U, int(rng.integers(5, 60)), replace=False)) for k in range(25)}
    sets['planted'] = U[:30]
    q = list(U[:12]) + list(rng.choice(U[30:], 28, replace=False))
    mine = enrich_ora(q, sets, U).set_index('set')
    gp = gseapy.enrich(gene_list=q, gene_sets=sets, background=U, outdir=None, no_plot=True).results.set_index('Term')
    both = gp.index.intersection(mine.index)            # gseapy leaves out sets without overlap
    assert len(both) >= 15
    np.testing.assert_allclose(gp.loc[both, 'P-value'].to_numpy(), mine.loc[both, 'p'].to_numpy(), rtol=1e-9)
    for s in ('planted', 's3'):
        k, n = mine.loc[s, 'overlap'], mine.loc[s, 'size']
        assert mine.loc[s, 'p'] == pytest.approx(stats.fisher_exact([[k, n - k], [40 - k, 400 - n - 40 + k]], alternative='greater')[1], rel=1e-9)
    assert mine.index[0] == "planted" and mine.fdr.iloc[0] < 1e-3
    assert (mine.fdr >= mine.p - 1e-15).all()
    from statsmodels.stats.multitest import multipletests
    np.testing.assert_allclose(mine.fdr, multipletests(mine.p, method='fdr_bh')[1])


def test_prerank_offline_from_gmt_and_reproducible(tmp_path):
    G = [f'g{i:03d}' for i in range(300)]
    rng = np.random.default_rng(1)
    score = pd.Series(rng.normal(0, 1, 300), index=G); score[G[:20]] += 2.5
    sets = {'TOP': G[:20], **{f'NULL_{k}': list(rng.choice(G[20:], 20, replace=False)) for k in range(10)}}
    gmt = write_gmt(sets, tmp_path/'x.gmt')
    with mock.patch.object(socket.socket, 'connect', side_effect=OSError('no network here')), \
         mock.patch.object(socket, 'getaddrinfo', side_effect=OSError('no network here')):
        a = enrich_prerank(score, gmt, permutations=300, seed=4)
        b = enrich_prerank(score, sets, permutations=300, seed=4)
    pd.testing.assert_frame_equal(a, b)
    rt = recovery_table(a, ['TOP'])
    assert rt['rank'][0] == 1 and rt.fdr[0] < 0.05 and rt.n_pass[1] == 0 and rt.n_sets[1] == 10
    assert a.set_index('set').loc['TOP', 'nes'] > 2


def test_gmt_windows_line_endings_and_trailing_tabs(tmp_path):
    p = tmp_path/'w.gmt'; p.write_bytes(b'A\tdesc\tg1\tg2\t\r\nB\thttp://x\tg3\r\n')
    assert read_gmt(p) == {'A': ['g1', 'g2'], 'B': ['g3']}
    p.write_bytes(b'A\tdesc\n')
    with pytest.raises(DataError, match='line 1'): read_gmt(p)


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    d = _cohort(tmp_path_factory.mktemp('en')/'c', seed=11)
    meta = simulate_case_control_files(d, seed=0, samples_per_tissue=100, tissues=['lung'])
    return d, meta, read_case_control(d), read_gmt(d/'case_control'/'gene_sets.gmt')


def test_t_test_ranking_recovers_disease_sets(study):
    "From data only: a Welch t-test of cases against controls (log CPM) finds the disease sets; no null set passes."
    d, meta, rd, gs = study
    e = rd['expression']; sym = list(e.var.symbol)
    X = np.log1p(1e6*e.X/e.X.sum(1, keepdims=True))
    t = pd.Series(stats.ttest_ind(X[e.obs.case == 1], X[e.obs.case == 0], equal_var=False).statistic, index=sym).fillna(0)
    ora = recovery_table(enrich_ora(t.abs().nlargest(100).index, gs, sym), ['TRUE_DISEASE_EXPRESSION'])
    assert ora['rank'][0] == 1 and ora.fdr[0] < 1e-10 and ora.n_pass[1] == 0
    pre = recovery_table(enrich_prerank(t, gs, permutations=500, seed=0), ['TRUE_DISEASE_EXPRESSION_UP', 'TRUE_DISEASE_EXPRESSION_DOWN'])
    assert sorted(pre['rank'][:2]) == [1, 2] and (pre.fdr[:2] < 0.05).all() and pre.n_pass[2] == 0
    res = enrich_prerank(t, gs, permutations=500, seed=0).set_index('set')
    assert res.loc['TRUE_DISEASE_EXPRESSION_UP', 'nes'] > 0 > res.loc['TRUE_DISEASE_EXPRESSION_DOWN', 'nes']


def test_age_correlation_ranking_recovers_age_sets(study):
    "From data only: genes ranked by |Spearman r| with age in the controls bring the true age sets to the top."
    d, meta, rd, gs = study
    e = rd['expression']; e = e[e.obs.case == 0]; sym = list(e.var.symbol)
    X = np.log1p(1e6*e.X/e.X.sum(1, keepdims=True))
    r = pd.Series(stats.spearmanr(X, e.obs.age.to_numpy()[:, None]).statistic[-1, :-1], index=sym).abs().fillna(0)
    rt = recovery_table(enrich_ora(r.nlargest(100).index, gs, sym), ['TRUE_AGE_EXPRESSION_LUNG'])
    assert rt['rank'][0] == 1 and rt.fdr[0] < 1e-6 and rt.n_pass[1] == 0
    from organage.data.methylation import promoter_features, MethylationImputer
    m = rd['methylation']; m = m[m.obs.case == 0]
    pf = MethylationImputer().fit_transform(promoter_features(m, d/'case_control'/'methylation'/'probe_annotation.csv'))
    rm = pd.Series(stats.spearmanr(pf.X, pf.obs.age.to_numpy()[:, None]).statistic[-1, :-1], index=list(pf.var_names)).abs().fillna(0)
    rt = recovery_table(enrich_ora(rm.nlargest(40).index, gs, list(pf.var_names)), ['TRUE_AGE_METHYLATION'])
    assert rt['rank'][0] == 1 and rt.fdr[0] < 1e-6 and rt.n_pass[1] == 0


def test_shuffled_status_finds_nothing(study):
    "Calibration: with the case/control labels shuffled, neither ORA nor prerank calls the disease sets, and almost no set passes."
    d, meta, rd, gs = study
    e = rd['expression']; sym = list(e.var.symbol)
    X = np.log1p(1e6*e.X/e.X.sum(1, keepdims=True))
    lab = np.random.default_rng(5).permutation(e.obs.case.to_numpy())
    t = pd.Series(stats.ttest_ind(X[lab == 1], X[lab == 0], equal_var=False).statistic, index=sym).fillna(0)
    for res in (enrich_ora(t.abs().nlargest(100).index, gs, sym), enrich_prerank(t, gs, permutations=500, seed=0)):
        rt = recovery_table(res, ['TRUE_DISEASE_EXPRESSION', 'TRUE_DISEASE_EXPRESSION_UP', 'TRUE_DISEASE_EXPRESSION_DOWN'])
        assert (rt.fdr[:3] > 0.05).all(), rt
        assert (res.fdr < 0.05).sum() <= 1 and rt.n_pass.iloc[-1] == 0, res.head()
