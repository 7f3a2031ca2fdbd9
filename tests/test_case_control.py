"Case-control simulator: counts, determinism, atomic writes, the readers' refusals, and the known disease and age signals in the files."
import hashlib, shutil
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from organage.core import ConfigError, DataError
from organage.data import case_control as cc
from organage.data.case_control import simulate_case_control_files, read_case_control, read_case_control_expression, check_case_control
from organage.explain.enrichment import read_gmt
from _cc_cohort import _cohort


def _md5(root: Path):
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    d = _cohort(tmp_path_factory.mktemp('cc')/'c')
    before = _md5(d)
    meta = simulate_case_control_files(d, seed=2, samples_per_tissue=80)
    return d, meta, before


def test_counts_and_cohort_untouched(study):
    d, meta, before = study
    after = _md5(d)
    assert {k: v for k, v in after.items() if k in before} == before        # the cohort's own files are unchanged
    new = sorted(set(after) - set(before))
    assert new == sorted(['truth_case_control.csv', 'truth_disease_genes.csv'] + [f'case_control/{f}' for f in meta['files'] if not f.startswith('..')])
    assert (meta['persons'], meta['cases'], meta['controls']) == (160, 80, 80)
    ch = check_case_control(d)
    assert not ch['fatal'] and ch['unreadable'] == 0
    for m in ('expression', 'methylation'):
        assert ch['modalities'][m]['per_tissue'] == {'brain': {'case': 40, 'control': 40}, 'lung': {'case': 40, 'control': 40}}
    assert ch['gene_sets'] == dict(sets=57, null=50, true=meta['gene_sets']['names'])
    assert not list(d.glob('.case_control.tmp-*'))


def test_ages_like_the_cohort_and_disease_acceleration(study):
    d, meta, _ = study
    t = pd.read_csv(d/'truth_case_control.csv'); t = t[t.modality == 'rna']
    coh = pd.read_csv(d/'truth.csv'); links = pd.read_csv(d/'subject_links.csv')
    donors = coh[coh.subject_id.isin(links.subject_id[links.gtex_id.notna()]) & (coh.organ == 'lung')]
    lung = t[t.organ == 'lung']
    assert donors.age.min() - 0.01 <= lung.age.min() and lung.age.max() <= donors.age.max() + 0.01
    assert stats.ks_2samp(lung.age, donors.age).pvalue > 0.01                        # ages like the cohort's donors
    assert stats.mannwhitneyu(t.age[t.status == 'case'], t.age[t.status == 'control']).pvalue > 0.01   # no age confounding by design
    gap = (t.bio_age - t.age - t.acceleration)
    np.testing.assert_allclose(gap[t.status == 'case'], 3.0, atol=0.01); np.testing.assert_allclose(gap[t.status == 'control'], 0, atol=0.01)


def test_disease_log_fold_changes_recovered(study):
    d, meta, _ = study
    e = read_case_control(d)['expression']
    tdg = pd.read_csv(d/'truth_disease_genes.csv')
    de = tdg[tdg.modality == 'expression'].set_index('gene').effect
    for org in meta['tissues']:
        x = e[e.obs.organ == org]
        X = np.log(1e6*(x.X + 0.5)/x.X.sum(1, keepdims=True))
        lfc = pd.Series(X[x.obs.case == 1].mean(0) - X[x.obs.case == 0].mean(0), index=x.var.symbol)
        assert np.corrcoef(lfc[de.index], de)[0, 1] > 0.8, org                     # the known shifts, with their sizes
        assert lfc.drop(de.index).abs().mean() < 0.35*de.abs().mean()               # other genes barely move
    m = read_case_control(d)['methylation']
    dm = tdg[tdg.modality == 'methylation']
    ann = pd.read_csv(d/'case_control'/'methylation'/'probe_annotation.csv')
    probes = ann.Name[ann.UCSC_RefGene_Name.isin(dm.gene) & (ann.UCSC_RefGene_Group == 'TSS200')]
    dif = pd.Series(np.nanmean(m.X[m.obs.case == 1], 0) - np.nanmean(m.X[m.obs.case == 0], 0), index=m.var_names)
    gene_dir = dm.set_index('gene').direction.map({'up': 1, 'down': -1})
    sign = ann.set_index('Name').UCSC_RefGene_Name.reindex(probes).map(gene_dir)
    assert (np.sign(dif[probes]) == sign.to_numpy()).mean() > 0.9
    assert dif[probes].abs().mean() > 5*dif.drop(probes).abs().mean()


def test_same_seed_same_bytes_atomic_failure(tmp_path, monkeypatch):
    d = _cohort(tmp_path/'c', seed=5)
    simulate_case_control_files(d, seed=0, samples_per_tissue=40)
    h = _md5(d/'case_control')
    simulate_case_control_files(d, seed=0, samples_per_tissue=40)
    assert _md5(d/'case_control') == h
    def boom(*a, **k): raise RuntimeError('disk full')
    monkeypatch.setattr(cc, 'write_gmt', boom)
    with pytest.raises(RuntimeError):
        simulate_case_control_files(d, seed=1, samples_per_tissue=40)
    assert _md5(d/'case_control') == h and not list(d.glob('.case_control.tmp-*'))   # the earlier study is intact, nothing half-written


def test_status_refused_with_file_line_value(study, tmp_path):
    d, _, _ = study
    c = tmp_path/'cc'; shutil.copytree(d/'case_control', c)
    at = c/'gtex'/'GTEx_Analysis_cc_Annotations_SampleAttributesDS.txt'
    a = pd.read_csv(at, sep='\t', dtype=str)
    a.loc[3, 'status'] = ' Case '; a.loc[7, 'status'] = 'unknown'; a.loc[9, 'status'] = np.nan
    a.to_csv(at, sep='\t', index=False)
    with pytest.raises(DataError) as e: read_case_control_expression(c)
    msg = str(e.value)
    assert str(at) in msg and f"line 9 ({a.SAMPID[7]}): 'unknown'" in msg and f"line 11 ({a.SAMPID[9]})" in msg and a.SAMPID[3] not in msg
    a.loc[7, 'status'] = 'control'; a.loc[9, 'status'] = 'CONTROL'; a.to_csv(at, sep='\t', index=False)
    x = read_case_control_expression(c)
    assert x.obs.status[a.SAMPID[3]] == 'case' and x.obs.case[a.SAMPID[3]] == 1 and x.obs.status[a.SAMPID[9]] == 'control'


def test_without_methylation_and_bad_settings(tmp_path):
    d = _cohort(tmp_path/'c', methylation=False, seed=7)
    meta = simulate_case_control_files(d, seed=0, samples_per_tissue=30, tissues=['heart'], case_fraction=0.3)
    assert meta['methylation'] is None and meta['methylation_tissues'] == [] and (meta['cases'], meta['controls']) == (9, 21)
    assert not (d/'case_control'/'methylation').exists()
    gs = read_gmt(d/'case_control'/'gene_sets.gmt')
    assert 'TRUE_AGE_METHYLATION' not in gs and 'TRUE_DISEASE_METHYLATION' not in gs and 'TRUE_AGE_EXPRESSION_HEART' in gs
    assert set(read_case_control(d)) == {'expression'}
    with pytest.raises(ConfigError, match='need organs with GTEx samples'): simulate_case_control_files(d, tissues=['retina'])
    with pytest.raises(ConfigError, match='case_fraction'): simulate_case_control_files(d, case_fraction=1.0)
    with pytest.raises(DataError, match='truth.csv not found'): simulate_case_control_files(tmp_path/'nothing')
