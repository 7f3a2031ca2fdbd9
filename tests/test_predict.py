"""A trained run as a portable model, and `predict` on subjects it never saw (issue 13): external cohort, batch and
storage independence, subjects without age, broken files, missing genes, refusals, no pickle in the bundle."""
import json, shutil
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import nibabel as nib
from numpy.testing import assert_allclose

from organage.core import load_config, ConfigError, DataError
from organage.data.synth import simulate_cohort
from organage.data.cohort import read_cohort
from organage.model.predict import open_run, predict_dataset
from organage.model.weights import load_model
from organage.model.portable import export_model, load_portable, predict, FORMAT
from organage.cli import main

SIM = dict(n_genes=200, image_size=32, volume_size=16)
WORLD = 5   # cohorts A and B: one world (genes, age programmes, batches), other people
CFG = dict(epochs=3, image_size=32, volume_size=16, n_genes=200, device='cpu', batch_size=32)   # tiny: seconds per epoch


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    """A tiny aligned model trained on cohort A (world 5, seed 0), exported; cohort B: other people of the same world (seed 1);
    cohort C: GTEx donors of another world (world_seed None: its genes come from its own seed)."""
    d = tmp_path_factory.mktemp('port')
    simulate_cohort(d/'A', subjects=300, seed=0, world_seed=WORLD, **SIM)
    simulate_cohort(d/'B', subjects=120, seed=1, world_seed=WORLD, **SIM)
    simulate_cohort(d/'C', subjects=30, seed=1, paired_fraction=0, cohort_shares=(1, 0, 0), **SIM)
    sets = [a for k, v in CFG.items() if k != 'device' for a in ('--set', f'{k}={v}')]
    # ComBat over the GTEx batches, fitted on training; `organage train` ends by writing RUN/model
    assert main(['train', '--data', str(d/'A'), '--run', str(d/'run'), '--stages', 'aligned', '--device', 'cpu', *sets]) == 0
    assert main(['export', '--run', str(d/'run'), '--out', str(d/'model')]) == 0
    return d


@pytest.fixture(scope='module')
def pm(bundle): return load_portable(bundle/'model')


def _subset(adatas, subjects):
    s = set(subjects)
    return {m: a[a.obs.subject_id.astype(str).isin(s).to_numpy()].copy() for m, a in adatas.items()
            if a.obs.subject_id.astype(str).isin(s).any()}


def test_bundle_is_data_only(bundle, pm):
    "Every file opens with json, np.load(allow_pickle=False) or safetensors; the card says what the model is."
    from safetensors.numpy import load_file
    files = sorted(p for p in (bundle/'model').rglob('*') if p.is_file())
    assert {p.name for p in files} >= {'bundle.json', 'model.safetensors', 'model.json', 'calibration.json', 'card.json', 'MODEL_CARD.md',
                                       'pixel_stats.npz', 'expression.json', 'expression.npz'}
    for p in files:
        if p.suffix == '.json': json.loads(p.read_text(), parse_constant=lambda c: pytest.fail(f'{p}: {c} is not strict JSON'))
        elif p.suffix == '.npz':
            with np.load(p, allow_pickle=False) as z: [z[k] for k in z.files]
        elif p.suffix == '.safetensors': load_file(str(p))
        elif p.suffix == '.md': assert 'simulated cohort' in p.read_text()
        else: pytest.fail(f'unexpected file in the bundle: {p}')
    meta = json.loads((bundle/'model'/'bundle.json').read_text())
    assert meta['format'] == FORMAT and meta['stage'] == 'aligned' and set(meta['versions']) == {'organage', 'torch', 'numpy'}
    assert meta['geometry'] == dict(image_size=32, volume_size=16, mri_fov_mm=210.0, mri_register=False, chain='organage.data.preprocess.image_transforms')
    card = pm.card
    assert card['training']['n_subjects'] > 100 and card['simulated']
    assert {'n_female', 'n_male', 'age_min', 'age_max'} <= set(card['training']['by_modality_organ'][0])
    assert {r['organ'] for r in card['validation']} == set(pm.organs)


def test_train_writes_the_same_bundle_and_evaluate_ignores_it(bundle):
    "RUN/model (written by organage train) equals organage export's folder; organage evaluate does not take it for a stage."
    for f in ('calibration.json', 'card.json', 'model.json', 'pixel_stats.npz', 'model.safetensors', 'expression/expression.npz'):
        assert (bundle/'run'/'model'/f).read_bytes() == (bundle/'model'/f).read_bytes() or f == 'card.json', f
    from organage.evaluate.tables import evaluate_run
    evaluate_run(bundle/'run', device='cpu')
    assert set(pd.read_csv(bundle/'run'/'predictions_by_model.csv').model) == {'aligned'}


def test_refuses_other_format_and_version(bundle, tmp_path):
    for key, value, msg in (('format', FORMAT + 1, f'version {FORMAT + 1}'), ('versions', {'organage': '7.0.0'}, 'organage 7.0.0')):
        m = tmp_path/key; shutil.copytree(bundle/'model', m)
        meta = json.loads((m/'bundle.json').read_text()); meta[key] = value
        (m/'bundle.json').write_text(json.dumps(meta))
        with pytest.raises(ConfigError, match=msg): load_portable(m)


def test_own_test_subjects_reproduce_the_run(bundle, pm):
    "Nothing is refitted: the run's test subjects through the bundle get exactly the run's own predictions."
    cfg, tcfg, data = open_run(bundle/'run', device='cpu')
    ref = predict_dataset(load_model(bundle/'run'/'aligned'), data.ds['test'])
    test = data.splits.subject_id[data.splits.split == 'test']
    got = predict(pm, _subset(read_cohort(bundle/'A'), test))
    m = ref.merge(got, on=['subject_id', 'organ'], suffixes=('_run', ''))
    assert len(m) == len(ref) == len(got)
    assert_allclose(m.mu_raw, m.mu_run, rtol=1e-5); assert_allclose(m.sigma_raw, m.sigma_run, rtol=1e-5)
    assert (m.genes_imputed_share.dropna() == 0).all()
    assert set(m.batch_adjusted[m.organ_modalities.str.contains('rna')]) == {'yes'}   # training batches: ComBat's training reference


def test_external_cohort_mae(bundle, pm):
    "Cohort B (same world, other people), every modality with RNA: no gene missing, MAE against B's truth near the run's own test MAE."
    res = predict(pm, bundle/'B', out=bundle/'predB')
    assert set(res.subject_id) & set(pd.read_csv(bundle/'A'/'subjects.csv').subject_id) == set()   # no id shared with the training cohort
    rna = res[res.organ_modalities.str.contains('rna')]
    assert len(rna) > 20 and (rna.genes_imputed_share.dropna() == 0).all() and rna.genes_imputed_share.notna().any()
    truth = pd.read_csv(bundle/'B'/'truth.csv', dtype={'subject_id': str})
    m = res.merge(truth[['subject_id', 'organ', 'age']], on=['subject_id', 'organ'], suffixes=('', '_truth'))
    assert len(m) == len(res) and len(res) > 50 and set(m.organ) == set(pm.organs)
    assert np.abs(m.age - m.age_truth).max() < 10   # file ages (per study; GTEx: the decade's midpoint) near the truth's age
    own = {r['organ']: r['mae'] for r in pm.card['test']}
    maes = {o: float(np.mean(np.abs(g.mu_raw - g.age_truth))) for o, g in m.groupby('organ')}
    print('external MAE vs own test MAE:', {o: (round(maes[o], 2), round(own[o], 2)) for o in maes})
    for organ, mae in maes.items(): assert np.isfinite(mae) and mae < 1.5 * own[organ] + 2, (organ, mae, own[organ])
    for f in ('predictions.csv', 'predictions.h5ad', 'dropped_files.csv', 'predict.json'): assert (bundle/'predB'/f).is_file()


def test_another_world_is_refused(bundle, pm):
    "Cohort C is another simulated world: none of its genes are the model's, refused with the way out."
    with pytest.raises(DataError, match="too many of the model's genes.*modalities="):
        predict(pm, bundle/'C')


def test_together_and_one_at_a_time(bundle, pm):
    "A subject's answer does not depend on who else is predicted with it (expression and images)."
    cfg, tcfg, data = open_run(bundle/'run', device='cpu')
    test = sorted(data.splits.subject_id[data.splits.split == 'test'])[:6]
    ads = _subset(read_cohort(bundle/'A'), test)
    together = predict(pm, ads, batch_size=4)
    alone = pd.concat([predict(pm, _subset(ads, [s]), batch_size=1) for s in test], ignore_index=True)
    assert together[['subject_id', 'organ']].values.tolist() == alone[['subject_id', 'organ']].values.tolist()
    num = ['mu_raw', 'sigma_raw', 'mu', 'sigma', 'gap', 'z', 'lo95', 'hi95', 'genes_imputed_share']
    # float32 matrix products take other code paths at another batch size: ages agree to ~1e-6 relative
    # (~5e-5 years), so a gap near zero needs an absolute tolerance, here 2e-4 years (a minute of a year is 2e-6)
    assert_allclose(alone[num].to_numpy(float), together[num].to_numpy(float), rtol=1e-5, atol=2e-4)


def test_orientation_does_not_matter(bundle, pm, tmp_path):
    "The same brain stored RAS and LAS (nibabel as_reoriented) gets the same prediction."
    mri = read_cohort(bundle/'B', ['mri'])['mri']
    row = mri.obs.iloc[0]
    img = nib.as_closest_canonical(nib.load(row['path']))   # RAS
    ras, las = tmp_path/'ras.nii.gz', tmp_path/'las.nii.gz'
    nib.save(img, ras)
    nib.save(img.as_reoriented(np.array([[0, -1], [1, 1], [2, 1]])), las)
    assert ''.join(nib.aff2axcodes(nib.load(las).affine)) == 'LAS'
    assert not np.allclose(np.asarray(nib.load(las).dataobj), np.asarray(img.dataobj))   # stored mirrored
    a = mri[:2].copy(); a.obs['subject_id'] = ['ras', 'las']; a.obs['path'] = [str(ras), str(las)]; a.obs['age'] = row['age']
    r = predict(pm, {'mri': a}).set_index('subject_id')
    assert_allclose(r.loc['las', ['mu_raw', 'sigma_raw']].to_numpy(float), r.loc['ras', ['mu_raw', 'sigma_raw']].to_numpy(float), rtol=1e-5)


def test_subjects_without_age(bundle, pm):
    ads = read_cohort(bundle/'B', ['xray', 'mri'])
    ids = sorted(set(ads['xray'].obs.subject_id.astype(str)))[:5]
    ads = _subset(ads, ids + sorted(set(ads['mri'].obs.subject_id.astype(str)))[:5])
    ref = predict(pm, ads)
    for a in ads.values(): a.obs.loc[a.obs.subject_id.astype(str).isin(ids[:3]), 'age'] = np.nan
    r = predict(pm, ads)
    no = r.subject_id.isin(ids[:3])
    assert r.no_age.tolist() == no.tolist()
    # the default (residual) bias correction is a function of chronological age: without it, the raw age and sigma only
    assert r.loc[no, ['gap', 'z', 'gap_lo', 'gap_hi', 'mu', 'lo95', 'hi95']].isna().all().all() and r.loc[no, ['mu_raw', 'sigma_raw']].notna().all().all()
    assert_allclose(r.mu_raw.to_numpy(float), ref.mu_raw.to_numpy(float), rtol=1e-6)   # the age never enters the network
    assert_allclose(r.loc[~no, 'mu'].to_numpy(float), ref.loc[~no, 'mu'].to_numpy(float), rtol=1e-6)
    assert r.loc[~no, 'gap'].notna().all()


def test_folder_rows_without_age_are_predicted(bundle, pm, tmp_path):
    "A CheXpert CSV, an IXI sheet and GTEx phenotypes with blank ages: those images and samples are predicted, flagged no_age."
    for part in ('chexpert', 'ixi', 'gtex'): shutil.copytree(bundle/'B'/part, tmp_path/'c'/part)
    links = pd.read_csv(bundle/'B'/'subject_links.csv')
    only_gtex = links[links.gtex_id.notna() & links.chexpert_id.isna() & links.ixi_id.isna()].sort_values('gtex_id')
    pheno = next((tmp_path/'c'/'gtex').glob('*SubjectPhenotypesDS.txt')); ph = pd.read_csv(pheno, sep='\t')
    ph.loc[ph.SUBJID.isin(only_gtex.gtex_id[:2]), 'AGE'] = np.nan; ph.to_csv(pheno, sep='\t', index=False)
    blank_g = only_gtex.gtex_id[:2].tolist()   # no subject_links.csv in the copy: native ids
    csv = next((tmp_path/'c'/'chexpert').glob('*/train.csv'))
    t = pd.read_csv(csv); blank_x = sorted(set(t.Path.str.extract(r'(patient\d+)')[0]))[:3]
    t.loc[t.Path.str.extract(r'(patient\d+)')[0].isin(blank_x), 'Age'] = np.nan; t.to_csv(csv, index=False)
    sheet = tmp_path/'c'/'ixi'/'IXI.csv'; x = pd.read_csv(sheet); x.loc[:2, 'AGE'] = np.nan; x.to_csv(sheet, index=False)
    blank_m = [f'IXI{int(i):03d}' for i in x.IXI_ID[:3]]
    r = predict(pm, tmp_path/'c')
    no = r.subject_id.isin(blank_x + blank_m + blank_g)
    assert no.sum() >= 6 and r.no_age.tolist() == no.tolist() and r.loc[~no, 'gap'].notna().all()
    assert r.loc[no, ['gap', 'z', 'mu']].isna().all().all() and r.loc[no, 'mu_raw'].notna().all()
    g = r[r.subject_id.isin(blank_g)]
    assert len(g) >= 2 and g.organ_modalities.str.contains('rna').all() and g.no_age.all()   # GTEx donors without an age: predicted from RNA


def test_broken_files_are_listed_not_fatal(bundle, pm, tmp_path):
    "A truncated JPEG and a NaN-filled volume: the good subjects are predicted, the bad files named."
    ads = read_cohort(bundle/'B', ['xray', 'mri'])
    xs = sorted(set(ads['xray'].obs.subject_id.astype(str)) - set(ads['mri'].obs.subject_id.astype(str)))[:3]
    ms = sorted(set(ads['mri'].obs.subject_id.astype(str)) - set(ads['xray'].obs.subject_id.astype(str)))[:3]
    ads = _subset(ads, xs + ms)
    x = ads['xray']; first = np.flatnonzero(x.obs.subject_id.astype(str) == xs[0])
    bad_jpg = tmp_path/'truncated.jpg'; raw = Path(x.obs.path.iloc[first[0]]).read_bytes(); bad_jpg.write_bytes(raw[:len(raw) // 3])
    x.obs.loc[x.obs.index[first], 'path'] = str(bad_jpg)
    v = ads['mri']; j = int(np.flatnonzero(v.obs.subject_id.astype(str) == ms[0])[0])
    img = nib.load(v.obs.path.iloc[j]); bad_nii = tmp_path/'nan.nii.gz'
    nib.save(nib.Nifti1Image(np.full(img.shape, np.nan, np.float32), img.affine), bad_nii)
    v.obs.loc[v.obs.index[j], 'path'] = str(bad_nii)
    r = predict(pm, ads, out=tmp_path/'out')
    assert set(r.subject_id) == set(xs[1:] + ms[1:])
    dropped = pd.read_csv(tmp_path/'out'/'dropped_files.csv')
    assert sorted(Path(p).name for p in dropped.path) == sorted(['nan.nii.gz'] + ['truncated.jpg'] * len(first))
    assert dropped.error.str.contains('non-finite').any() and dropped.error.str.contains('cannot be decoded').any()


def test_missing_genes_and_versions(bundle, pm):
    "Genes stored without versions match; removed genes are imputed from the training reference and counted per row."
    cfg, tcfg, data = open_run(bundle/'run', device='cpu')
    test = sorted(data.splits.subject_id[data.splits.split == 'test'])[:8]
    rna = _subset(read_cohort(bundle/'A', ['rna']), test)['rna']
    ref = predict(pm, {'rna': rna})
    plain = rna.copy(); plain.var_names = [g.split('.')[0] for g in rna.var_names]
    assert_allclose(predict(pm, {'rna': plain}).mu_raw, ref.mu_raw, rtol=1e-6)
    model_genes = {g.split('.')[0] for g in pm.expression.genes_out_}
    drop = sorted(model_genes)[:20]
    fewer = plain[:, [g not in drop for g in plain.var_names]].copy()
    r = predict(pm, {'rna': fewer})
    assert_allclose(r.genes_imputed_share, 20 / len(model_genes))
    assert np.isfinite(r.mu_raw).all()
    with pytest.raises(DataError, match='too many'): predict(pm, {'rna': fewer}, max_imputed_share=0.05)
    new_batch = rna.copy(); new_batch.obs['batch'] = 'a-batch-never-seen'
    r = predict(pm, {'rna': new_batch})
    assert set(r.batch_adjusted) == {'no'} and np.isfinite(r.mu_raw).all()   # flagged, left unadjusted, still predicted


def test_cli_predict_and_report(bundle, capsys):
    out = bundle/'cli_out'
    assert main(['predict', '--model', str(bundle/'model'), '--data', str(bundle/'B'), '--out', str(out), '--modalities', 'xray', 'mri']) == 0
    assert 'organ predictions of' in capsys.readouterr().out
    p = pd.read_csv(out/'predictions.csv', dtype={'subject_id': str})
    import anndata as ad
    h = ad.read_h5ad(out/'predictions.h5ad')
    assert h.n_obs == len(p) and {'mu', 'gap', 'z', 'lo95', 'hi95', 'no_age', 'modality_missing'} <= set(h.obs.columns)
    assert main(['report', p.subject_id.iloc[0], '--run', str(out), '--out', str(out/'subjects')]) == 0
    assert (out/'subjects'/f'{p.subject_id.iloc[0]}.png').is_file()


class _Page(__import__('html.parser').parser.HTMLParser):
    "The title, the h1 and the table cells of a subject page, as a browser would read them (entities decoded)."
    def __init__(self):
        super().__init__(); self.title, self.h1, self.rows, self._in, self._row = '', '', [], None, None
    def handle_starttag(self, tag, attrs):
        if tag in ('title', 'h1'): self._in = tag
        elif tag == 'tr': self._row = []
        elif tag in ('td', 'th') and self._row is not None: self._in = 'cell'; self._row.append('')
    def handle_endtag(self, tag):
        if tag == 'tr' and self._row is not None: self.rows.append(self._row); self._row = None
        if tag in ('title', 'h1', 'td', 'th'): self._in = None
    def handle_data(self, d):
        if self._in == 'title': self.title += d
        elif self._in == 'h1': self.h1 += d
        elif self._in == 'cell': self._row[-1] += d


def test_cli_evaluate_then_report_page_parsed(bundle, tmp_path, capsys):
    "`organage evaluate` on the trained run writes its predictions; `organage report` of a subject whose id holds HTML characters writes a page that shows the id as text, one table row per predicted organ."
    run = tmp_path/'run'; shutil.copytree(bundle/'run', run)
    for f in ('predictions.csv', 'predictions_by_model.csv'): (run/f).unlink(missing_ok=True)
    assert main(['evaluate', '--run', str(run), '--device', 'cpu']) == 0
    p = pd.read_csv(run/'predictions.csv', dtype={'subject_id': str})
    assert set(p.split) >= {'val', 'test'} and p.mu.notna().all() and not p.duplicated(['subject_id', 'organ', 'modality']).any()
    sid = p[p.split == 'test'].subject_id.value_counts().index[0]
    odd = f"{sid}<b>&'x"
    for f in ('predictions.csv', 'splits.csv'):
        t = pd.read_csv(run/f, dtype={'subject_id': str}); t.loc[t.subject_id == sid, 'subject_id'] = odd; t.to_csv(run/f, index=False)
    assert main(['report', odd, '--run', str(run), '--out', str(tmp_path/'s')]) == 0
    page = next((tmp_path/'s').glob('*.html')).read_text()
    assert '<b>' not in page and '&lt;b&gt;' in page                     # escaped, never markup
    pg = _Page(); pg.feed(page)
    assert pg.title == f'organage: {odd}' and pg.h1 == f'Organ-age profile: {odd}'
    header, body = pg.rows[0], pg.rows[1:]
    assert header[:2] == ['organ', 'age (y)']
    mine = p[p.subject_id == sid]
    assert sorted(r[0] for r in body) == sorted(mine.organ.unique()) and len(body) == mine.organ.nunique()
    shown = {r[0]: float(r[header.index('predicted (y)')]) for r in body}
    csv = pd.read_csv(next((tmp_path/'s').glob('*.csv'))).set_index('organ')
    assert all(abs(shown[o] - round(csv.loc[o, 'mu'], 2)) < 1e-9 for o in shown)


def test_report_of_a_subject_without_age(bundle, pm, tmp_path):
    "A predicted subject without a chronological age: the page gives the uncorrected organ ages (the residual correction needs the age), no 'nan'."
    ads = read_cohort(bundle/'B', ['xray'])
    ids = sorted(set(ads['xray'].obs.subject_id.astype(str)))[:3]
    ads = _subset(ads, ids)
    for a in ads.values(): a.obs.loc[a.obs.subject_id.astype(str) == ids[0], 'age'] = np.nan
    predict(pm, ads, out=tmp_path/'o')
    assert main(['report', ids[0], '--run', str(tmp_path/'o'), '--out', str(tmp_path/'s')]) == 0
    md = (tmp_path/'s'/f'{ids[0]}.md').read_text()
    assert 'chronological age not given' in md and 'uncorrected (y)' in md and 'nan years' not in md


@pytest.fixture(scope='module')
def blended(bundle):
    "The same cohort trained with the baselines stage: the bundle ships the network blended with the elastic net."
    sets = [a for k, v in CFG.items() if k != 'device' for a in ('--set', f'{k}={v}')]
    assert main(['train', '--data', str(bundle/'A'), '--run', str(bundle/'runb'), '--stages', 'aligned', 'baselines', '--device', 'cpu', *sets]) == 0
    return bundle/'runb'


def test_blended_bundle_reproduces_both_parts_of_the_run(blended):
    """The shipped answer is w * network + (1 - w) * baselines, each part exactly what the run's own stages answer for its
    test subjects (the network through predict_dataset; the baselines' stacked late fusion in baselines/predictions.csv)."""
    pm = load_portable(blended/'model')
    assert {'linear', 'blend'} <= set(pm.meta['files']) and pm.meta['format'] == FORMAT
    assert pm.blend['baseline_refit_max_abs_diff'] < 1e-3
    assert set(pm.blend['baselines']) == {'enet_rna', 'pcr_xray', 'pcr_mri'}
    organs = pm.blend['organs']
    assert all(0 <= v['w_network'] <= 1 for v in organs.values())
    with np.load(blended/'model'/'linear.npz', allow_pickle=False) as z:
        assert z['pcr_mri.coef'].shape == (len(z['pcr_mri.organs']), int(z['pcr_mri.n_features']))
    cfg, tcfg, data = open_run(blended, device='cpu')
    test = data.splits.subject_id[data.splits.split == 'test']
    got = predict(pm, _subset(read_cohort(blended.parent/'A'), test))
    net = predict_dataset(load_model(blended/'aligned'), data.ds['test'])
    stage = pd.read_csv(blended/'baselines'/'predictions.csv', dtype={'subject_id': str})
    stage = stage[(stage.model == 'stacked') & (stage.split == 'test')]
    m = got.merge(net[['subject_id', 'organ', 'mu']], on=['subject_id', 'organ'], suffixes=('', '_run'))
    assert len(m) == len(got) == len(net)
    assert_allclose(m.mu_network, m.mu_run, rtol=1e-5)
    e = m.merge(stage[['subject_id', 'organ', 'mu']], on=['subject_id', 'organ'], suffixes=('', '_stage'))
    assert len(e) == int(m.mu_enet.notna().sum()) == len(stage) > 20   # every row a baseline reads has the stage's answer
    assert_allclose(e.mu_enet, e.mu_stage, atol=1e-3)                    # images too: PCA + ridge shipped as weights
    w = m.organ.map({o: v['w_network'] for o, v in organs.items()}).where(m.mu_enet.notna(), 1.0).to_numpy(float)
    assert_allclose(m.w_network, w)
    assert_allclose(m.mu_raw, np.where(m.mu_enet.notna(), w * m.mu_network + (1 - w) * m.mu_enet.fillna(0), m.mu_network), rtol=1e-9)
    assert (m.w_network < 1).any()   # the baselines are used somewhere, else this test shows nothing
    card = json.loads((blended/'model'/'card.json').read_text())
    assert {r['organ'] for r in card['blend']} == set(organs) and 'blended per organ' in (blended/'model'/'MODEL_CARD.md').read_text()


def test_blended_answer_does_not_depend_on_batching(blended):
    "One subject at a time or all together: the same blended ages (the elastic net averages a subject's own samples only)."
    pm = load_portable(blended/'model')
    cfg, tcfg, data = open_run(blended, device='cpu')
    test = sorted(data.splits.subject_id[data.splits.split == 'test'])[:8]
    ads = _subset(read_cohort(blended.parent/'A'), test)
    together = predict(pm, ads, batch_size=4)
    alone = pd.concat([predict(pm, _subset(ads, [s]), batch_size=1) for s in test], ignore_index=True)
    num = ['mu_raw', 'mu_network', 'mu_enet', 'w_network', 'mu', 'lo95', 'hi95']
    assert_allclose(alone[num].to_numpy(float), together[num].to_numpy(float), rtol=1e-5, atol=2e-4)


def test_table1_shipped_row_is_what_predict_answers(blended):
    "Table 1's `shipped` rows (computed by evaluate from the run's own rows) are the portable model's answers for the same subjects."
    from organage.evaluate.tables import evaluate_run
    evaluate_run(blended, device='cpu')
    allp = pd.read_csv(blended/'predictions_by_model.csv', dtype={'subject_id': str})
    shipped = allp[(allp.model == 'shipped') & (allp.split == 'test')]
    t1 = pd.read_csv(blended/'tables'/'table1.csv')
    assert 'shipped' in set(t1.model) and len(shipped) > 20
    pm = load_portable(blended/'model')
    cfg, tcfg, data = open_run(blended, device='cpu')
    got = predict(pm, _subset(read_cohort(blended.parent/'A'), data.splits.subject_id[data.splits.split == 'test']))
    m = shipped.merge(got, on=['subject_id', 'organ'], suffixes=('_table', ''))
    assert len(m) == len(shipped) == len(got)
    assert_allclose(m.mu_table, m.mu_raw, rtol=1e-5)
