"""Loaders on files built in tmp_path in the exact layouts GTEx, CheXpert and IXI publish, and every bad input:
each must raise a DataError (or, for row-level problems, drop and count) with a message naming the file, the
row/field, what was expected and what was found."""
import gzip, logging, os, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

from organage.core import DataError
from organage.data.gtex import TISSUE_ORGANS, read_gct, read_gct_header, read_gtex, tissue_of
from organage.data.chexpert import read_chexpert, load_radiograph, FINDINGS
from organage.data.ixi import read_ixi, load_volume, write_xls, read_ixi_sheet
from organage.data.cohort import read_cohort, check_data, CohortReport

STD = ['subject_id', 'organ', 'modality', 'age', 'sex', 'batch']


# ---------------------------------------------------------------- builders (published layouts)
def gct_text(X, names=None, descs=None, samples=None, dims=None):
    "GCT 1.2 as GTEx writes it: genes x samples matrix X."
    g, s = X.shape
    names = names or [f'ENSG{i:011d}.{i % 7 + 1}' for i in range(g)]
    descs = descs or [f'GENE{i}' for i in range(g)]
    samples = samples or [f'GTEX-{j // 2:04X}-{j:04d}-SM-{j:05d}' for j in range(s)]
    d = dims or (g, s)
    lines = ['#1.2', f'{d[0]}\t{d[1]}', '\t'.join(['Name', 'Description'] + samples)]
    lines += ['\t'.join([n, de] + [f'{v:g}' for v in row]) for n, de, row in zip(names, descs, X)]
    return '\n'.join(lines) + '\n'


def write(p, text, gz=None):
    p = Path(p); p.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    p.write_bytes(gzip.compress(data) if (gz if gz is not None else p.name.endswith('.gz')) else data)
    return p


def gtex_release(root, n_donors=4, tissues=('Brain - Cortex', 'Lung', 'Liver'), ages=None, extra_attr=None, gz=True):
    "A miniature GTEx v8 release: a counts GCT and the two annotation files."
    root = Path(root); root.mkdir(parents=True, exist_ok=True)
    donors = [f'GTEX-{1117 + i:X}F' for i in range(n_donors)]
    ages = ages or ['20-29', '30-39', '60-69', '70-79', '40-49', '50-59'][:n_donors]
    samples, attrs = [], []
    for i, d in enumerate(donors):
        for k, t in enumerate(tissues):
            s = f'{d}-{k:04d}-SM-{i}{k}AB'
            samples.append(s); attrs.append((s, t.split(' - ')[0], t, f'BP-{i % 2}', f'LCSET-{k}', '7.1'))
    rng = np.random.default_rng(0)
    X = rng.negative_binomial(2, 0.1, size=(6, len(samples))).astype(float)
    write(root/('GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_reads.gct' + ('.gz' if gz else '')), gct_text(X, samples=samples))
    a = pd.DataFrame(attrs, columns=['SAMPID', 'SMTS', 'SMTSD', 'SMNABTCH', 'SMGEBTCH', 'SMRIN'])
    a['SMPTHNTS'] = ['2 pieces, ~10% "fat', 'clean, no "autolysis"'] * (len(a) // 2) + [''] * (len(a) % 2)
    if extra_attr is not None: a = pd.concat([a, extra_attr])
    import csv
    a.to_csv(root/'GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt', sep='\t', index=False, quoting=csv.QUOTE_NONE, escapechar=None)
    pd.DataFrame({'SUBJID': donors, 'SEX': [1, 2] * (n_donors // 2) + [1] * (n_donors % 2), 'AGE': ages,
                  'DTHHRDY': [2, 0, 1, ''][:n_donors] + [''] * max(0, n_donors - 4)}).to_csv(
        root/'GTEx_Analysis_v8_Annotations_SubjectPhenotypesDS.txt', sep='\t', index=False)
    return root, samples, X


def chexpert_dataset(root, rows=None, name='CheXpert-v1.0-small', images=True, valid=True):
    "CheXpert: <root>/<name>/{train.csv,valid.csv,train/patientNNNNN/studyN/viewN_frontal.jpg}."
    from PIL import Image
    ds = Path(root)/name; ds.mkdir(parents=True, exist_ok=True)
    rows = rows or [('train/patient00001/study1/view1_frontal.jpg', 'Female', 68, 'Frontal', 'AP'),
                    ('train/patient00001/study1/view2_lateral.jpg', 'Female', 68, 'Lateral', ''),
                    ('train/patient00002/study1/view1_frontal.jpg', 'Male', 41, 'Frontal', 'PA'),
                    ('train/patient00003/study2/view1_frontal.jpg', 'Male', 0, 'Frontal', 'PA')]
    def table(rs):
        df = pd.DataFrame([(f'{name}/{p}', s, a, v, ap) for p, s, a, v, ap in rs], columns=['Path', 'Sex', 'Age', 'Frontal/Lateral', 'AP/PA'])
        for f in FINDINGS: df[f] = [1.0, np.nan, 0.0, -1.0][: len(rs)] + [np.nan] * max(0, len(rs) - 4)
        return df
    table(rows).to_csv(ds/'train.csv', index=False)
    if valid: table([('valid/patient64541/study1/view1_frontal.jpg', 'Male', 73, 'Frontal', 'PA')]).to_csv(ds/'valid.csv', index=False)
    if images:
        for p in [r[0] for r in rows] + (['valid/patient64541/study1/view1_frontal.jpg'] if valid else []):
            (ds/p).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((np.arange(32 * 40).reshape(32, 40) % 251).astype(np.uint8)).save(ds/p, quality=95)
    return ds


IXI_COLS = ['IXI_ID', 'SEX_ID (1=m, 2=f)', 'HEIGHT', 'WEIGHT', 'ETHNIC_ID', 'MARITAL_ID', 'OCCUPATION_ID',
            'QUALIFICATION_ID', 'DOB', 'DATE_AVAILABLE', 'STUDY_DATE', 'AGE']


def ixi_dataset(root, ids=(2, 12, 13), ages=(35.8, 38.78, 46.71), sites=('Guys', 'HH', 'IOP'), fmt='xls', shape=(6, 7, 8)):
    import nibabel as nib
    root = Path(root); (root/'IXI-T1').mkdir(parents=True, exist_ok=True)
    sheet = pd.DataFrame([(i, 1 + k % 2, 170, 70, 1, 2, 1, 5, '1969-08-11', 1, '2005-06-01', a)
                          for k, (i, a) in enumerate(zip(ids, ages))], columns=IXI_COLS)
    if fmt == 'xls': write_xls(sheet, root/'IXI.xls')
    else: sheet.to_csv(root/'IXI.csv', index=False)
    for k, (i, s) in enumerate(zip(ids, sites)):
        nib.save(nib.Nifti1Image(np.random.default_rng(k).random(shape).astype(np.float32), np.eye(4)),
                 root/'IXI-T1'/f'IXI{i:03d}-{s}-{800 + k:04d}-T1.nii.gz')
    return root


def assert_untouched(before: dict):
    for p, b in before.items(): assert Path(p).read_bytes() == b, f'{p} was modified'


def snapshot(folder):
    return {p: p.read_bytes() for p in Path(folder).rglob('*') if p.is_file()}


# ---------------------------------------------------------------- GTEx: good input
def test_tissue_table_covers_gtex_v8():
    assert TISSUE_ORGANS.SMTSD.is_unique and {'SMTSD', 'tissue', 'organ'} <= set(TISSUE_ORGANS.columns)
    cur = TISSUE_ORGANS[~TISSUE_ORGANS.SMTSD.isin(['Cells - Transformed fibroblasts', 'Cells - Leukemia cell line (CML)'])]
    assert len(cur) == 54
    assert tissue_of('Brain - Cortex') == ('brain_cortex', 'brain')
    assert tissue_of('Heart - Left Ventricle') == ('heart_left_ventricle', 'heart')
    assert tissue_of('Lung') == ('lung', 'lung') and tissue_of('Liver')[1] == 'liver'
    assert tissue_of('Kidney - Cortex')[1] == 'kidney' and tissue_of('Muscle - Skeletal')[1] == 'muscle'
    assert tissue_of('Cells - Cultured fibroblasts') is not None
    assert TISSUE_ORGANS.set_index('SMTSD').loc['Cells - EBV-transformed lymphocytes', 'cell_line']


def test_read_gtex_release(tmp_path):
    root, samples, X = gtex_release(tmp_path/'gtex')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # anndata must not warn (str index, str columns)
        a = read_gtex(root)
    assert a.shape == (12, 6) and a.X.dtype == np.float32
    assert list(a.obs_names) == samples
    np.testing.assert_array_equal(a.X, X.T)
    assert set(STD + ['tissue', 'age_source', 'age_bracket', 'SMTSD', 'SMRIN', 'DTHHRDY']) <= set(a.obs.columns)
    o = a.obs.iloc[0]
    assert (o.subject_id, o.organ, o.tissue, o.modality, o.sex, o.age, o.age_bracket, o.age_source, o.batch) == \
        ('GTEX-45DF', 'brain', 'brain_cortex', 'rna', 'male', 25.0, '20-29', 'bracket_midpoint', 'LCSET-0')
    assert a.var.symbol.iloc[0] == 'GENE0' and a.var_names[0] == 'ENSG00000000000.1'
    assert a.uns['gtex']['values'] == 'counts' and a.uns['dropped'] == {}
    assert a.obs.SMPTHNTS.iloc[0] == '2 pieces, ~10% "fat'  # GTEx notes with stray quotes stay in their field
    a.write_h5ad(tmp_path/'rna.h5ad')  # obs columns are h5ad-safe


def test_read_gtex_selects_before_reading(tmp_path):
    root, samples, X = gtex_release(tmp_path/'gtex')
    a = read_gtex(root, organs='lung', genes=['ENSG00000000002', 'ENSG00000000004.5'])
    assert a.obs.organ.unique().tolist() == ['lung'] and a.n_obs == 4
    cols = [samples.index(s) for s in a.obs_names]
    np.testing.assert_array_equal(a.X, X[[2, 4]][:, cols].T)
    b = read_gtex(root, tissues=['brain_cortex', 'liver'])
    assert sorted(b.obs.tissue.unique()) == ['brain_cortex', 'liver']


def test_exact_ages(tmp_path):
    root, *_ = gtex_release(tmp_path/'gtex')
    f = write(tmp_path/'phs000424.v8.pht002742.SubjectPhenotypesDS.txt', 'SUBJID\tAGE\nGTEX-45DF\t27.5\nGTEX-460F\t45\n')
    a = read_gtex(root, exact_ages=f)
    by = a.obs.groupby('subject_id').first()
    assert by.loc['GTEX-45DF', 'age'] == 27.5 and by.loc['GTEX-45DF', 'age_source'] == 'exact'
    assert by.loc['GTEX-45DF', 'age_bracket'] == '20-29'
    assert by.loc['GTEX-45FF', 'age_source'] == 'bracket_midpoint' and by.loc['GTEX-45FF', 'age'] == 65.0
    assert any('outside their AGE bracket' in m and 'GTEX-460F: 45 vs 70-79' in m for m in a.uns['problems'])
    bad = write(tmp_path/'exact.txt', 'SUBJID\tAGE\nGTEX-45DF\tabout 27\n')
    with pytest.raises(DataError, match=r"exact.txt: line 2 \(SUBJID GTEX-45DF\), column AGE: exact age is not a number of years .*found 'about 27'"):
        read_gtex(root, exact_ages=bad)


def test_counts_preferred_over_tpm_and_per_tissue_files(tmp_path):
    root, samples, X = gtex_release(tmp_path/'gtex', gz=False)
    gct = root/'GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_reads.gct'
    write(root/'GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz', gct_text(X / 7, samples=samples))
    assert read_gtex(root).uns['gtex']['values'] == 'counts'
    # v10-style per-tissue files, side by side
    gct.unlink(); (root/'GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz').unlink()
    write(root/'gene_reads_v10_part1.gct.gz', gct_text(X[:, :5], samples=samples[:5]))
    write(root/'gene_reads_v10_part2.gct.gz', gct_text(X[:, 5:], samples=samples[5:]))
    a = read_gtex(root)
    np.testing.assert_array_equal(a.X, X.T)
    assert list(a.obs_names) == samples and a.obs.gct_file.nunique() == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(g=st.integers(1, 12), s=st.integers(1, 9), data=st.data(), chunk=st.sampled_from([None, 1, 3]), gz=st.booleans())
def test_read_gct_equals_slicing(tmp_path, g, s, data, chunk, gz):
    X = np.round(np.random.default_rng(g * 31 + s).gamma(1.0, 50.0, size=(g, s)), 3)
    p = write(tmp_path/('h.gct.gz' if gz else 'h.gct'), gct_text(X))
    hdr = read_gct_header(p)
    rs = sorted(data.draw(st.sets(st.integers(0, g - 1), min_size=1)))
    cs = sorted(data.draw(st.sets(st.integers(0, s - 1), min_size=0)))
    names = [f'ENSG{i:011d}.{i % 7 + 1}' for i in range(g)]
    a = read_gct(p, samples=[hdr.samples[c] for c in cs], genes=[names[r] for r in rs], chunksize=chunk)
    assert a.shape == (len(cs), len(rs))
    np.testing.assert_allclose(a.X, X[np.ix_(rs, cs)].T.astype(np.float32), rtol=1e-6)


# ---------------------------------------------------------------- GTEx: bad input
def test_truncated_gct_mid_row(tmp_path):
    text = gct_text(np.arange(12.).reshape(4, 3))
    p = write(tmp_path/'cut.gct', text[: len(text) - 5])
    with pytest.raises(DataError, match=r'cut.gct: line 7: data row has the wrong number of fields \(the file ends inside this row: truncated\?\) '
                                        r'\(expected 5 tab-separated fields .*; found 4 fields\)'):
        read_gct(p)


def test_truncated_gct_at_row_boundary(tmp_path):
    lines = gct_text(np.arange(12.).reshape(4, 3)).splitlines()
    p = write(tmp_path/'short.gct', '\n'.join(lines[:-2]) + '\n')
    with pytest.raises(DataError, match=r'short.gct: line 2 vs end of file at line 5: fewer data rows than the dimension line says '
                                        r'\(truncated\?\) \(expected 4 data rows; found 2 data rows\)'):
        read_gct(p)


def test_gzip_truncated(tmp_path):
    raw = gzip.compress(gct_text(np.random.default_rng(0).integers(0, 1000, (300, 40)).astype(float)).encode())
    p = write(tmp_path/'cut.gct.gz', raw[: len(raw) // 2], gz=False)
    with pytest.raises(DataError, match=r'cut.gct.gz: line \d+ \(after \d+ data rows\): gzip stream is corrupt or truncated '
                                        r'\(expected a complete gzip file; found EOFError'):
        read_gct(p)


def test_gzip_corrupt(tmp_path):
    raw = bytearray(gzip.compress(gct_text(np.random.default_rng(0).integers(0, 1000, (300, 40)).astype(float)).encode()))
    raw[len(raw) // 2: len(raw) // 2 + 40] = b'\x00' * 40
    p = write(tmp_path/'bad.gct.gz', bytes(raw), gz=False)
    with pytest.raises(DataError, match=r'bad.gct.gz: line \d+.*: gzip stream is corrupt or truncated \(expected a complete gzip file.*; found'):
        read_gct(p)
    not_gz = write(tmp_path/'garbage.gct.gz', b'\x1f\x8bthis is not deflate data at all', gz=False)
    with pytest.raises(DataError, match=r'garbage.gct.gz: header \(lines 1-3\): gzip stream is corrupt or truncated'):
        read_gct(not_gz)


def test_dimension_line_disagrees(tmp_path):
    X = np.arange(12.).reshape(4, 3)
    with pytest.raises(DataError, match=r'd1.gct: line 3: dimension line disagrees with the header line \(expected 5 sample columns \(line 2 says 4 5\); found 3 sample columns\)'):
        read_gct(write(tmp_path/'d1.gct', gct_text(X, dims=(4, 5))))
    with pytest.raises(DataError, match=r'd2.gct: line 6: more data rows than the dimension line says \(expected 2 data rows \(line 2\); found at least 3\)'):
        read_gct(write(tmp_path/'d2.gct', gct_text(X, dims=(2, 3))))
    with pytest.raises(DataError, match=r'd3.gct: line 2 vs end of file at line 7: fewer data rows .*expected 9 data rows; found 4 data rows'):
        read_gct(write(tmp_path/'d3.gct', gct_text(X, dims=(9, 3))))
    with pytest.raises(DataError, match=r"d4.gct: line 2: bad dimension line \(expected <rows><TAB><columns> \(two integers\); found '4 x 3'\)"):
        read_gct(write(tmp_path/'d4.gct', gct_text(X).replace('4\t3', '4 x 3', 1)))
    with pytest.raises(DataError, match=r"d5.gct: line 1: not a GCT 1.2 file \(expected '#1.2'; found 'Name"):
        read_gct(write(tmp_path/'d5.gct', gct_text(X).split('\n', 2)[2]))


def test_non_numeric_expression(tmp_path):
    text = gct_text(np.arange(12.).reshape(4, 3)).replace('\t7\t', '\tNA\t')
    p = write(tmp_path/'nn.gct', text)
    with pytest.raises(DataError, match=r"nn.gct: line 6, column 4 \(gene ENSG00000000002.3, sample GTEX-0000-0001-SM-00001\): "
                                        r"non-numeric expression value \(expected a number; found 'NA'\)"):
        read_gct(p)
    # a column not selected is never parsed, so a selection that avoids it reads fine
    a = read_gct(p, samples=['GTEX-0000-0000-SM-00000'])
    assert a.X[0].tolist() == [0, 3, 6, 9]
    neg = write(tmp_path/'neg.gct', gct_text(np.arange(12.).reshape(4, 3)).replace('\t7\t', '\t-7\t'))
    with pytest.raises(DataError, match=r'neg.gct: line 6, column 4 \(sample .*\): expression value is not a finite non-negative number .*found -7.0'):
        read_gct(neg)


def test_duplicate_sample_ids(tmp_path):
    p = write(tmp_path/'dup.gct', gct_text(np.ones((2, 3)), samples=['GTEX-A-1', 'GTEX-B-1', 'GTEX-A-1']))
    with pytest.raises(DataError, match=r'dup.gct: line 3: duplicate sample ids \(expected unique sample ids; found GTEX-A-1 \(columns 3, 5\)\)'):
        read_gct(p)
    root, samples, X = gtex_release(tmp_path/'g1')
    extra = pd.DataFrame([(samples[0], 'Brain', 'Brain - Cortex', 'BP-0', 'LCSET-0', '7.0')],
                         columns=['SAMPID', 'SMTS', 'SMTSD', 'SMNABTCH', 'SMGEBTCH', 'SMRIN'])
    root, *_ = gtex_release(tmp_path/'g2', extra_attr=extra)
    with pytest.raises(DataError, match=rf'SampleAttributesDS.txt: column SAMPID: duplicate SAMPID rows \(expected one row per SAMPID; found {samples[0]} \(lines 2, 14\)\)'):
        read_gtex(root)
    root, samples, X = gtex_release(tmp_path/'g3', gz=False)
    write(root/'more_reads.gct', gct_text(X[:, :2], samples=samples[:2]))
    with pytest.raises(DataError, match=rf'duplicate sample ids across GCT files \(expected each sample in one file only; found {samples[0]} also in'):
        read_gtex(root)


def test_samples_without_phenotype_rows(tmp_path, caplog):
    root, samples, X = gtex_release(tmp_path/'gtex')
    ph = root/'GTEx_Analysis_v8_Annotations_SubjectPhenotypesDS.txt'
    lines = ph.read_text().splitlines()
    ph.write_text('\n'.join(l for l in lines if not l.startswith('GTEX-460F')) + '\n')
    before = snapshot(root)
    with caplog.at_level(logging.WARNING, logger='organage'):
        a = read_gtex(root)
    assert a.uns['dropped'] == {'no_phenotype_row': 3} and a.n_obs == 9
    msg = [m for m in a.uns['problems'] if 'no_phenotype' in m or 'no row in' in m][0]
    assert 'gene_reads.gct.gz: 3 samples dropped, their donor has no row in' in msg and 'SubjectPhenotypesDS.txt' in msg
    assert 'expected a SUBJID row for donors GTEX-460F' in msg
    assert msg in caplog.text
    assert_untouched(before)


def test_samples_without_attribute_rows(tmp_path):
    root, samples, X = gtex_release(tmp_path/'gtex')
    at = root/'GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt'
    at.write_text('\n'.join(l for l in at.read_text().splitlines() if not l.startswith(samples[1])) + '\n')
    a = read_gtex(root)
    assert a.uns['dropped'] == {'no_sample_attributes': 1}
    assert f'1 samples dropped, no row in GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt (expected a SAMPID row for every GCT sample; found none for {samples[1]})' in a.uns['problems'][0]


def test_unknown_tissue_names(tmp_path):
    root, samples, X = gtex_release(tmp_path/'gtex', tissues=('Brain - Cortex', 'Brain - Neocortex', 'Lung'))
    a = read_gtex(root)
    assert a.uns['dropped'] == {'unknown_tissue': 4} and 'brain' in set(a.obs.organ)
    m = a.uns['problems'][0]
    assert "SampleAttributesDS.txt: column SMTSD: 4 samples dropped, tissue not in TISSUE_ORGANS (expected a GTEx SMTSD value such as 'Brain - Cortex'; found 'Brain - Neocortex' x4)" in m
    with pytest.raises(DataError, match=r'tissues=: unknown tissues \(expected one of .*brain_cortex.*; found brain_neocortex\)'):
        read_gtex(root, tissues=['brain_neocortex'])
    with pytest.raises(DataError, match=r'no usable samples .*found none; dropped: unknown_tissue 4'):
        read_gtex(root, tissues=['liver'])


def test_malformed_age_brackets(tmp_path):
    root, samples, X = gtex_release(tmp_path/'gtex', ages=['20-29', '30 to 39', '69-60', '70-79'])
    a = read_gtex(root)
    assert a.uns['dropped'] == {'malformed_age': 6} and sorted(a.obs.subject_id.unique()) == ['GTEX-45DF', 'GTEX-460F']
    m = [x for x in a.uns['problems'] if 'column AGE' in x][0]
    assert "SubjectPhenotypesDS.txt: column AGE: 2 donors dropped, age not readable (expected a decade bracket like '60-69' or a number of years; " \
           "found line 3 (SUBJID GTEX-45EF): '30 to 39', line 4 (SUBJID GTEX-45FF): '69-60')" in m


def test_missing_annotation_columns_and_files(tmp_path):
    root, *_ = gtex_release(tmp_path/'gtex')
    ph = root/'GTEx_Analysis_v8_Annotations_SubjectPhenotypesDS.txt'
    ph.write_text(ph.read_text().replace('AGE', 'AGE_BRACKET', 1))
    with pytest.raises(DataError, match=r'SubjectPhenotypesDS.txt: header \(line 1\): subject phenotype file lacks required columns \(expected SUBJID, SEX, AGE; found SUBJID, SEX, AGE_BRACKET, DTHHRDY\)'):
        read_gtex(root)
    ph.unlink()
    with pytest.raises(DataError, match=r'gtex: no GTEx subject phenotype \(SubjectPhenotypesDS\) file \(expected a file matching \*SubjectPhenotypesDS\*; found GTEx_Analysis'):
        read_gtex(root)


# ---------------------------------------------------------------- CheXpert
def test_read_chexpert(tmp_path):
    ds = chexpert_dataset(tmp_path/'chexpert')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        a = read_chexpert(tmp_path/'chexpert')
    assert a.shape == (3, 0) and set(STD + ['path', 'Frontal_Lateral', 'AP_PA', 'Cardiomegaly']) <= set(a.obs.columns)
    assert a.obs.subject_id.tolist() == ['patient00001', 'patient00002', 'patient64541']
    assert (a.obs.organ == 'lung').all() and (a.obs.modality == 'xray').all()
    assert a.obs.batch.tolist() == ['AP', 'PA', 'PA'] and a.obs.split.tolist() == ['train', 'train', 'valid']
    assert a.uns['dropped'] == {'age_missing_or_zero': 1} and a.uns['excluded'] == {'lateral_view': 1}
    assert 'train.csv: column Age: 1 rows dropped, age 0 or missing (expected years > 0; found line 5: \'0\')' in a.uns['problems'][0]
    assert Path(a.obs.path.iloc[0]).is_file()
    assert read_chexpert(ds, frontal_only=False).n_obs == 4
    img = load_radiograph(a.obs.path.iloc[1])
    assert img.shape == (32, 40) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    a.write_h5ad(tmp_path/'x.h5ad')


def test_chexpert_full_size_and_16bit_png(tmp_path):
    from PIL import Image
    ds = chexpert_dataset(tmp_path/'chexpert', name='CheXpert-v1.0', images=False, valid=False,
                          rows=[('train/patient00009/study1/view1_frontal.png', 'Female', 50, 'Frontal', 'PA')])
    p = ds/'train/patient00009/study1/view1_frontal.png'; p.parent.mkdir(parents=True)
    Image.fromarray(np.array([[0, 65535], [32768, 1000]], np.uint16)).save(p)
    a = read_chexpert(tmp_path/'chexpert')
    np.testing.assert_allclose(load_radiograph(a.obs.path.iloc[0]), np.array([[0, 1], [32768 / 65535, 1000 / 65535]]), rtol=1e-6)


def test_chexpert_path_escaping_root(tmp_path):
    ds = chexpert_dataset(tmp_path/'chexpert', images=False)
    t = ds/'train.csv'
    t.write_text(t.read_text().replace('CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg',
                                       'CheXpert-v1.0-small/../../../etc/passwd'))
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match=r"train.csv: line 4, column Path: image path escapes the dataset root \(expected a path inside the dataset "
                                        r".*; found 'CheXpert-v1.0-small/../../../etc/passwd'\)"):
        read_chexpert(tmp_path/'chexpert')
    t.write_text(t.read_text().replace('CheXpert-v1.0-small/../../../etc/passwd', '/etc/passwd'))
    with pytest.raises(DataError, match=r"line 4, column Path: image path escapes the dataset root .*found '/etc/passwd'"):
        read_chexpert(tmp_path/'chexpert')
    assert (tmp_path/'chexpert'/'CheXpert-v1.0-small'/'train.csv').exists()


def test_missing_and_corrupt_images(tmp_path):
    ds = chexpert_dataset(tmp_path/'chexpert')
    a = read_chexpert(ds)
    missing = Path(a.obs.path.iloc[0]); missing.unlink()
    with pytest.raises(DataError, match=rf'{missing}: image file not found \(expected a JPG/PNG radiograph; found no such file\)'):
        load_radiograph(missing)
    b = read_chexpert(ds, check_files=True)
    assert b.uns['dropped']['missing_image'] == 1 and str(missing) in b.uns['problems'][-1]
    corrupt = Path(a.obs.path.iloc[1]); data = corrupt.read_bytes(); corrupt.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=rf'{corrupt}: image cannot be decoded \(corrupt or truncated\?\) \(expected a readable JPG/PNG image; found OSError'):
        load_radiograph(corrupt)
    empty = Path(a.obs.path.iloc[2]); empty.write_bytes(b'')
    with pytest.raises(DataError, match=rf'{empty}: image cannot be decoded .*UnidentifiedImageError'):
        load_radiograph(empty)
    r = check_data(tmp_path, decode='all')
    warn = [p.message for p in r.problems if p.severity == 'warning']   # unusable files are warnings: training leaves them out
    assert all(any(str(f) in m for m in warn) for f in (missing, corrupt, empty)) and r.decoded['xray'] == {'files': 2, 'of': 2, 'unreadable': 2}
    assert [p.message for p in r.problems if p.severity == 'fatal'] == [   # fatal only because no image at all is readable
        'none of the 2 decoded image files can be read (expected readable images; found 2 failures, the first: ' + next(m for m in warn if str(corrupt) in m) + ')']


def test_chexpert_missing_columns_and_duplicates(tmp_path):
    ds = chexpert_dataset(tmp_path/'chexpert', images=False)
    t = ds/'train.csv'
    t.write_text(t.read_text().replace('Age,', 'PatientAge,', 1))
    with pytest.raises(DataError, match=r'train.csv: header \(line 1\): CheXpert CSV lacks required columns \(expected Path, Sex, Age, Frontal/Lateral; found Path, Sex, PatientAge'):
        read_chexpert(ds)
    ds2 = chexpert_dataset(tmp_path/'c2', images=False, rows=[('valid/patient64541/study1/view1_frontal.jpg', 'Male', 73, 'Frontal', 'PA')])
    with pytest.raises(DataError, match=r'the same image path appears twice .*found CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg \(train.csv line 2, valid.csv line 2\)'):
        read_chexpert(ds2)


# ---------------------------------------------------------------- IXI
@pytest.mark.parametrize('fmt', ['xls', 'csv'])
def test_read_ixi(tmp_path, fmt):
    root = ixi_dataset(tmp_path/'ixi', fmt=fmt)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        a = read_ixi(root)
    assert a.shape == (3, 0) and list(a.obs_names) == ['IXI002-Guys-0800-T1', 'IXI012-HH-0801-T1', 'IXI013-IOP-0802-T1']
    assert a.obs[STD].values.tolist() == [['IXI002', 'brain', 'mri', 35.8, 'male', 'Guys'],
                                          ['IXI012', 'brain', 'mri', 38.78, 'female', 'HH'],
                                          ['IXI013', 'brain', 'mri', 46.71, 'male', 'IOP']]
    assert {'HEIGHT', 'DOB', 'STUDY_DATE', 'SEX_ID', 'path'} <= set(a.obs.columns)
    v = load_volume(a.obs.path.iloc[0])
    assert v.shape == (6, 7, 8) and np.asarray(v).dtype == np.float32 and v.affine.shape == (4, 4)   # a MetaTensor with the file's affine
    a.write_h5ad(tmp_path/'m.h5ad')


def test_ixi_sheet_is_published_layout(tmp_path):
    root = ixi_dataset(tmp_path/'ixi')
    import xlrd
    book = xlrd.open_workbook(root/'IXI.xls')
    assert book.sheet_names() == ['Table'] and book.sheet_by_name('Table').row_values(0) == IXI_COLS
    write_xls(pd.DataFrame({'IXI_ID': [2]}), root/'IXI.xls', sheet='Sheet1')
    with pytest.raises(DataError, match=r"IXI.xls: sheets: IXI workbook has no sheet named Table \(expected a sheet 'Table'; found Sheet1\)"):
        read_ixi(root)
    (root/'IXI.xls').write_bytes(b'PK\x03\x04 not an xls')
    with pytest.raises(DataError, match=r'IXI.xls: IXI workbook cannot be read \(expected an Excel 97-2003 \(.xls\) workbook; found'):
        read_ixi(root)


def test_ixi_rows_without_age(tmp_path):
    root = ixi_dataset(tmp_path/'ixi', ages=(35.8, np.nan, 46.71))
    a = read_ixi(root)
    assert a.obs.subject_id.tolist() == ['IXI002', 'IXI013'] and a.uns['dropped'] == {'sheet_row_dropped': 1}
    m = a.uns['problems'][0]
    assert 'IXI.xls: column AGE: 1 rows without a usable age dropped (expected years > 0; found row 3 (IXI_ID 12): None)' in m
    assert 'IXI012-HH-0801-T1.nii.gz' in a.uns['problems'][1]


def test_ixi_duplicate_rows(tmp_path):
    root = ixi_dataset(tmp_path/'ixi', fmt='csv')
    s = pd.read_csv(root/'IXI.csv')
    s = pd.concat([s, s.iloc[[0]], s.iloc[[1]].assign(AGE=51.0)]); s.to_csv(root/'IXI.csv', index=False)
    a = read_ixi(root)
    assert a.uns['dropped'] == {'sheet_row_dropped': 1}
    sheet = read_ixi_sheet(root/'IXI.csv')
    assert sheet.index.tolist() == [2, 13]
    assert any('IXI_ID 12: rows 3, 6' in m for m in a.uns['problems'])


def test_corrupt_and_non_3d_nifti(tmp_path):
    import nibabel as nib
    root = ixi_dataset(tmp_path/'ixi', shape=(20, 20, 20))
    t1 = sorted((root/'IXI-T1').glob('*.nii.gz'))
    raw = t1[0].read_bytes(); t1[0].write_bytes(raw[: len(raw) // 2])          # truncated gzip: header fine, data cut
    t1[1].write_bytes(b'this is not a nifti file')                               # garbage
    nib.save(nib.Nifti1Image(np.zeros((5, 5), np.float32), np.eye(4)), t1[2])    # 2-D
    with pytest.raises(DataError, match=rf'{t1[0]}: NIfTI file cannot be read \(corrupt or truncated\?\) \(expected a complete NIfTI-1/2 volume; found'):
        load_volume(t1[0])
    with pytest.raises(DataError, match=rf'{t1[1]}: NIfTI file cannot be read'):
        load_volume(t1[1])
    with pytest.raises(DataError, match=rf'{t1[2]}: volume is not 3-D \(expected shape \(X, Y, Z\); found shape \(5, 5\)\)'):
        load_volume(t1[2])
    a = read_ixi(root)
    assert a.uns['dropped'] == {'unreadable_nifti': 1, 'not_3d': 1} and a.n_obs == 1
    assert any(str(t1[1]) in m and 'NIfTI header cannot be read' in m for m in a.uns['problems'])
    r = check_data(tmp_path, decode='all')
    assert any(str(t1[0]) in p.message and 'NIfTI file cannot be read' in p.message for p in r.problems if p.severity == 'warning')
    assert r.fatal and any('none of the 1 decoded image files can be read' in p.message for p in r.problems if p.severity == 'fatal')
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 1), np.float32), np.eye(4)), t1[2])
    assert load_volume(t1[2]).shape == (4, 4, 4)  # a trailing time axis of 1 is squeezed


# ---------------------------------------------------------------- cohort
def test_empty_or_wrong_folders(tmp_path):
    with pytest.raises(DataError, match=r'nowhere: cohort folder not found \(expected a folder holding gtex/, chexpert/ and/or ixi/; found no such folder\)'):
        read_cohort(tmp_path/'nowhere')
    (tmp_path/'empty').mkdir()
    with pytest.raises(DataError, match=r'empty: no datasets in the cohort folder \(expected at least one of gtex/, chexpert/, ixi/; found an empty folder\)'):
        read_cohort(tmp_path/'empty')
    (tmp_path/'wrong'/'GTEx').mkdir(parents=True); (tmp_path/'wrong'/'readme.txt').write_text('hi')
    with pytest.raises(DataError, match=r'found GTEx/, readme.txt'):
        read_cohort(tmp_path/'wrong')
    (tmp_path/'c'/'gtex').mkdir(parents=True); (tmp_path/'c'/'chexpert').mkdir(); (tmp_path/'c'/'ixi').mkdir()
    with pytest.raises(DataError, match=r'gtex: no GCT expression file \(expected \*.gct or \*.gct.gz \(GCT 1.2\); found an empty folder\)'):
        read_gtex(tmp_path/'c'/'gtex')
    with pytest.raises(DataError, match=r'chexpert: no CheXpert dataset \(expected train.csv/valid.csv .*; found an empty folder\)'):
        read_chexpert(tmp_path/'c'/'chexpert')
    with pytest.raises(DataError, match=r'ixi: no IXI demographics sheet \(expected IXI.xls \(sheet Table\) or IXI.csv; found an empty folder\)'):
        read_ixi(tmp_path/'c'/'ixi')
    r = check_data(tmp_path/'c')
    assert r.fatal and len([p for p in r.problems if p.severity == 'fatal']) == 3
    txt = r.text()
    assert 'FATAL [rna]' in txt and 'FATAL [xray]' in txt and 'FATAL [mri]' in txt
    r = check_data(tmp_path/'empty')
    assert r.fatal and 'no datasets in the cohort folder' in str(r)


def test_read_cohort_applies_links(tmp_path):
    gtex_release(tmp_path/'gtex'); chexpert_dataset(tmp_path/'chexpert'); ixi_dataset(tmp_path/'ixi')
    (tmp_path/'subject_links.csv').write_text('subject_id,gtex_id,chexpert_id,ixi_id\nS0001,GTEX-45DF,patient00001,IXI002\n'
                                             'S0002,,patient00002,\nS0003,GTEX-460F,,IXI013\n')
    c = read_cohort(tmp_path)
    assert sorted(c) == ['mri', 'rna', 'xray']
    assert c['mri'].obs.subject_id.tolist() == ['S0001', 'IXI012', 'S0003']
    assert c['mri'].obs.source_subject_id.tolist() == ['IXI002', 'IXI012', 'IXI013']
    assert set(c['rna'].obs.subject_id) == {'S0001', 'S0003', 'GTEX-45EF', 'GTEX-45FF'}
    assert c['xray'].obs.subject_id.tolist() == ['S0001', 'S0002', 'patient64541']
    for a in c.values(): assert set(STD) <= set(a.obs.columns)
    r = check_data(tmp_path)
    assert not r.fatal, r.text()
    s = r.summary.set_index(['modality', 'organ'])
    assert s.loc[('rna', 'lung'), 'observations'] == 4 and s.loc[('xray', 'lung'), 'subjects'] == 3
    assert s.loc[('mri', 'brain'), 'age_min'] == 35.8 and s.loc[('mri', 'brain'), 'batches'] == 3
    txt = r.text()
    for needle in ['== rna (gtex/)', '== xray (chexpert/)', '== mri (ixi/)', 'age distribution', 'batches / sites',
                   'Guys 1', 'female_pct', 'dropped: age_missing_or_zero 1', 'lateral_view 1',
                   '2 of 7 subjects have observations in more than one modality', '== problems: 0 fatal']:
        assert needle in txt, needle
    (tmp_path/'subject_links.csv').write_text('subject_id,gtex_id\nS1,GTEX-45DF\nS2,GTEX-45DF\n')
    with pytest.raises(DataError, match=r'subject_links.csv: column gtex_id: a native id is linked to several subjects \(expected each native id on one subject; found GTEX-45DF\)'):
        read_cohort(tmp_path)


def test_bad_input_loses_nothing(tmp_path):
    "Failing reads leave every input file byte-for-byte as it was."
    root, *_ = gtex_release(tmp_path/'gtex')
    gct = next(root.glob('*.gct.gz'))
    gct.write_bytes(gct.read_bytes()[:-20])
    before = snapshot(tmp_path)
    with pytest.raises(DataError):
        read_cohort(tmp_path)
    r = check_data(tmp_path)
    assert r.fatal and isinstance(r, CohortReport)
    assert_untouched(before)
    assert sorted(p.name for p in root.iterdir()) == sorted(Path(p).name for p in before)


def test_check_data_parses_every_gtex_value(tmp_path):
    "check_data keeps no expression values but still parses each one, so a bad cell anywhere is reported."
    root, samples, X = gtex_release(tmp_path/'gtex', gz=False)
    gct = next(root.glob('*.gct'))
    lines = gct.read_text().splitlines()
    f = lines[-1].split('\t'); f[-1] = '1e5x'; lines[-1] = '\t'.join(f)
    gct.write_text('\n'.join(lines) + '\n')
    r = check_data(tmp_path)
    msg = [p.message for p in r.problems if p.severity == 'fatal']
    assert r.fatal and len(msg) == 1
    assert f"gene_reads.gct: line 9, column 14 (gene ENSG00000000005.6, sample {samples[-1]}): non-numeric expression value (expected a number; found '1e5x')" in msg[0]
    assert 'FATAL [rna]' in r.text()
