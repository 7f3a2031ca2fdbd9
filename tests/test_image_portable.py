"""Image bundles (organage.model.image_portable): a trained VGG8 exported, loaded and applied to its own subjects stored and
batched several ways; the whole-body and site networks' round trip; files that cannot be read are listed; `organage predict`
on an image bundle."""
import json, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch

from organage.model.image_portable import (export_image_model, load_image_model, predict_image_model, vgg8_spec, wholebody_spec,
                                           site_spec, IMAGE_PREDICTION_COLUMNS)

BIN = Path(sys.executable).parent/'organage'
TOL = 1e-4   # years: float32 ages near 50 are spaced 4e-6 apart; a different batch may move the last bits, nothing more

@pytest.fixture(scope='module')
def brain(tmp_path_factory):
    "A tiny VGG8 trained 3 epochs on 30 simulated brains (16^3), its in-memory predictions and its bundle."
    from organage.data.wholebody import write_toy_cohort
    from organage.data.brain_channels import simulate_brain_channels_files, read_brain_channels, load_channel_volumes
    from organage.model.vgg8 import Seed002Settings, fit_channel_model, split_channel_subjects
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('brain')
    write_toy_cohort(d/'cohort', subjects=70, seed=0)
    bc = simulate_brain_channels_files(d/'cohort', size=16, subjects=30, seed=0)
    s = Seed002Settings(size=16, widths=(2, 4, 4, 8, 8), hidden=(8, 8), epochs=3, patience=3, batch_size=8, device='cpu')
    x, obs, _ = load_channel_volumes(read_brain_channels(bc), 'T1w', 16, s.fov_mm)
    sp = split_channel_subjects(obs, s)
    f = fit_channel_model(x, obs, sp, 'T1w', s, out_dir=d/'net')
    p = f.predictions
    b = export_image_model(f.model, vgg8_spec(s, 'T1w', f.fit.sigma), p[p.split == 'val'], d/'bundle',
                           train_rows=obs[(obs.subject_id.map(sp) == 'train').to_numpy()], test_rows=p[p.split == 'test'],
                           fit=dict(best_epoch=f.fit.best_epoch, epochs_run=f.fit.epochs_run, val_mae=round(f.fit.val_mae, 3)), simulated=True)
    return dict(dir=d, channels=bc, bundle=b, preds=p, x=x, obs=obs)

def _sheet_folder(folder:Path, sheet:pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True); sheet.to_csv(folder/'channels.csv', index=False); return folder

def test_bundle_reproduces_the_trained_network(brain):
    r = predict_image_model(brain['bundle'], brain['channels'])
    assert list(r.columns) == IMAGE_PREDICTION_COLUMNS and len(r) == 30
    j = r.merge(brain['preds'][['subject_id', 'mu']], on='subject_id', suffixes=('', '_memory'))
    diff = float((j.mu_raw - j.mu_memory).abs().max())
    print(f"export -> load -> predict vs the in-memory network: max |mu difference| {diff:.3g} years over {len(j)} subjects")
    assert len(j) == 30 and diff < TOL
    card = json.loads((brain['bundle']/'card.json').read_text())
    assert card['fit']['epochs_run'] >= 1 and card['validation'][0]['n'] == int((brain['preds'].split == 'val').sum())
    cal = json.loads((brain['bundle']/'calibration.json').read_text())   # `fit_calibration`'s, on the validation rows
    assert cal['n'] == card['validation'][0]['n'] and cal['fit_split'] == 'val'

def test_same_person_same_answer_however_stored_or_batched(brain):
    import nibabel as nib
    m, d, bc = load_image_model(brain['bundle']), brain['dir'], brain['channels']
    sheet = pd.read_csv(bc/'channels.csv', dtype=str).assign(path=lambda t: [str(bc/p) for p in t.path])
    ref = predict_image_model(m, bc, batch_size=16).set_index('subject_id').mu_raw
    runs = {'reversed rows, batch 1': predict_image_model(m, _sheet_folder(d/'rev', sheet.iloc[::-1]), batch_size=1),
            'shuffled rows, batch 7': predict_image_model(m, _sheet_folder(d/'shuf', sheet.sample(frac=1, random_state=3)), batch_size=7),
            'all in one batch': predict_image_model(m, bc, batch_size=64),
            'T1w only (no CBV rows)': predict_image_model(m, _sheet_folder(d/'t1only', sheet[sheet.channel == 'T1w']), batch_size=5)}
    one = [predict_image_model(m, _sheet_folder(d/f'one_{s}', g), batch_size=1) for s, g in sheet.groupby('subject_id')]
    runs['one subject at a time'] = pd.concat(one, ignore_index=True)
    # one subject's T1w stored in another orientation (axes flipped, the affine says so) and as float32
    sid = sheet.subject_id.iloc[0]; i = sheet.index[(sheet.subject_id == sid) & (sheet.channel == 'T1w')][0]
    img = nib.load(sheet.path[i]); a = np.asarray(img.dataobj, np.float32)
    flip = np.diag([-1.0, 1, 1, 1]); flip[0, 3] = a.shape[0] - 1
    re = nib.Nifti1Image(a[::-1].copy(), img.affine @ flip); re.set_qform(img.affine @ flip, code=4); re.set_sform(img.affine @ flip, code=4)
    nib.save(re, d/f'{sid}_T1w_LPS.nii.gz')
    stored = sheet.copy(); stored.loc[i, 'path'] = str(d/f'{sid}_T1w_LPS.nii.gz')
    oriented = predict_image_model(m, _sheet_folder(d/'oriented', stored)).set_index('subject_id').mu_raw
    worst = {}
    for name, r in runs.items():
        r = r.set_index('subject_id').mu_raw
        assert sorted(r.index) == sorted(ref.index), name
        worst[name] = float((r - ref.loc[r.index]).abs().max())
    others = oriented.drop(sid)
    worst['others, beside a re-oriented file'] = float((others - ref.loc[others.index]).abs().max())
    reoriented = abs(float(oriented[sid] - ref[sid]))
    print('max |mu difference| (years) against one call, batch 16:', worst, f'; the re-oriented subject itself: {reoriented:.3g}')
    assert max(worst.values()) < TOL
    assert reoriented < 0.05   # resampled through its affine instead of read as is: interpolation rounding only

def test_unreadable_files_are_listed_and_counted(brain):
    d, bc = brain['dir'], brain['channels']
    sheet = pd.read_csv(bc/'channels.csv', dtype=str).assign(path=lambda t: [str(bc/p) for p in t.path])
    t1 = sheet.index[sheet.channel == 'T1w']
    bad = d/'truncated.nii.gz'; bad.write_bytes(Path(sheet.path[t1[0]]).read_bytes()[:300])
    sheet.loc[t1[0], 'path'] = str(bad); sheet.loc[t1[1], 'path'] = str(d/'gone.nii.gz')
    r = predict_image_model(brain['bundle'], _sheet_folder(d/'broken', sheet), d/'out_broken')
    dr = pd.read_csv(d/'out_broken'/'dropped_files.csv', dtype=str)
    assert sorted(dr.path) == sorted([str(bad), str(d/'gone.nii.gz')]) and set(dr.stage) == {'read'}
    assert len(r) == 28 and not set(dr.subject_id) & set(r.subject_id)
    info = json.loads((d/'out_broken'/'predict.json').read_text())
    assert info['files_dropped'] == 2 and info['n_subjects'] == 28

def test_wholebody_and_site_networks_round_trip(tmp_path):
    from organage.data.wholebody import write_toy_cohort, simulate_wholebody_files, read_wholebody
    from organage.data.msk_sites import simulate_msk_sites_files, read_msk_sites
    from organage.model.wholebody import wholebody_settings, resnet18_3d, vgg_2d, wholebody_volumes, projections_25d
    from organage.model.sites import SiteSettings, site_network, site_arrays
    torch.set_num_threads(1); torch.manual_seed(0)
    write_toy_cohort(tmp_path/'c', subjects=150, seed=0)
    wb = simulate_wholebody_files(tmp_path/'c', shape=(16, 12, 24), n_subjects=24)
    s = wholebody_settings('quick', shape=(16, 12, 24), widen=0.125, hidden=8, vgg=(4, 'M', 8, 'M'))
    a = read_wholebody(wb); x = wholebody_volumes(a, s.shape); got = {}
    for name, net, xx in (('resnet18_3d', resnet18_3d(s.widen, s.hidden, 62.0, 9.0), x), ('cnn_25d', vgg_2d(2, s.vgg, 16, 62.0, 9.0), projections_25d(x))):
        with torch.no_grad(): mu = net.eval()(torch.as_tensor(xx)).numpy()   # untrained: the round trip is what is tested
        rows = a.obs[['subject_id', 'age', 'sex']].reset_index(drop=True).assign(mu=mu, sigma=5.0)
        b = export_image_model(net, wholebody_spec(s, name, 5.0), rows, tmp_path/name, train_rows=rows)
        r1 = predict_image_model(b, wb, batch_size=1).set_index('subject_id')
        r7 = predict_image_model(b, wb, batch_size=7).set_index('subject_id')
        mem = rows.set_index('subject_id').mu.loc[r1.index]
        assert len(r1) == 24 and float((r1.mu_raw - mem).abs().max()) < TOL and float((r7.mu_raw - r1.mu_raw).abs().max()) < TOL, name
        got[name] = r1
    sh = pd.read_csv(wb/'wholebody.csv', dtype=str); sid = sh.subject_id.iloc[3]; sh.loc[3, 'age'] = ''; sh.to_csv(wb/'wholebody.csv', index=False)
    r = predict_image_model(tmp_path/'resnet18_3d', wb).set_index('subject_id')   # a person without a recorded age is predicted, flagged
    assert len(r) == 24 and bool(r.no_age[sid]) and int(r.no_age.sum()) == 1 and abs(r.mu_raw[sid] - got['resnet18_3d'].mu_raw[sid]) < TOL
    Path(a.obs.path.iloc[0]).unlink()   # a volume gone: named in the dropped list, the rest predicted
    r = predict_image_model(tmp_path/'resnet18_3d', wb, tmp_path/'wb_out')
    dr = pd.read_csv(tmp_path/'wb_out'/'dropped_files.csv', dtype=str)
    assert len(r) == 23 and list(dr.path) == [a.obs.path.iloc[0]] and dr.subject_id.iloc[0] == a.obs.subject_id.iloc[0]
    ms = simulate_msk_sites_files(tmp_path/'c', size=16, fraction=0.3, full_body=False)
    ss = SiteSettings(size=16, width=4, depth=1, stem=2, grid=2, shift=1, center=True)
    am = read_msk_sites(ms); xk, ok = site_arrays(am, 16, sites=['knee'])['knee']
    net = site_network(ss, 50.0, 10.0, xk.mean(0, keepdims=True), 0.3).eval()
    with torch.no_grad(): mu = net(torch.as_tensor(xk)).numpy()[:, 0]
    per = ok[['subject_id', 'age']].assign(mu=mu, sigma=4.0).groupby('subject_id', as_index=False).agg(age=('age', 'mean'), mu=('mu', 'mean'), sigma=('sigma', 'first'))
    b = export_image_model(net, site_spec(ss, 'knee', 4.0), per, tmp_path/'knee', train_rows=ok)
    r = predict_image_model(b, ms, batch_size=3)
    assert set(r.modality) == {'xray'} and set(r.organ) == {'muscle'}
    assert float(np.abs(r.set_index('subject_id').mu_raw - per.set_index('subject_id').mu).max()) < TOL
    csv = ms/'MSK-v1.0'/'train.csv'; tab = pd.read_csv(csv, dtype=str)
    k = int(np.flatnonzero(tab.Site == 'knee')[0]); tab.loc[k, 'Age'] = ''; tab.to_csv(csv, index=False)
    r = predict_image_model(b, ms)
    assert len(r) == len(per) and int(r.no_age.sum()) == 1   # the image without an age is predicted, flagged
    Path(ok.path.iloc[0]).unlink()
    r = predict_image_model(b, ms, tmp_path/'knee_out')
    dr = pd.read_csv(tmp_path/'knee_out'/'dropped_files.csv', dtype=str)
    assert list(dr.path) == [ok.path.iloc[0]] and dr.stage.iloc[0] == 'decode' and len(r) == len(per) - 1 + int(ok.subject_id.iloc[0] in set(ok.subject_id.iloc[1:]))

def test_cli_predict_reads_an_image_bundle(brain, tmp_path):
    out = tmp_path/'cli_out'
    p = subprocess.run([str(BIN), 'predict', '--model', str(brain['bundle']), '--data', str(brain['channels']), '--out', str(out),
                        '--batch-size', '4', '--device', 'cpu'], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert '30 organ predictions of 30 subjects' in p.stdout
    got = pd.read_csv(out/'predictions.csv', dtype={'subject_id': str}).set_index('subject_id')
    want = predict_image_model(brain['bundle'], brain['channels']).set_index('subject_id')
    assert float((got.mu_raw - want.mu_raw.loc[got.index]).abs().max()) < TOL
    bad = subprocess.run([str(BIN), 'predict', '--model', str(brain['bundle']), '--data', str(brain['channels']), '--out', str(tmp_path/'x'),
                          '--modalities', 'mri'], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and 'main model only' in bad.stderr and 'Traceback' not in bad.stderr

def test_ixi_folder_is_read_by_a_vgg8_bundle(tmp_path):
    "An IXI-layout folder (IXI.csv + IXI-T1/, channels on other grids and orientations) through the same recipe as in memory."
    from organage.data.brain_channels import write_ixi_channels, read_brain_channels, load_channel_volumes
    from organage.model.vgg8 import Seed002Settings
    from organage.model.image_portable import build_network
    torch.manual_seed(0)
    ixi = write_ixi_channels(tmp_path/'ixi', n=10, size=16, seed=2)
    s = Seed002Settings(size=16, widths=(2, 2, 4, 4, 4), hidden=(4, 4))
    spec = vgg8_spec(s, 'T2', 4.0)   # T2 is stored RAS with 12 slices: resampled onto the 16^3 grid centred on the T1 (the reference)
    net = build_network(spec['arch']).eval(); net.age_mean.fill_(50.0)
    x, obs, _ = load_channel_volumes(read_brain_channels(ixi), 'T2', 16, s.fov_mm)
    with torch.no_grad(): mu = net(torch.as_tensor(x)).numpy()
    rows = obs[['subject_id', 'age', 'sex']].reset_index(drop=True).assign(mu=mu, sigma=4.0)
    b = export_image_model(net, spec, rows, tmp_path/'b', train_rows=rows)
    r = predict_image_model(b, ixi, batch_size=3).set_index('subject_id')
    assert len(r) == 10 and float((r.mu_raw - rows.set_index('subject_id').mu.loc[r.index]).abs().max()) < TOL
    assert set(r.modality) == {'mri_T2'} and r.age.notna().all()
