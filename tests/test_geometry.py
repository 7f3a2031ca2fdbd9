"""Image geometry and bad files on the real-data path: NIfTI orientation and voxel size from the affine, EXIF
orientation of radiographs, and cohorts with unusable files that still build datasets, train, and name the files."""
import struct, subprocess, sys, zlib
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
import nibabel as nib
from PIL import Image

from organage.core import DataError, RunConfig, TrainConfig, load_config
from organage.data.ixi import load_volume
from organage.data.chexpert import load_radiograph, read_chexpert
from organage.data.preprocess import image_transforms, common_grid, resample_to_grid
from organage.data.datasets import SubjectDataset
from organage.data.prepare import CohortData
from organage.data.cohort import read_cohort, check_data
from organage.data.synth import simulate_cohort, render_volumes, ixi_geometry, SimConfig, IXI_SITES

BIN = Path(sys.executable).parent/'organage'


def brain_like(shape=(40, 48, 36)):
    "An asymmetric blob volume (so that a mirror image is visibly different)."
    rng = np.random.default_rng(0)
    g = np.indices(shape).astype(float)
    c = (np.array(shape) - 1)/2
    r = np.sqrt(sum(((g[i] - c[i])/(0.4*shape[i]))**2 for i in range(3)))
    v = (r < 1).astype(np.float32)*(1 + (g[0] > c[0]))   # the right half is twice as bright
    v[4:8, 10:14, 6:9] = 3                                # a left-posterior-inferior marker
    return v + rng.normal(0, 0.01, shape).astype(np.float32)


def write(path, data, affine):
    img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    img.set_qform(affine, code=1); img.set_sform(affine, code=1)
    nib.save(img, path); return path


def ras_affine(shape, vs):
    a = np.diag([*vs, 1.0]); a[:3, 3] = -(np.array(shape) - 1)/2*np.array(vs); return a


# ---------------------------------------------------------------- volumes
def test_las_and_ras_files_give_the_same_network_input(tmp_path):
    v = brain_like(); ras = ras_affine(v.shape, (4., 4., 5.))
    flip = np.eye(4); flip[0, 0] = -1; flip[0, 3] = v.shape[0] - 1              # LAS: voxel i holds RAS voxel n-1-i
    perm = np.eye(4)[[1, 2, 0, 3]].T                                              # stored axes (A, S, R): voxel (j, k, i)
    files = {'RAS': write(tmp_path/'ras.nii.gz', v, ras),
             'LAS': write(tmp_path/'las.nii.gz', v[::-1], ras @ flip),
             'ASR': write(tmp_path/'asr.nii.gz', v.transpose(1, 2, 0), ras @ perm)}
    assert {k: ''.join(nib.aff2axcodes(nib.load(f).affine)) for k, f in files.items()} == {'RAS': 'RAS', 'LAS': 'LAS', 'ASR': 'ASR'}
    chain = image_transforms(16, 32)['mri']
    x = {k: chain(load_volume(f)) for k, f in files.items()}
    assert x['RAS'].shape == (1, 32, 32, 32)
    assert torch.equal(x['RAS'], x['LAS']) and torch.equal(x['RAS'], x['ASR'])
    # the same files through a dataset (the training path): identical items
    obs = pd.DataFrame({'subject_id': list(files), 'organ': 'brain', 'age': 50., 'path': [str(f) for f in files.values()]}, index=list(files))
    import anndata as ad
    ds = SubjectDataset({'mri': ad.AnnData(np.zeros((3, 0), np.float32), obs=obs)}, ['brain'], volume_size=32)
    items = {s: ds[i]['mri_x'] for i, s in enumerate(ds.subjects)}
    assert torch.equal(items['RAS'], items['LAS']) and torch.equal(items['RAS'], items['ASR'])
    # resizing the voxel arrays, the old way, mirrors the LAS file
    naive = lambda f: torch.nn.functional.interpolate(torch.as_tensor(np.asarray(nib.load(f).dataobj, np.float32))[None, None], size=(32,)*3)
    assert not torch.allclose(naive(files['RAS']), naive(files['LAS']), atol=0.1)


def sphere(shape, vs, radius=30.):
    aff = ras_affine(shape, vs)
    xyz = np.tensordot(aff[:3, :3], np.indices(shape).astype(float), 1) + aff[:3, 3, None, None, None]
    return (np.sqrt((xyz**2).sum(0)) < radius).astype(np.float32), aff


def extents(grid, vs):
    "Extent (mm) of the voxels above 0.5 along each axis."
    m = grid > 0.5
    return np.array([(np.ptp(np.flatnonzero(m.any(axis=tuple(j for j in range(3) if j != i)))) + 1)*vs for i in range(3)])


def test_anisotropic_volume_is_not_stretched(tmp_path):
    "A sphere of radius 30 mm stored with 1 x 1 x 3 mm voxels (120 x 120 x 30: a 120 x 120 x 90 mm field of view) stays a sphere."
    from organage.data.preprocess import volume_transform
    s, aff = sphere((120, 120, 30), (1., 1., 3.))
    f = write(tmp_path/'thick.nii.gz', s, aff)
    g = volume_transform(48, 'none', fov_mm=120.)(load_volume(f))[0].numpy()   # 2.5 mm voxels
    np.testing.assert_allclose(extents(g, 2.5), 60, atol=5)                       # 60 mm across in every direction
    assert abs((g > 0.5).sum()*2.5**3/(4/3*np.pi*30**3) - 1) < 0.1
    # the same sphere at 1 mm isotropic lands on (nearly) the same grid
    s1, aff1 = sphere((120, 120, 120), (1., 1., 1.))
    g1 = volume_transform(48, 'none', fov_mm=120.)(load_volume(write(tmp_path/'iso.nii.gz', s1, aff1)))[0].numpy()
    assert np.abs(g - g1).mean() < 0.02
    # resizing the voxel array (the old chain) stretches it 120/90 = 1.33x along the thick axis
    naive = torch.nn.functional.interpolate(torch.as_tensor(s)[None, None], size=(48,)*3)[0, 0].numpy()
    e = extents(naive, 1.)
    assert e[2]/e[0] > 1.25


def test_simulated_sites_store_one_brain_alike():
    "The same simulated person on Guys' (RAS), HH's (LAS) and IOP's (sagittal PSR) grids: the same network input, nearly."
    cfg = SimConfig(mri_noise=0.)
    p = pd.DataFrame(dict(b=[0.5], male=True, head=1., vent=0., atrophy=0., site='Guys', rx=0., ry=0., rz=0., tx=0., ty=0., tz=0.,
                          bias0=0., bias1=0., bias2=0., bias3=0.))
    from monai.data import MetaTensor
    chain = image_transforms(16, 32)['mri']
    out = {}
    for site in IXI_SITES:
        shape, aff = ixi_geometry(site, cfg)
        v = render_volumes(p, shape, cfg, np.random.default_rng(0), aff)[0]
        out[site] = chain(MetaTensor(torch.as_tensor(v), affine=torch.as_tensor(aff)))[0].numpy()
    for site in ('HH', 'IOP'):
        r = np.corrcoef(out['Guys'].ravel(), out[site].ravel())[0, 1]
        assert r > 0.97, (site, r)


# ---------------------------------------------------------------- radiographs
def test_exif_orientation_is_applied(tmp_path):
    px = np.zeros((30, 20), np.uint8); px[:5, :] = 255             # a bright band at the top of the stored pixels
    ex = Image.Exif(); ex[0x0112] = 8                              # Orientation 8: rotate 90 degrees counter-clockwise to display
    Image.fromarray(px).save(tmp_path/'tag.jpg', exif=ex.tobytes(), quality=100)
    Image.fromarray(px).save(tmp_path/'plain.jpg', quality=100)
    a, b = load_radiograph(tmp_path/'tag.jpg'), load_radiograph(tmp_path/'plain.jpg')
    assert b.shape == (30, 20) and a.shape == (20, 30)
    np.testing.assert_allclose(a, np.rot90(b), atol=0.05)          # upright, as a viewer shows it: the band is now on the left
    assert a[:, :5].mean() > 0.9 and a[:, 10:].mean() < 0.1
    x = image_transforms(16, 16)['xray'](a)
    assert x.shape == (1, 16, 16) and float(x[0, :, :2].mean()) > 0.9


# ---------------------------------------------------------------- bad files in a cohort
def huge_png(path, side=20000):
    "A valid PNG header claiming side x side pixels (400 million at 20000): a decompression bomb without the memory."
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 0, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(b'\x00' * 16)) + chunk(b'IEND', b''))
    return path


@pytest.fixture(scope='module')
def broken(tmp_path_factory):
    "A simulated cohort (real formats) with one file of each kind of damage; returns (root, {kind: path})."
    root = simulate_cohort(tmp_path_factory.mktemp('broken')/'c', subjects=60, n_genes=200, image_size=16, volume_size=16,
                           paired_fraction=0.3, seed=3)
    xr = read_chexpert(root/'chexpert'); mr = sorted((root/'ixi'/'IXI-T1').glob('*.nii.gz'))
    paths = list(xr.obs.path)
    bad = {'truncated_jpeg': Path(paths[0]), 'bomb_png': Path(paths[1]), 'lowered_limit': Path(paths[2]),
           'nan_volume': mr[0], 'two_d_nifti': mr[1], 'header_only': mr[2]}
    data = bad['truncated_jpeg'].read_bytes(); bad['truncated_jpeg'].write_bytes(data[:len(data)//3])
    huge_png(bad['bomb_png'])                                        # PNG bytes under a .jpg name: Pillow reads by content
    Image.fromarray(np.full((100, 100), 128, np.uint8)).save(bad['lowered_limit'], format='PNG')   # 10,000 pixels
    v = nib.load(mr[0]); a = np.asarray(v.dataobj, np.float32); a[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(a, v.affine), mr[0])
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), mr[1])
    v = nib.load(mr[2]); full = nib.Nifti1Image(np.asarray(v.dataobj), v.affine); raw = tmp_path_factory.mktemp('raw')/'h.nii'
    nib.save(full, raw); import gzip; mr[2].write_bytes(gzip.compress(raw.read_bytes()[:352 + 64]))   # header, no voxel data
    # a patient whose sex is Unknown keeps the image (its age is known)
    csv = root/'chexpert'/'CheXpert-v1.0-small'/'train.csv'
    t = pd.read_csv(csv); i = t.index[t.Path.str.endswith('frontal.jpg')][-1]
    t.loc[i, 'Sex'] = 'Unknown'; t.to_csv(csv, index=False)
    return root, bad, t.Path[i]


def test_loaders_name_every_bad_file(broken, monkeypatch):
    root, bad, _ = broken
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 2000)
    for kind, f in bad.items():
        load = load_radiograph if f.suffix == '.jpg' else load_volume
        with pytest.raises(DataError) as e: load(f)
        assert str(f) in str(e.value), kind
    with pytest.raises(DataError, match='over the decompression-bomb limit'): load_radiograph(bad['lowered_limit'])
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 89478485)
    with pytest.raises(DataError, match='over the decompression-bomb limit'): load_radiograph(bad['bomb_png'])
    assert load_radiograph(bad['lowered_limit']).shape == (100, 100)   # under the default limit it is just an image


def test_datasets_leave_bad_files_out_and_list_them(broken, tmp_path, monkeypatch):
    root, bad, unknown_path = broken
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 2000)   # the 100 x 100 PNG is now over the limit too
    cfg = RunConfig(image_size=16, volume_size=16, n_genes=100)
    data = CohortData(root, cfg, TrainConfig(), tmp_path/'run')
    f = pd.read_csv(tmp_path/'run'/'dropped_files.csv', keep_default_na=False)
    listed = {Path(p).name for p in f.path}
    assert listed == {p.name for p in bad.values()}, f
    assert set(f.stage[f.path.str.contains('IXI')]) <= {'read', 'decode'}
    assert f.stage[f.path == str(bad['two_d_nifti'])].tolist() == ['read']            # refused from its header
    assert (f.error.str.len() > 0).all() and all(p in e for p, e in zip(f.path, f.error))  # each error names its file
    for kind, k in (('truncated_jpeg', 'cannot be decoded'), ('bomb_png', 'decompression-bomb'), ('nan_volume', 'non-finite voxels'),
                    ('header_only', 'cannot be read')):
        assert k in f.error[f.path == str(bad[kind])].iloc[0], kind
    # the good images are all there
    n_img = {m: sum(len(d.table[d.table.modality == m]) for d in data.ds.values()) for m in ('xray', 'mri')}
    c = read_cohort(root)
    assert n_img['xray'] == c['xray'].n_obs - 3 and n_img['mri'] == c['mri'].n_obs - 2   # the 2-D file never got into the AnnData
    # unknown sex: kept, coded -1
    assert (c['xray'].obs.sex == 'unknown').sum() == 1
    t = pd.concat([d.table for d in data.ds.values()])
    assert (t[t.modality == 'xray'].sex == -1).sum() == 1


@pytest.mark.slow
def test_training_runs_on_the_good_files(broken, tmp_path, monkeypatch):
    from organage.model.train import train_curriculum
    root, bad, _ = broken
    cfg = load_config('quick', overrides={'epochs': 1, 'image_size': 16, 'volume_size': 16, 'n_genes': 100, 'device': 'cpu', 'batch_size': 16})
    out = train_curriculum(cfg, root, tmp_path/'run', model=dict(latent_dim=16, proj_dim=8, enc_width=4, enc_depth=2, n_heads=2, n_layers=1),
                           stages=['unimodal'])
    assert {'unimodal_xray', 'unimodal_mri'} <= set(out)
    f = pd.read_csv(tmp_path/'run'/'dropped_files.csv')
    assert {Path(p).name for p in f.path} == {bad[k].name for k in ('truncated_jpeg', 'bomb_png', 'nan_volume', 'two_d_nifti', 'header_only')}


def test_check_data_full_lists_every_bad_file(broken):
    root, bad, _ = broken
    r = subprocess.run([str(BIN), 'check-data', str(root), '--full'], capture_output=True, text=True, timeout=300)
    assert 'Traceback' not in r.stderr, r.stderr
    out = r.stdout
    for kind in ('truncated_jpeg', 'bomb_png', 'nan_volume', 'two_d_nifti', 'header_only'):
        assert any(str(bad[kind]) in l and l.startswith('WARN') for l in out.splitlines()), (kind, out)
    assert 'image is over the decompression-bomb limit' in out
    assert 'decoded: all' in out and r.returncode == 0   # bad files are warnings: training leaves them out
    # without --full only a sample is decoded
    s = check_data(root)
    assert s.decoded['xray']['files'] == 16 < s.decoded['xray']['of']
