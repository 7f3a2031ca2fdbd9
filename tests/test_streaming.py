"""The on-disk pixel cache of `SubjectDataset(cache_dir=...)` (`organage.data.datasets.PixelCache`) and streaming without it.

Radiographs are real JPGs decoded by the project's loader (`organage.data.chexpert.load_radiograph`) through the run's
MONAI chain; a counting wrapper says how often an image was decoded."""
import json, os, threading
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from organage.core import DataError
from organage.data.chexpert import load_radiograph
from organage.data.datasets import PixelCache, SubjectDataset, collate_subjects, pixel_cache_key
from organage.data.preprocess import image_transforms

CALLS, LOCK = [], threading.Lock()


def counting(p):
    "load_radiograph, counting calls (threads of the build pass call it concurrently)."
    with LOCK: CALLS.append((os.getpid(), str(p)))
    return load_radiograph(p)


def logging_loader(p):
    "load_radiograph, appending the decoding process's id to the file named by $ORGANAGE_TEST_DECODE_LOG (workers are other processes)."
    with open(os.environ['ORGANAGE_TEST_DECODE_LOG'], 'a') as f: f.write(f'{os.getpid()}\n')
    return load_radiograph(p)


def other_loader(p):
    "Another loader (same pixels): its code is not `counting`'s, so the key differs."
    return load_radiograph(p)


def cohort(folder: Path, n: int = 12, bad: tuple = (4,)):
    "n radiographs of n subjects (JPG, 40x36); files in `bad` are truncated JPGs. Returns the xray AnnData."
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder/f'patient{i:05d}'/'view1_frontal.jpg'; p.parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 36), dtype=np.uint8), mode='L').save(p, quality=92)
        if i in bad: p.write_bytes(p.read_bytes()[:60])
        paths.append(str(p))
    obs = pd.DataFrame({'subject_id': [f's{i:02d}' for i in range(n)], 'organ': 'lung', 'age': 20. + np.arange(n),
                        'sex': 'male', 'path': paths}, index=[f'x{i}' for i in range(n)])
    return ad.AnnData(np.zeros((n, 0), np.float32), obs=obs)


def dataset(xr, cache, subjects=None, loader=counting, size=16, **kw):
    return SubjectDataset({'xray': xr}, ['lung'], subjects=subjects, image_size=size, loaders={'xray': loader}, cache_dir=cache, **kw)


@pytest.fixture
def xr(tmp_path):
    CALLS.clear()
    return cohort(tmp_path/'img')


def cache_files(cache: Path):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_written_once_and_reused(xr, tmp_path):
    cache = tmp_path/'cache'
    a = dataset(xr, cache)
    assert len(CALLS) == 12 and a.pixel_caches['xray'].built                 # one decode per image
    files = cache_files(cache)
    assert [Path(f).suffix for f in files] == ['.f16', '.json']
    meta = json.loads((cache/files[1]).read_text())
    assert meta['shape'] == [1, 16, 16] and meta['dtype'] == 'float16' and meta['n_images'] == 12 and meta['n_written'] == 11
    assert (cache/files[0]).stat().st_size == 12 * 16 * 16 * 2               # one flat file, a row per AnnData row
    CALLS.clear()
    b = dataset(xr, cache)
    assert CALLS == [] and not b.pixel_caches['xray'].built                  # read back: the loader is never called
    for i in range(len(b)): torch.testing.assert_close(b[i]['xray_x'], a[i]['xray_x'], rtol=0, atol=0)
    assert cache_files(cache) == files


def test_cached_pixels_equal_decoded(xr, tmp_path):
    "float16-exact: the cache stores what the decoding transform gives, bit for bit, for every item."
    cached = dataset(xr, tmp_path/'cache')
    dataset(xr, tmp_path/'cache')   # and the reread copy
    for gb in (2.0, 0.0):           # in memory, and decoded at every access
        ref = dataset(xr, None, cache_gb=gb)
        assert ref.subjects == cached.subjects
        for i in range(len(ref)):
            x, y = cached[i]['xray_x'], ref[i]['xray_x']
            assert x.dtype == y.dtype == torch.float16 and torch.equal(x, y)


def test_key_changes(xr, tmp_path):
    cache = tmp_path/'cache'
    chain = image_transforms(16, 8)['xray']
    paths = list(xr.obs.path)
    k = pixel_cache_key('xray', paths, counting, chain)[0]
    assert pixel_cache_key('xray', paths, counting, image_transforms(16, 8)['xray'])[0] == k    # a fresh chain, same settings
    assert pixel_cache_key('xray', paths, counting, image_transforms(24, 8)['xray'])[0] != k    # image_size
    assert pixel_cache_key('xray', paths, counting, image_transforms(16, 12)['xray'])[0] == k   # volume_size is not the radiograph chain's
    assert pixel_cache_key('xray', paths, other_loader, chain)[0] != k                          # the loader
    assert pixel_cache_key('xray', paths[::-1], counting, chain)[0] != k                        # the paths, in order
    dataset(xr, cache)
    CALLS.clear()
    dataset(xr, cache, size=24); assert len(CALLS) == 12                     # image_size: decoded again, into a new file
    CALLS.clear()
    dataset(xr, cache, loader=other_loader); assert CALLS == []              # other_loader does not count, but ...
    assert len(cache_files(cache)) == 6                                      # ... wrote a third cache
    st = os.stat(paths[7]); os.utime(paths[7], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # touch one file
    assert pixel_cache_key('xray', paths, counting, chain)[0] != k
    CALLS.clear()
    d = dataset(xr, cache); assert len(CALLS) == 12 and d.pixel_caches['xray'].key != k     # never the stale pixels
    assert len(cache_files(cache)) == 8


def test_key_follows_the_decoding_code_and_libraries(xr, monkeypatch):
    "An upgrade of an imaging library or an edit of organage's decoding modules is another key: the settings alone do not say how a file became pixels."
    import organage.core, organage.data.datasets as dsm
    chain, paths = image_transforms(16, 8)['xray'], list(xr.obs.path)
    k, inputs = pixel_cache_key('xray', paths, counting, chain)
    assert set(inputs['code']['source']) == set(dsm.DECODING_MODULES) and inputs['code']['packages']['monai']
    real = organage.core.package_versions
    monkeypatch.setattr(organage.core, 'package_versions', lambda names: {**real(names), 'monai': '0.0.1'})
    assert pixel_cache_key('xray', paths, counting, chain)[0] != k
    monkeypatch.setattr(organage.core, 'package_versions', real)
    monkeypatch.setattr(dsm, 'DECODING_MODULES', dsm.DECODING_MODULES[:-1])
    assert pixel_cache_key('xray', paths, counting, chain)[0] != k


def test_unreadable_reported_on_build_and_reuse(xr, tmp_path):
    cache = tmp_path/'cache'
    for build in (True, False):
        CALLS.clear()
        d = dataset(xr, cache)
        assert d.pixel_caches['xray'].built is build and len(CALLS) == (12 if build else 0)
        assert d.dropped[['modality', 'subject_id']].values.tolist() == [['xray', 's04']]
        assert d.dropped.path[0] == xr.obs.path.iloc[4] and 'image cannot be decoded' in d.dropped.error[0]
        assert 's04' not in d.subjects and len(d) == 11                      # left out, as without a cache
    meta = json.loads((cache/cache_files(cache)[1]).read_text())
    assert list(meta['unreadable']) == ['4'] and meta['unreadable']['4']['path'] == xr.obs.path.iloc[4]
    with pytest.raises(DataError, match='image cannot be used'): d.pixel_caches['xray'].read(4)


class Boom(Exception): pass


def test_interrupted_build_leaves_nothing_trusted(xr, tmp_path):
    cache = tmp_path/'cache'
    n = []
    def dies(p):
        n.append(p)
        if len(n) == 7: raise Boom('killed in the middle of the build')
        return load_radiograph(p)
    with pytest.raises(Boom): dataset(xr, cache, loader=dies)
    assert cache_files(cache) == []                                          # no pixel file, no sidecar, no temporary file
    CALLS.clear()
    d = dataset(xr, cache); assert d.pixel_caches['xray'].built and len(CALLS) == 12   # the next dataset builds it whole
    # a sidecar whose pixel file is cut short (a disk full, a copy stopped) is not trusted either: built again
    f16 = d.pixel_caches['xray'].data_path
    f16.write_bytes(f16.read_bytes()[:100])
    CALLS.clear()
    d1 = dataset(xr, cache); assert d1.pixel_caches['xray'].built and len(CALLS) == 12
    CALLS.clear()
    d2 = dataset(xr, cache); assert not d2.pixel_caches['xray'].built and CALLS == []
    f16 = d2.pixel_caches['xray'].data_path
    assert f16.stat().st_size == 12 * 16 * 16 * 2
    # an orphaned temporary file of a killed build (kill -9: no except clause ran) is never read
    (cache/f'.{f16.name}.123.tmp').write_bytes(b'\0' * 10)
    CALLS.clear(); dataset(xr, cache); assert CALLS == []


def test_splits_share_one_file(xr, tmp_path):
    cache = tmp_path/'cache'
    subj = sorted(xr.obs.subject_id)
    split = {'train': subj[:8], 'val': subj[8:10], 'test': subj[10:]}
    ds = {}
    for s, sub in split.items():
        CALLS.clear()
        ds[s] = dataset(xr, cache, subjects=sub)
        assert len(CALLS) == (12 if s == 'train' else 0)                     # train decodes the whole modality once
    assert [Path(f).suffix for f in cache_files(cache)] == ['.f16', '.json']
    assert len({d.pixel_caches['xray'].data_path for d in ds.values()}) == 1
    assert ds['train'].dropped.subject_id.tolist() == ['s04'] and len(ds['val'].dropped) == len(ds['test'].dropped) == 0
    whole = dataset(xr, None)
    ref = {s: whole[whole.subjects.index(s)]['xray_x'] for s in whole.subjects}
    for d in ds.values():                                                    # each split reads its own rows
        for i, s in enumerate(d.subjects): assert torch.equal(d[i]['xray_x'], ref[s])


@pytest.mark.parametrize('cache', [True, False])
def test_workers(xr, tmp_path, cache, monkeypatch):
    """num_workers=2: without a cache and over cache_gb the images are decoded in the workers and nothing keeps them;
    with the cache each worker reads it through its own file descriptor. Either way the batches equal num_workers=0's."""
    log = tmp_path/'decoded.txt'
    monkeypatch.setenv('ORGANAGE_TEST_DECODE_LOG', str(log))
    d = dataset(xr, tmp_path/'cache' if cache else None, loader=logging_loader, cache_gb=0.0)
    if not cache: assert d.images['xray'].cache_num == 0 and d.images['xray']._cache == []   # nothing holds the pixels
    log.unlink()
    batches, pids = {}, {}
    for w in (0, 2):
        dl = DataLoader(d, batch_size=4, num_workers=w, collate_fn=collate_subjects)
        batches[w] = torch.cat([b['xray_x'] for b in dl])
        pids[w] = [int(x) for x in log.read_text().split()] if log.exists() else []
        if log.exists(): log.unlink()
    assert torch.equal(batches[0], batches[2]) and len(batches[0]) == 11
    if cache: assert pids == {0: [], 2: []}                                  # read, never decoded
    else:
        assert pids[0] == [os.getpid()] * 11                                 # decoded at every access: no hidden cache
        assert len(pids[2]) == 11 and os.getpid() not in pids[2] and len(set(pids[2])) == 2   # in the two worker processes


def test_cache_not_mapped(xr, tmp_path):
    "Items come from positioned reads: the pixel file is never mapped into the process (mapped pages would count in RSS)."
    d = dataset(xr, tmp_path/'cache')
    for i in range(len(d)): d[i]
    f16 = str(d.pixel_caches['xray'].data_path)
    maps = Path(f'/proc/{os.getpid()}/maps')
    if not maps.exists(): pytest.skip('no /proc')
    assert f16 not in maps.read_text()
