"Simulator: real formats on disk, ground truth consistent with the files, determinism, age signal in every modality."
import gzip, re
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from organage.core import ConfigError, fingerprint
from organage.data.synth import (simulate_cohort, simulate_truth, simulate_subjects, SimConfig, ORGANS, SIM_TISSUES,
                                 CHEXPERT_FINDINGS, render_volumes, render_radiographs)

KW = dict(subjects=150, n_genes=400, image_size=32, volume_size=16, paired_fraction=0.3)


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    return simulate_cohort(tmp_path_factory.mktemp('sim')/'cohort', seed=7, **KW)


def _gtex(root):
    g = root/'gtex'
    gct = next(g.glob('*.gct.gz'))
    attrs = pd.read_csv(next(g.glob('*SampleAttributesDS.txt')), sep='\t')
    pheno = pd.read_csv(next(g.glob('*SubjectPhenotypesDS.txt')), sep='\t')
    return gct, attrs, pheno


def test_gct_is_gct12(cohort):
    gct, attrs, _ = _gtex(cohort)
    with gzip.open(gct, 'rt') as f: head = [next(f).rstrip('\n') for _ in range(3)]
    assert head[0] == '#1.2'
    n_rows, n_cols = map(int, head[1].split('\t'))
    cols = head[2].split('\t')
    assert cols[:2] == ['Name', 'Description'] and len(cols) == n_cols + 2
    body = pd.read_csv(gct, sep='\t', skiprows=2)
    assert body.shape == (n_rows, n_cols + 2) == (KW['n_genes'], n_cols + 2)
    assert body.Name.is_unique and body.Name.str.match(r'^ENSG\d{11}\.\d+$').all()
    counts = body.iloc[:, 2:].to_numpy()
    assert np.issubdtype(counts.dtype, np.integer) and counts.min() >= 0
    assert set(cols[2:]) == set(attrs.SAMPID)
    assert all(re.fullmatch(r'GTEX-[0-9A-Z]{5}-\d{4}-SM-[0-9A-Z]{5}', s) for s in cols[2:])


def test_gtex_annotations(cohort):
    _, attrs, pheno = _gtex(cohort)
    assert list(pheno.columns) == ['SUBJID', 'SEX', 'AGE', 'DTHHRDY']
    assert set(pheno.SEX) <= {1, 2} and pheno.AGE.isin([f'{d}-{d + 9}' for d in range(20, 80, 10)]).all()
    assert {'SAMPID', 'SMTS', 'SMTSD', 'SMNABTCH', 'SMGEBTCH', 'SMRIN'} <= set(attrs.columns)
    assert set(attrs.SMTSD) <= set(SIM_TISSUES.SMTSD) and attrs.SMRIN.between(1, 10).all()
    subj = attrs.SAMPID.str.split('-').str[:2].str.join('-')
    assert set(subj) == set(pheno.SUBJID)
    # the bracket agrees with the true age and SEX with the subject table
    links = pd.read_csv(cohort/'subject_links.csv'); people = pd.read_csv(cohort/'subjects.csv')
    m = pheno.merge(links, left_on='SUBJID', right_on='gtex_id').merge(people, on='subject_id')
    lo = m.AGE.str.split('-').str[0].astype(int)
    assert ((m.age >= lo) & (m.age < lo + 10)).all()
    assert (m.SEX == np.where(m.sex == 'male', 1, 2)).all()


def test_chexpert_tables(cohort):
    ds = cohort/'chexpert'/'CheXpert-v1.0-small'
    tabs = {s: pd.read_csv(ds/f'{s}.csv') for s in ('train', 'valid') if (ds/f'{s}.csv').exists()}
    tr = pd.concat(tabs.values())
    assert list(tr.columns) == ['Path', 'Sex', 'Age', 'Frontal/Lateral', 'AP/PA', *CHEXPERT_FINDINGS]
    assert tr.Path.str.match(r'^CheXpert-v1\.0-small/(train|valid)/patient\d{5}/study\d+/view\d_(frontal|lateral)\.jpg$').all()
    assert all((cohort/'chexpert'/p).is_file() for p in tr.Path)
    assert set(tr.Sex) <= {'Male', 'Female'} and tr.Age.between(18, 90).all()
    fr = tr[tr['Frontal/Lateral'] == 'Frontal']
    assert set(fr['AP/PA']) <= {'AP', 'PA'} and tr.loc[tr['Frontal/Lateral'] == 'Lateral', 'AP/PA'].isna().all()
    for c in CHEXPERT_FINDINGS: assert set(tr[c].dropna()) <= {-1.0, 0.0, 1.0}
    # a patient is in one split only
    pat = tr.Path.str.split('/')
    assert (pd.DataFrame({'p': pat.str[2], 's': pat.str[1]}).groupby('p').s.nunique() == 1).all()
    from PIL import Image
    im = Image.open(cohort/'chexpert'/fr.Path.iloc[0])
    assert im.mode == 'L' and im.size == (KW['image_size'],)*2


def test_ixi_sheet_and_volumes(cohort):
    import nibabel as nib
    sheet = pd.read_csv(cohort/'ixi'/'IXI.csv')
    assert list(sheet.columns) == ['IXI_ID', 'SEX_ID (1=m, 2=f)', 'HEIGHT', 'WEIGHT', 'ETHNIC_ID', 'MARITAL_ID',
                                   'OCCUPATION_ID', 'QUALIFICATION_ID', 'DOB', 'DATE_AVAILABLE', 'STUDY_DATE', 'AGE']
    files = sorted((cohort/'ixi'/'IXI-T1').glob('*.nii.gz'))
    assert len(files) == len(sheet)
    m = [re.fullmatch(r'IXI(\d{3,})-(Guys|HH|IOP)-(\d{4})-T1\.nii\.gz', f.name) for f in files]
    assert all(m) and sorted(int(x.group(1)) for x in m) == sorted(sheet.IXI_ID)
    age = (pd.to_datetime(sheet.STUDY_DATE) - pd.to_datetime(sheet.DOB)).dt.days/365.25
    np.testing.assert_allclose(age, sheet.AGE, atol=0.01)
    # IXI's geometry: anisotropic voxels with IXI's ratios, IXI's field of view, an orientation per site
    from organage.data.synth import ixi_geometry, IXI_ORIENTATION, SimConfig
    cfg = SimConfig(**KW)
    for f, x in zip(files, m):
        img = nib.load(f); site = x.group(2)
        shape, aff = ixi_geometry(site, cfg)
        assert img.shape == shape and img.get_data_dtype() == np.int16 and np.allclose(img.affine, aff, atol=1e-4)
        assert ''.join(nib.aff2axcodes(img.affine)) == IXI_ORIENTATION[site]
        vs = np.asarray(img.header.get_zooms())
        np.testing.assert_allclose(vs/vs[0], [1, 1, 1.2/0.9375], rtol=1e-5)
        np.testing.assert_allclose(vs*np.array(img.shape), [240, 240, 180], rtol=0.05)
    assert {x.group(2) for x in m} == set(IXI_ORIENTATION)


def test_truth_and_links(cohort):
    truth = pd.read_csv(cohort/'truth.csv'); links = pd.read_csv(cohort/'subject_links.csv', dtype=str)
    people = pd.read_csv(cohort/'subjects.csv')
    assert len(truth) == KW['subjects']*len(ORGANS) and set(truth.organ) == set(ORGANS)
    np.testing.assert_allclose(truth.age + truth.acceleration, truth.bio_age, atol=2e-3)
    np.testing.assert_allclose(truth.systemic + truth.organ_specific, truth.acceleration, atol=2e-3)
    assert list(links.columns) == ['subject_id', 'gtex_id', 'chexpert_id', 'ixi_id'] and links.subject_id.is_unique
    matched = people.subject_id[people.group == 'matched']
    assert len(matched) == round(KW['subjects']*KW['paired_fraction'])
    ml = links.set_index('subject_id').loc[matched]
    assert ml.notna().all().all()
    # every native id appears once; others are blank in the columns of cohorts the person is not in
    for c in ('gtex_id', 'chexpert_id', 'ixi_id'): assert links[c].dropna().is_unique
    # matched donors have lung and brain tissue, a radiograph and an MRI
    _, attrs, _ = _gtex(cohort)
    donor_tissues = attrs.assign(d=attrs.SAMPID.str.split('-').str[:2].str.join('-')).groupby('d').SMTSD.agg(set)
    assert all({'Lung', 'Brain - Cortex'} <= donor_tissues[g] for g in ml.gtex_id)
    tg = pd.read_csv(cohort/'truth_genes.csv')
    assert list(tg.columns) == ['organ', 'gene_id', 'symbol', 'effect', 'programme']
    assert set(tg.programme) == {'shared', 'organ'} and (tg.effect.abs() > 0).all()
    shared = tg[tg.programme == 'shared'].groupby('gene_id').organ.nunique()
    assert (shared == len(ORGANS)).all()


def test_deterministic_for_a_seed(cohort, tmp_path):
    again = simulate_cohort(tmp_path/'again', seed=7, **KW)
    other = simulate_cohort(tmp_path/'other', seed=8, **KW)
    for part in ('gtex', 'chexpert', 'ixi', 'truth.csv', 'truth_genes.csv', 'subject_links.csv'):
        assert fingerprint(cohort/part)['sha256'] == fingerprint(again/part)['sha256'], part
    assert fingerprint(cohort/'truth.csv')['sha256'] != fingerprint(other/'truth.csv')['sha256']


def test_refuses_foreign_folder_and_unknown_settings(tmp_path):
    (tmp_path/'x').mkdir(); (tmp_path/'x'/'mine.txt').write_text('keep me')
    with pytest.raises(ConfigError, match='not a simulated cohort'): simulate_cohort(tmp_path/'x', **KW)
    assert (tmp_path/'x'/'mine.txt').read_text() == 'keep me'
    with pytest.raises(ConfigError, match='unknown simulator setting'): simulate_cohort(tmp_path/'y', colour='red', **KW)
    assert not (tmp_path/'y').exists()


def test_accelerations_have_the_configured_structure():
    cfg = SimConfig(subjects=20000, systemic_sd=3.0, organ_sd=4.0, organ_corr=0.2, accel_age_slope=0.0)
    rng = np.random.default_rng(0)
    t = simulate_truth(simulate_subjects(cfg, rng), cfg, rng)
    acc = t.pivot(index='subject_id', columns='organ', values='acceleration')
    np.testing.assert_allclose(acc.std(), np.sqrt(3**2 + 4**2), rtol=0.03)
    off = acc.corr().to_numpy()[np.triu_indices(len(ORGANS), 1)]
    np.testing.assert_allclose(off, (9 + 0.2*16)/(9 + 16), atol=0.03)
    # gaps widen with age when accel_age_slope > 0
    cfg2 = SimConfig(subjects=20000, accel_age_slope=0.5)
    t2 = simulate_truth(simulate_subjects(cfg2, rng), cfg2, rng)
    old, young = t2[t2.age > 65].acceleration.std(), t2[t2.age < 35].acceleration.std()
    assert old > 1.3*young


def test_expression_tracks_organ_bio_age(cohort):
    "Age genes of an organ correlate with that organ's biological age far more than null genes do."
    gct, attrs, _ = _gtex(cohort)
    body = pd.read_csv(gct, sep='\t', skiprows=2).set_index('Name')
    x = body.iloc[:, 1:].astype(float)
    lcpm = np.log2(x/x.sum()*1e6 + 1)
    links = pd.read_csv(cohort/'subject_links.csv'); truth = pd.read_csv(cohort/'truth.csv')
    tg = pd.read_csv(cohort/'truth_genes.csv')
    a = attrs.set_index('SAMPID').loc[lcpm.columns]
    sid = pd.Series(a.index.str.split('-').str[:2].str.join('-'), index=a.index).map(links.dropna(subset=['gtex_id']).set_index('gtex_id').subject_id)
    organ = a.SMTSD.map(dict(zip(SIM_TISSUES.SMTSD, SIM_TISSUES.organ)))
    key = pd.DataFrame({'subject_id': sid.to_numpy(), 'organ': organ.to_numpy()})
    bio = key.merge(truth, on=['subject_id', 'organ'], how='left').bio_age.to_numpy()
    assert not np.isnan(bio).any()
    lung = (organ == 'lung').to_numpy()
    genes = tg[(tg.organ == 'lung')]
    sign = np.sign(genes.set_index('gene_id').effect)
    expressed = lcpm.loc[:, lung].mean(1) > 3
    age_genes = [g for g in genes.gene_id if expressed[g]]
    score = (lcpm.loc[age_genes, lung].sub(lcpm.loc[age_genes, lung].mean(1), axis=0).T*sign[age_genes]).mean(1)
    r, p = stats.pearsonr(score, bio[lung])
    assert r > 0.6 and p < 1e-6
    null = [g for g in lcpm.index if g not in set(tg.gene_id) and expressed[g]][:200]
    rn = [abs(stats.pearsonr(lcpm.loc[g, lung], bio[lung])[0]) for g in null]
    assert np.median(rn) < 0.15


def test_mri_ventricles_grow_with_brain_age():
    "Dark (CSF-like) voxels inside the head increase with the brain's biological age, all else equal."
    cfg = SimConfig(mri_noise=0.0)
    p = pd.DataFrame(dict(b=np.linspace(0, 1, 5), male=True, head=1.0, vent=0.0, atrophy=0.0, site='Guys', rx=0., ry=0., rz=0.,
                          tx=0., ty=0., tz=0., bias0=0., bias1=0., bias2=0., bias3=0.))
    v = render_volumes(p, 24, cfg, np.random.default_rng(0))
    c = v[:, 8:16, 8:16, 8:16]
    dark = (c < 0.35).mean((1, 2, 3))
    assert np.all(np.diff(dark) > 0)


def test_radiograph_lungs_darker_and_hearts_wider_with_age():
    p = pd.DataFrame(dict(a=np.linspace(-1, 1, 5), male=1, sx=1., sy=1., heart=1., texture=1., density=1., bone=1., ap=0., rot=0.,
                          tx=0., ty=0., zoom=1., gamma=1., contrast=1., noise=0.))
    im = render_radiographs(p, 64, np.random.default_rng(0))
    lung_field = im[:, 14:30, 6:18].mean((1, 2))
    assert np.all(np.diff(lung_field) < 0)


def test_round_trip_through_the_loaders(cohort):
    import organage.data.cohort as cohort_mod
    d = cohort_mod.read_cohort(cohort)
    assert set(d) == {'rna', 'xray', 'mri'}
    links = pd.read_csv(cohort/'subject_links.csv'); people = pd.read_csv(cohort/'subjects.csv')
    gct, attrs, _ = _gtex(cohort)
    assert d['rna'].n_obs == len(attrs) and d['rna'].n_vars == KW['n_genes']
    body = pd.read_csv(gct, sep='\t', skiprows=2).set_index('Name')
    ad = d['rna']
    col = ad.obs_names[0] if ad.obs_names[0] in body.columns else ad.obs['SAMPID'].iloc[0]
    np.testing.assert_array_equal(np.asarray(ad[0].X.todense() if hasattr(ad.X, 'todense') else ad[0].X).ravel(),
                                  body.loc[ad.var_names, col].to_numpy())
    for m in d.values(): assert set(m.obs.subject_id) <= set(links.subject_id)
    matched = set(people.subject_id[people.group == 'matched'])
    for m in ('rna', 'xray', 'mri'): assert matched <= set(d[m].obs.subject_id)
    assert set(d['rna'].obs.organ) == set(ORGANS) and set(d['xray'].obs.organ) == {'lung'} and set(d['mri'].obs.organ) == {'brain'}
    # ages read back agree with the truth (radiograph: whole years; IXI: exact)
    age = people.set_index('subject_id').age
    xo = d['xray'].obs
    assert (np.floor(age.loc[xo.subject_id].to_numpy()) == xo.age.to_numpy()).all()
    mo = d['mri'].obs
    np.testing.assert_allclose(age.loc[mo.subject_id].to_numpy(), mo.age.to_numpy(), atol=0.01)
    assert set(mo.batch) <= {'Guys', 'HH', 'IOP'}


def test_a_cohort_without_some_modalities(tmp_path):
    "Unpaired cohorts of one kind only: the other dataset folders are simply absent."
    root = simulate_cohort(tmp_path/'only_ixi', subjects=20, n_genes=200, image_size=16, volume_size=16, paired_fraction=0,
                           cohort_shares=(0, 0, 1))
    assert (root/'ixi'/'IXI.csv').exists() and not (root/'gtex').exists() and not (root/'chexpert').exists()
    assert len(pd.read_csv(root/'truth.csv')) == 20*len(ORGANS) and len(pd.read_csv(root/'truth_genes.csv'))


def test_exact_gtex_ages_for_protected_access_users(cohort):
    import organage.data.gtex as gtex
    a = gtex.read_gtex(cohort/'gtex', exact_ages=cohort/'gtex_exact_ages.csv')
    people = pd.read_csv(cohort/'subjects.csv').set_index('subject_id')
    links = pd.read_csv(cohort/'subject_links.csv').dropna(subset=['gtex_id']).set_index('gtex_id').subject_id
    np.testing.assert_allclose(a.obs.age.to_numpy(), people.age.loc[links.loc[a.obs.subject_id]].to_numpy(), atol=1e-6)


def test_same_files_whatever_n_jobs(tmp_path):
    kw = dict(subjects=40, n_genes=200, image_size=16, volume_size=16, seed=3)
    a = simulate_cohort(tmp_path/'a', n_jobs=1, **kw)
    b = simulate_cohort(tmp_path/'b', n_jobs=2, **kw)
    for part in ('chexpert', 'ixi'):
        assert fingerprint(a/part)['sha256'] == fingerprint(b/part)['sha256'], part


def test_messy_cohort_exercises_the_drop_rules(tmp_path):
    "messy=True injects real-release imperfections; the loaders drop them with counts, never silently."
    import json
    import organage.data.cohort as cohort
    root = simulate_cohort(tmp_path/'m', subjects=200, n_genes=200, image_size=16, volume_size=16, messy=True, seed=2)
    mess = json.loads((root/'simulation.json').read_text())['imperfections']
    assert set(mess) == {'gtex_samples_without_expression', 'chexpert_sex_unknown', 'ixi_age_missing', 'ixi_images_without_sheet_row',
                         'biomarker_text_values', 'biomarker_impossible_values', 'biomarker_duplicated_subject'}
    sheet = pd.read_csv(root/'ixi'/'IXI.csv')
    assert sheet.AGE.isna().sum() == mess['ixi_age_missing']
    assert len(list((root/'ixi'/'IXI-T1').glob('*.nii.gz'))) == len(sheet) + mess['ixi_images_without_sheet_row']
    d = cohort.read_cohort(root)
    assert d['mri'].n_obs == len(sheet) - mess['ixi_age_missing']
    _, attrs, _ = _gtex(root)
    assert d['rna'].n_obs == len(attrs) - mess['gtex_samples_without_expression']
    assert sum(d['mri'].uns['dropped'].values()) == mess['ixi_age_missing'] + mess['ixi_images_without_sheet_row']
    clean = simulate_cohort(tmp_path/'c', subjects=200, n_genes=200, image_size=16, volume_size=16, seed=2)
    assert json.loads((clean/'simulation.json').read_text())['imperfections'] == {}
