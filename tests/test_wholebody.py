"""Whole-body MRI (seed 003): the loader's errors, the simulator's regions really age, registration recovers a known
transform, warping conserves Grad-CAM mass, gradient accumulation is one big batch, and a ResNet-18 trained on the
simulator puts its Grad-CAM where the body ages (scored against chance)."""
import shutil
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from scipy import stats
from organage.core import DataError
from organage.data.wholebody import (write_toy_cohort, simulate_wholebody_files, read_wholebody, load_wholebody_arrays,
                                     render_body, wholebody_affine, AGING_LABELS, check_wholebody)

SHAPE = (32, 24, 48)

@pytest.fixture(scope='module')
def wb(tmp_path_factory):
    d = tmp_path_factory.mktemp('wb')
    return simulate_wholebody_files(write_toy_cohort(d/'cohort', 600, seed=5), seed=1, shape=SHAPE, n_subjects=180)

@pytest.fixture(scope='module')
def data(wb):
    a = read_wholebody(wb)
    return a, load_wholebody_arrays(a), load_wholebody_arrays(a, labels=True), pd.read_csv(wb/'wholebody_params.csv', dtype={'subject_id': str}).set_index('subject_id')

# ---- loader ----
def test_loader_names_counts_and_skips_bad_files(wb, tmp_path):
    d = tmp_path/'wb'; shutil.copytree(wb, d)
    s = pd.read_csv(d/'wholebody.csv', dtype=str)
    (d/s.path[0]).write_bytes(b'not a nifti at all')
    (d/s.path[1]).unlink()
    s.loc[2, 'age'] = 'old'
    s.to_csv(d/'wholebody.csv', index=False)
    a = read_wholebody(d)
    assert a.n_obs == len(s) - 3
    assert a.uns['dropped'] == {'missing_age': 1, 'missing_file': 1, 'unreadable_nifti': 1}
    msgs = ' '.join(a.uns['problems'])
    assert Path(s.path[0]).name in msgs and Path(s.path[1]).name in msgs and 'row 4' in msgs
    assert a.uns['dropped_files']['reason'] == ['unreadable_nifti']
    assert check_wholebody(d)['n_subjects'] == a.n_obs
    s.loc[5, 'subject_id'] = s.subject_id[6]; s.to_csv(d/'wholebody.csv', index=False)
    with pytest.raises(DataError, match='several rows'): read_wholebody(d)
    s.drop(columns=['sex']).to_csv(d/'wholebody.csv', index=False)
    with pytest.raises(DataError, match=r'lacks column\(s\) sex'): read_wholebody(d)

def test_reads_any_orientation_through_the_affine(wb, tmp_path):
    import nibabel as nib
    a = read_wholebody(wb)
    p = a.obs.path.iloc[0]
    img = nib.load(p)
    ras = nib.as_closest_canonical(img)
    flipped = nib.Nifti1Image(np.asarray(ras.dataobj)[::-1].copy(), ras.affine @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    nib.save(flipped, tmp_path/'f.nii.gz')
    from organage.data.wholebody import load_wholebody
    np.testing.assert_allclose(load_wholebody(tmp_path/'f.nii.gz'), load_wholebody(p))
    # another voxel size: resampled onto the requested grid, same body
    half = nib.Nifti1Image(np.asarray(ras.dataobj)[::2, ::2, ::2].astype(np.float32), ras.affine @ np.diag([2, 2, 2, 1]))
    nib.save(half, tmp_path/'h.nii.gz')
    r = np.corrcoef(load_wholebody(tmp_path/'h.nii.gz', SHAPE).ravel(), load_wholebody(p).ravel())[0, 1]
    assert r > 0.8

# ---- the simulator's regions age, the rest does not ----
def test_regions_age_with_their_organ(data):
    a, x, lab, par = data
    p = par.loc[a.obs.subject_id]
    def mean_in(label): return np.array([v[l == label].mean() for v, l in zip(x, lab)])   # raw intensities (bias field +-8%)
    def count(label): return (lab == label).sum((1, 2, 3))
    r = lambda u, v: stats.pearsonr(u, v)[0]
    assert r(count(6), p.m_kidney) < -0.4                 # kidneys shrink
    assert r(mean_in(5), p.m_liver) < -0.6                # liver fat
    assert r(mean_in(3), p.m_muscle) < -0.6               # back muscles: thinning and fat infiltration
    assert r(mean_in(2), p.m_muscle) < -0.3               # spine: discs and marrow
    assert r(count(4), p.m_heart) > 0.4                   # heart and vessels grow
    legs = np.array([v[:, :, :12][l[:, :, :12] >= 1].mean() for v, l in zip(x, lab)])
    for o in ('m_muscle', 'm_heart', 'm_liver', 'm_kidney'): assert abs(r(legs, p[o])) < 0.3, o   # no age in the legs
    # and BMI makes the body bigger (torso and fat layer), independently of age
    assert r((lab >= 1).sum((1, 2, 3)), p.bmi) > 0.5 and abs(r(p.bmi, a.obs.age.to_numpy())) < 0.25

# ---- registration ----
def _body(**kw):
    p = dict(m_muscle=0., m_heart=0., m_liver=0., m_kidney=0., male=False, bmi=24., height=1., rx=0., ry=0., rz=0., tx=0., ty=0., tz=0.)
    return render_body({**p, **kw}, SHAPE)

def test_registration_recovers_a_known_affine():
    import SimpleITK as sitk
    from organage.explain.atlas import register_volume, sitk_volume, sitk_array, RegistrationSettings
    aff = wholebody_affine(SHAPE)
    fix, lab = _body()
    true = sitk.AffineTransform(3)
    R = np.array(sitk.Euler3DTransform((0, 0, 0), -0.04, 0.05, 0.07).GetMatrix()).reshape(3, 3)
    true.SetMatrix((R @ np.diag([0.96, 1.03, 1.05])).ravel().tolist()); true.SetTranslation((-15.0, 6.0, -25.0))
    f = sitk_volume(fix, aff)
    mov = sitk_array(sitk.Resample(f, f, true.GetInverse(), sitk.sitkLinear, 0.0))
    tx, sec = register_volume(fix, mov, aff, RegistrationSettings(deformable='none', affine_iterations=200, sampling=1.0))
    A = np.array(tx.GetMatrix()).reshape(3, 3)
    np.testing.assert_allclose(A, np.array(true.GetMatrix()).reshape(3, 3), atol=0.03)
    pts = [f.TransformContinuousIndexToPhysicalPoint([float(i) for i in ijk]) for ijk in np.argwhere(lab > 1)[::5]]
    err = np.array([np.linalg.norm(np.subtract(tx.TransformPoint(p), true.TransformPoint(p))) for p in pts])
    assert np.percentile(err, 90) < 0.3*min(np.array(f.GetSpacing())) and sec < 30

def test_warped_gradcam_mass_is_conserved():
    from organage.explain.atlas import register_volume, warp, RegistrationSettings
    aff = wholebody_affine(SHAPE)
    fix, _ = _body()
    mov, lab = _body(bmi=29., height=1.06, rx=3., rz=-4., tx=20., tz=-30.)
    cam = np.where(np.isin(lab, AGING_LABELS), 1.0, np.where(lab >= 1, 0.2, 0.0)).astype(np.float32)
    for deform in ('demons', 'bspline', 'none'):
        tx, _ = register_volume(fix, mov, aff, RegistrationSettings(deformable=deform))
        assert abs(warp(cam, tx, aff, preserve='mass').sum()/cam.sum() - 1) < 0.05, deform
        wl = warp(lab, tx, aff, labels=True)
        assert set(np.unique(wl)) <= set(np.unique(lab))   # nearest neighbour: no new labels

# ---- gradient accumulation ----
def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader
    from organage.model.regressor import AgeRegressor, RegressorConfig, TensorAgeDataset
    from organage.model.regressor import _collate
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 6, 5, 4), torch.linspace(40, 80, 8)
    net = nn.Sequential(nn.Conv3d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(1)); net(x)
    big = [p.clone() for p in net.parameters()]
    loss = (net(x)[:, 0] - y).abs().mean(); loss.backward()
    g_big = [p.grad.clone() for p in net.parameters()]; net.zero_grad()
    seen = {}
    class Grab(L.Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer):
            if not seen: seen['g'] = [p.grad.clone() for p in module.net.parameters()]
    rc = RegressorConfig(accumulate=4, batch_size=2, device='cpu')
    tr = L.Trainer(max_steps=1, accumulate_grad_batches=4, accelerator='cpu', logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, callbacks=[Grab()], default_root_dir=tmp_path)
    tr.fit(AgeRegressor(net, rc), DataLoader(TensorAgeDataset(x, y.numpy()), batch_size=2, shuffle=False, collate_fn=_collate))
    for a, b in zip(seen['g'], g_big): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # and without accumulation the first step sees only the first mini-batch: a different gradient
    net.zero_grad(); ((net(x[:2])[:, 0] - y[:2]).abs().mean()).backward()
    assert not all(torch.allclose(p.grad, b) for p, b in zip(net.parameters(), g_big))

# ---- end to end: a ResNet-18 trained on the simulator, Grad-CAM against the truth ----
@pytest.mark.slow
def test_trained_resnet_gradcam_share_vs_chance(data, tmp_path):
    from organage.data.splits import split_subjects
    from organage.model.wholebody import wholebody_settings, wholebody_volumes, fit_wholebody_models
    from organage.explain.atlas import atlas_study, share_vs_chance
    torch.set_num_threads(1)
    a, _, lab, _ = data
    obs = a.obs.reset_index(drop=True)
    obs['split'] = obs.subject_id.map(split_subjects(obs, (0.7, 0.15, 0.15), stratify=('age_decile', 'sex'), seed=0))
    x = wholebody_volumes(a, SHAPE)
    s = wholebody_settings(epochs=10, patience=10)
    preds, fitted, _ = fit_wholebody_models(x, obs, tmp_path, s, device='cpu', models=('resnet18_3d', 'pcr'))
    te = preds[preds.split == 'test']
    mae = te.groupby('model').apply(lambda d: (d.mu - d.age).abs().mean(), include_groups=False)
    mean_mae = (obs.age[obs.split == 'test'] - obs.age[obs.split == 'train'].mean()).abs().mean()
    assert mae['resnet18_3d'] < mean_mae          # it learned something
    obs['gap'] = 0.0
    st = atlas_study(fitted['resnet18_3d'], x, obs, wholebody_affine(SHAPE), lab, layer='net.layer2', atlas_size=3, iterations=1, sign='absolute')
    t = share_vs_chance(st.native_shares, n_bootstrap=500).iloc[0]
    ta = share_vs_chance(st.shares, n_bootstrap=500).iloc[0]
    print(f"ResNet-18 MAE {mae['resnet18_3d']:.2f} (PCA+ridge {mae['pcr']:.2f}, mean {mean_mae:.2f}); Grad-CAM share in aging regions "
          f"{t.share:.3f} vs chance {t.chance:.3f} (excess {t.excess:.3f} [{t.excess_lo:.3f}, {t.excess_hi:.3f}]); in the atlas {ta.share:.3f} vs {ta.chance:.3f}; "
          f"mass inside the body {st.native_shares.in_body.mean():.2f}")
    assert t.share > t.chance and t.excess_lo > 0


def test_each_network_starts_from_the_seed_whatever_trained_before_it(data, tmp_path):
    "The 2.5-D CNN was built from the generator the ResNet's training had left: alone, or after a ResNet loaded from its folder, it started elsewhere."
    from organage.data.splits import split_subjects
    from organage.model.wholebody import wholebody_settings, wholebody_volumes, fit_wholebody_models
    a = data[0]
    obs = a.obs.reset_index(drop=True).iloc[:60].reset_index(drop=True)
    obs['split'] = obs.subject_id.map(split_subjects(obs, (0.7, 0.15, 0.15), stratify=('age_decile',), seed=0))
    x = wholebody_volumes(a, SHAPE)[:60]
    s = wholebody_settings(epochs=1, patience=1, widen=0.125, hidden=8)
    both, _, _ = fit_wholebody_models(x, obs, tmp_path/'both', s, device='cpu', models=('resnet18_3d', 'cnn_25d'))
    alone, _, _ = fit_wholebody_models(x, obs, tmp_path/'alone', s, device='cpu', models=('cnn_25d',))
    cnn = lambda p: p[p.model == 'cnn_25d'].mu.to_numpy()
    np.testing.assert_array_equal(cnn(both), cnn(alone))
