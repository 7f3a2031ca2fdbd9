"Methylation: both formats read alike, every bad input named and counted, TSS200 by hand, training-only imputation, the simulator's truth."
import gzip
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from organage.core import DataError, write_csv
from organage.data.methylation import (read_beta_matrix, read_series_matrix, read_methylation, check_methylation, promoter_features,
                                       read_probe_annotation, MethylationImputer, simulate_methylation_files, parse_age)
from organage.data.synth import SimConfig, simulate_subjects, simulate_truth, simulate_cohort


def _w(tmp_path, name, text, gz=False):
    p = tmp_path/name; b = text.encode(); p.write_bytes(gzip.compress(b) if gz else b); return p


SHEET = 'sample_id,subject_id,tissue,age,sex\nA,P1,whole blood,40,male\nB,P2,whole blood,50,female\nC,P3,saliva,60,F\n'
BETA = 'ID_REF\tA\tB\tC\ncg01\t0.1\t0.2\t0.3\ncg02\t0.4\t0.5\t0.6\ncg03\t0.7\tNA\t0.9\n'


def _geo(samples, chars, table, end=True):
    q = lambda xs: '\t'.join(f'"{x}"' for x in xs)
    L = ['!Series_geo_accession\t"GSE7"', f'!Sample_geo_accession\t{q(samples)}']
    L += [f'!Sample_characteristics_ch1\t{q(c)}' for c in chars]
    L += ['!series_matrix_table_begin', '"ID_REF"\t' + q(samples)] + table + (['!series_matrix_table_end'] if end else [])
    return '\n'.join(L) + '\n'


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    "A cohort's truth and subjects (the cohort simulator's own functions, no images) with simulated methylation."
    d = tmp_path_factory.mktemp('meth')/'c'; d.mkdir()
    cfg = SimConfig(subjects=300); r = np.random.default_rng(5)
    s = simulate_subjects(cfg, r); t = simulate_truth(s, cfg, r)
    write_csv(s[['subject_id', 'group', 'sex', 'age']], d/'subjects.csv'); write_csv(t, d/'truth.csv')
    meta = simulate_methylation_files(d, seed=3, samples_per_tissue=60)
    return d, meta


# ---- both formats, gzip or not ------------------------------------------------------------------------------------
def test_both_formats_read_to_the_same_matrix_for_the_same_samples(cohort):
    d, meta = cohort
    m = d/'methylation'
    a = read_beta_matrix(m/'beta_matrix.csv.gz', m/'sample_sheet.csv')
    g = read_series_matrix(m/'GSE900001_series_matrix.txt.gz')
    assert a.n_obs == g.n_obs == meta['samples'] and a.n_vars == g.n_vars == meta['probes']
    assert a.obs_names.tolist() == g.obs_names.tolist() and a.var_names.tolist() == g.var_names.tolist()
    np.testing.assert_array_equal(a.X, g.X)                      # NaN exactly where NaN
    assert int(np.isnan(a.X).sum()) == meta['missing_values'] > 0
    for c in ('subject_id', 'organ', 'age', 'sex', 'tissue'): assert a.obs[c].tolist() == g.obs[c].tolist(), c
    assert a.obs.modality.eq('methylation').all() and set(a.obs.age_source) == {'exact'}
    assert a.var_names[0].startswith('cg') and a.X.dtype == np.float32


def test_gzip_and_plain_give_the_same_and_tab_or_comma_too(tmp_path):
    sheet = _w(tmp_path, 'sheet.csv', SHEET)
    plain = read_beta_matrix(_w(tmp_path, 'b.tsv', BETA), sheet)
    gz = read_beta_matrix(_w(tmp_path, 'b.txt', BETA, gz=True), sheet)       # gzip found from the bytes, not the name
    comma = read_beta_matrix(_w(tmp_path, 'b.csv.gz', BETA.replace('\t', ','), gz=True), sheet)
    for x in (gz, comma):
        np.testing.assert_array_equal(plain.X, x.X); assert plain.obs.equals(x.obs) and plain.var.equals(x.var)
    assert plain.var.n_missing.tolist() == [0, 0, 1] and plain.obs.n_missing.tolist() == [0, 1, 0]
    assert plain.obs.organ.tolist() == ['blood', 'blood', 'saliva'] and plain.obs.sex.tolist() == ['male', 'female', 'female']
    g = _geo(['A', 'B', 'C'], [['age: 40', 'age: 50', 'age: 60'], ['tissue: whole blood'] * 2 + ['tissue: saliva']],
             ['"cg01"\t0.1\t0.2\t0.3', '"cg02"\t0.4\t0.5\t0.6', '"cg03"\t0.7\t\t0.9'])
    sp, sg = read_series_matrix(_w(tmp_path, 'x_series_matrix.txt', g)), read_series_matrix(_w(tmp_path, 'y_series_matrix.txt.gz', g, gz=True))
    np.testing.assert_array_equal(sp.X, sg.X); np.testing.assert_array_equal(sp.X, plain.X)


# ---- bad input, named and counted -----------------------------------------------------------------------------------
def test_out_of_range_and_non_numeric_betas_become_missing_named_with_probe_and_sample(tmp_path):
    beta = 'probe,A,B,C\ncg01,0.1,1.5,0.3\ncg02,-0.2,0.5,n.d.\ncg03,0.7,0.8,0.9\n'
    a = read_beta_matrix(_w(tmp_path, 'b.csv', beta), _w(tmp_path, 's.csv', SHEET))
    assert a.uns['values_set_missing'] == {'non_numeric': 1, 'out_of_range': 2}
    bad = set(zip(a.uns['bad_values']['probe'], a.uns['bad_values']['sample'], a.uns['bad_values']['reason'], a.uns['bad_values']['line']))
    assert bad == {('cg01', 'B', 'out_of_range', '2'), ('cg02', 'A', 'out_of_range', '3'), ('cg02', 'C', 'non_numeric', '3')}
    assert np.isnan(a.X).sum() == 3 and a.X[0, 0] == np.float32(0.1) and a.X[2, 2] == np.float32(0.9)   # the rest untouched
    msg = ' '.join(a.uns['problems'])
    assert 'line 2 (cg01, B): 1.5' in msg and "line 3 (cg02, C): 'n.d.'" in msg
    assert a.var.n_missing.tolist() == [1, 2, 0]


def test_a_file_of_m_values_is_refused_not_emptied(tmp_path):
    rows = ''.join(f'cg{i:02d},{-3 + i/5:.2f},{2 + i/7:.2f},0.5\n' for i in range(30))
    with pytest.raises(DataError, match='M-values'):
        read_beta_matrix(_w(tmp_path, 'm.csv', 'probe,A,B,C\n' + rows), _w(tmp_path, 's.csv', SHEET))


def test_unparseable_age_is_named_and_dropped_or_kept_with_age_missing(tmp_path):
    sheet = _w(tmp_path, 's.csv', SHEET.replace('B,P2,whole blood,50', 'B,P2,whole blood,fifty'))
    beta = _w(tmp_path, 'b.tsv', BETA)
    a = read_beta_matrix(beta, sheet)
    assert a.obs_names.tolist() == ['A', 'C'] and a.uns['dropped'] == {'malformed_age': 1}
    assert any("line 3 (B): 'fifty'" in m and 'dropped' in m for m in a.uns['problems'])
    k = read_beta_matrix(beta, sheet, keep_missing_age=True)
    assert k.obs_names.tolist() == ['A', 'B', 'C'] and np.isnan(k.obs.age['B']) and k.obs.age_source['B'] == 'missing'
    assert k.uns['dropped'] == {} and any("'fifty'" in m and 'kept with age missing' in m for m in k.uns['problems'])
    g = _geo(['A', 'B'], [['age (y): 40', 'age (y): 40-50'], ['tissue: blood'] * 2], ['"cg01"\t0.1\t0.2'])
    s = read_series_matrix(_w(tmp_path, 'a_series_matrix.txt', g))
    assert s.obs_names.tolist() == ['A'] and s.uns['dropped'] == {'malformed_age': 1} and any("(B): '40-50'" in m for m in s.uns['problems'])
    assert parse_age('30', 'months') == (2.5, 'exact')


def test_matrix_samples_without_sheet_row_and_sheet_rows_without_column_are_named_and_counted(tmp_path):
    sheet = _w(tmp_path, 's.csv', SHEET.replace('C,P3,saliva,60,F\n', 'D,P4,saliva,61,F\nE,P5,saliva,62,M\n'))
    a = read_beta_matrix(_w(tmp_path, 'b.tsv', BETA), sheet)
    assert a.obs_names.tolist() == ['A', 'B'] and a.uns['dropped'] == {'no_sample_sheet_row': 1} and a.uns['unmatched_sheet_rows'] == 2
    msg = ' '.join(a.uns['problems'])
    assert 'found none for C' in msg and 'found none for D, E' in msg


def test_duplicate_probe_ids_are_refused_or_the_first_kept(tmp_path):
    beta = _w(tmp_path, 'b.tsv', BETA + 'cg02\t0.9\t0.9\t0.9\n')
    sheet = _w(tmp_path, 's.csv', SHEET)
    with pytest.raises(DataError, match='line 5.*cg02, also on line 3'): read_beta_matrix(beta, sheet)
    a = read_beta_matrix(beta, sheet, duplicate_probes='first')
    assert a.var_names.tolist() == ['cg01', 'cg02', 'cg03'] and a.X[:, 1].tolist() == pytest.approx([0.4, 0.5, 0.6])
    assert a.uns['methylation']['duplicate_probe_rows'] == 1 and any('cg02 on line 5 (first on line 3)' in m for m in a.uns['problems'])


def test_structural_errors_name_file_line_and_what_was_expected(tmp_path):
    sheet = _w(tmp_path, 's.csv', SHEET)
    with pytest.raises(DataError, match=r'b1.tsv: line 3: line has the wrong number of fields.*expected 4 fields'):
        read_beta_matrix(_w(tmp_path, 'b1.tsv', 'ID\tA\tB\tC\ncg01\t0.1\t0.2\t0.3\ncg02\t0.4\n'), sheet)
    with pytest.raises(DataError, match='duplicate sample ids'):
        read_beta_matrix(_w(tmp_path, 'b2.tsv', 'ID\tA\tA\tC\ncg01\t0.1\t0.2\t0.3\n'), sheet)
    with pytest.raises(DataError, match='no header line'):
        read_beta_matrix(_w(tmp_path, 'b3.tsv', 'cg01\t0.1\t0.2\t0.3\n'), sheet)
    cut = tmp_path/'b4.tsv.gz'; cut.write_bytes(gzip.compress(BETA.encode())[:-12])
    with pytest.raises(DataError, match='gzip stream is corrupt'): read_beta_matrix(cut, sheet)
    g = _geo(['A', 'B'], [['age: 40', 'age: 41'], ['tissue: blood'] * 2], ['"cg01"\t0.1\t0.2'], end=False)
    with pytest.raises(DataError, match='without its end line'): read_series_matrix(_w(tmp_path, 't_series_matrix.txt', g))
    with pytest.raises(DataError, match='no tissue column'):
        read_beta_matrix(_w(tmp_path, 'b5.tsv', BETA), _w(tmp_path, 's2.csv', 'sample_id,age\nA,40\n'))
    t = read_beta_matrix(_w(tmp_path, 'b6.tsv', BETA), _w(tmp_path, 's3.csv', 'sample_id,age\nA,40\nB,41\nC,42\n'), tissue='Whole Blood')
    assert t.obs.organ.eq('blood').all() and t.obs.subject_id.tolist() == ['A', 'B', 'C'] and t.uns['methylation']['subject_id_from'] == 'sample_id'


# ---- promoter features --------------------------------------------------------------------------------------------
def test_tss200_aggregation_by_hand(tmp_path):
    beta = 'ID\tA\tB\tC\ncg01\t0.1\t0.2\t0.3\ncg02\t0.5\tNA\t0.7\ncg03\t0.9\t0.8\t0.7\ncg04\t0.2\t0.2\t0.2\ncg05\t0.6\t0.6\t0.6\n'
    a = read_beta_matrix(_w(tmp_path, 'b.tsv', beta), _w(tmp_path, 's.csv', SHEET))
    ann = pd.DataFrame({'probe': ['cg01', 'cg02', 'cg03', 'cg04', 'cg09'],
                        'gene': ['G1;G2', 'G1', 'G2;G1', 'G3', 'G4'], 'region': ['TSS200;TSS1500', 'TSS200', 'Body;TSS200', 'TSS1500', 'TSS200']})
    f = promoter_features(a, ann)
    assert f.var_names.tolist() == ['G1'] and f.var.n_probes.tolist() == [3]      # G2 has no TSS200 probe, G3 only TSS1500
    np.testing.assert_allclose(f.X[:, 0], [(0.1 + 0.5 + 0.9)/3, (0.2 + 0.8)/2, (0.3 + 0.7 + 0.7)/3], rtol=1e-6)   # B's missing cg02 left out
    p = f.uns['promoter']
    assert p['genes_without_probe'] == 3 and set(p['genes_without_probe_examples']) == {'G2', 'G3', 'G4'}   # G4's probe is not in the matrix
    assert p['probes_without_annotation'] == 1 and p['probes_without_annotation_examples'] == ['cg05']
    f2 = promoter_features(a, ann, region=['TSS200', 'TSS1500'])
    assert f2.var_names.tolist() == ['G1', 'G2', 'G3']
    np.testing.assert_allclose(f2.X[0], [(0.1 + 0.5 + 0.9)/3, 0.1, 0.2], rtol=1e-6)
    assert read_probe_annotation(ann).query("probe == 'cg01'").gene.tolist() == ['G1', 'G2']


# ---- imputation ---------------------------------------------------------------------------------------------------
def test_imputation_uses_training_means_only(tmp_path):
    beta = 'ID\tA\tB\tC\ncg01\t0.1\t0.3\t0.9\ncg02\t0.2\t0.4\tNA\n'
    sheet = _w(tmp_path, 's.csv', SHEET)
    a = read_beta_matrix(_w(tmp_path, 'b.tsv', beta), sheet)
    imp = MethylationImputer(max_sample_missing=0.5).fit(a[['A', 'B']])
    t = imp.transform(a)
    assert t['C'].X[0, 1] == pytest.approx((0.2 + 0.4)/2)                           # training mean: C's own 0.9 never enters
    assert t['C'].X[0, 0] == pytest.approx(0.9) and t.obs.n_imputed.tolist() == [0, 0, 1]
    # the test sample's own values never move the means: change them all, the imputed value stays
    a2 = read_beta_matrix(_w(tmp_path, 'b2.tsv', beta.replace('0.9', '0.01')), sheet)
    assert imp.transform(a2)['C'].X[0, 1] == pytest.approx(0.3)
    assert MethylationImputer.load(imp.save(tmp_path/'st')).transform(a).X.tolist() == t.X.tolist()
    # a probe absent from new data is a missing value: imputed and counted
    t3 = imp.transform(a[:, ['cg01']])
    assert t3.X[:, 1].tolist() == pytest.approx([(0.2 + 0.4)/2]*3) and t3.uns['imputation']['features_absent'] == 1
    assert t3.obs.n_imputed.tolist() == [1, 1, 1] and t3.var.n_imputed.tolist() == [0, 3]
    # never zeros: nothing imputed is 0 unless the training mean is
    assert not (t.X == 0).any()


# ---- simulator ----------------------------------------------------------------------------------------------------
def test_simulated_age_cpgs_follow_bio_age_and_null_probes_do_not(cohort):
    d, meta = cohort
    a = read_methylation(d/'methylation')
    truth = pd.read_csv(d/'truth.csv').set_index(['subject_id', 'organ'])
    bio = truth.loc[list(zip(a.obs.subject_id, a.obs.organ)), 'bio_age'].to_numpy()
    cp = pd.read_csv(d/'truth_methylation_cpgs.csv')
    tss = cp[cp.region == 'TSS200'].set_index('probe_id')
    X = pd.DataFrame(a.X, columns=a.var_names)
    r = X[tss.index].apply(lambda c: stats.spearmanr(c, bio, nan_policy='omit')[0])
    assert (np.sign(r) == np.sign(tss.effect)).mean() > 0.95 and r.abs().median() > 0.4
    nulls = [p for p in a.var_names if p not in set(cp.probe_id)][:300]
    rn = X[nulls].apply(lambda c: stats.spearmanr(c, bio, nan_policy='omit')[0])
    assert rn.abs().median() < 0.15
    assert np.nanmin(a.X) >= 0 and np.nanmax(a.X) <= 1
    assert set(a.obs.organ) == {'brain', 'liver', 'kidney', 'lung'} and meta['age_genes'] == 40


def test_simulator_is_deterministic_from_its_seed(cohort, tmp_path):
    d, meta = cohort
    import shutil
    d2 = tmp_path/'c2'; d2.mkdir()
    for n in ('truth.csv', 'subjects.csv'): shutil.copy(d/n, d2/n)
    simulate_methylation_files(d2, seed=3, samples_per_tissue=60)
    for n in ('methylation/beta_matrix.csv.gz', 'methylation/GSE900001_series_matrix.txt.gz', 'methylation/sample_sheet.csv', 'truth_methylation_cpgs.csv'):
        assert (d/n).read_bytes() == (d2/n).read_bytes(), n
    simulate_methylation_files(d2, seed=4, samples_per_tissue=60)
    assert (d/'methylation/beta_matrix.csv.gz').read_bytes() != (d2/'methylation/beta_matrix.csv.gz').read_bytes()


def test_simulator_on_a_cohort_shares_some_age_genes_with_expression(tmp_path):
    c = simulate_cohort(tmp_path/'c', subjects=120, n_genes=600, image_size=16, volume_size=16, seed=2,
                        paired_fraction=0.0, cohort_shares=(1.0, 0.0, 0.0))
    meta = simulate_methylation_files(c, samples_per_tissue=30)
    g = pd.read_csv(c/'truth_methylation_genes.csv')
    expr = set(pd.read_csv(c/'truth_genes.csv').symbol)
    assert g.expression_age_gene.sum() == len(set(g.gene) & expr) > 0
    rep = check_methylation(c/'methylation')
    assert not rep['fatal'] and [f['format'] for f in rep['files']] == ['beta_matrix', 'series_matrix']
    assert rep['files'][0]['samples'] == rep['files'][1]['samples'] == meta['samples']
