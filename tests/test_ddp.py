"Data-parallel training on CPU: the sharded sampler's guarantees, and `organage train --set devices=2 --set strategy=ddp` end to end (2 gloo processes)."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from organage.core import ConfigError
from organage.model.train import EpochSampler, ShardedBatchSampler

ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 500), world=st.integers(1, 8), batch=st.integers(1, 130), seed=st.integers(0, 10**6), epoch=st.integers(0, 50))
def test_shards_disjoint_cover_everything_equal_batches(n, world, batch, seed, epoch):
    "For any n, world size and batch size: shards disjoint, union = every index once, the same batch count on every rank, balanced sizes."
    try: shards = [ShardedBatchSampler(EpochSampler(n, seed), batch, world, r) for r in range(world)]
    except ConfigError as e:   # refused only when some global batch cannot give every rank a subject
        assert 'cannot give each of' in str(e)
        B = -(-n // batch); assert n // B < world
        return
    for s in shards: s.sampler.set_epoch(epoch)
    batches = [list(s) for s in shards]
    flat = [i for b in batches for x in b for i in x]
    assert sorted(flat) == list(range(n))                       # disjoint and complete: nothing padded, nothing skipped
    assert len({len(b) for b in batches}) == 1                  # equal batch counts (DDP's all-reduce)
    assert all(len(b) == len(s) for b, s in zip(batches, shards))
    sizes = [len(x) for b in batches for x in b]
    assert min(sizes) >= 1 and max(sizes) <= -(-batch // world)  # no empty batch, never more than a rank's share of batch_size
    for k in range(len(batches[0])):                              # within one global batch the ranks differ by at most one subject
        ks = [len(b[k]) for b in batches]; assert max(ks) - min(ks) <= 1
    # the same permutation on every rank: rank r holds every world-th subject of each global batch of it
    s0 = EpochSampler(n, seed); s0.set_epoch(epoch); order, start = list(s0), 0
    for k, size in enumerate(shards[0].sizes(n)):
        g = order[start:start + size]; start += size
        assert [batches[r][k] for r in range(world)] == [g[r::world] for r in range(world)]


def test_one_process_is_the_old_loader():
    "One process with drop_last: the batches of DataLoader(sampler=EpochSampler, drop_last=n > batch_size), so single-process runs are unchanged."
    from torch.utils.data import BatchSampler
    for n, B in [(100, 64), (64, 64), (30, 64), (200, 7)]:
        for e in (0, 3):
            a, b = EpochSampler(n, 5), EpochSampler(n, 5); a.set_epoch(e); b.set_epoch(e)
            assert list(ShardedBatchSampler(a, B, drop_last=True)) == list(BatchSampler(b, B, n > B))
    with pytest.raises(ConfigError, match='only for one process'): ShardedBatchSampler(EpochSampler(10), 4, 2, 0, drop_last=True)


def _env(relay=None):
    env = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}
    for k in ('RANK', 'LOCAL_RANK', 'NODE_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID', 'SLURM_NTASKS', 'ORGANAGE_PROGRESS'):
        env.pop(k, None)
    if relay: env['ORGANAGE_PROGRESS_FILE'] = str(relay)
    return env

def _organage(*args, relay=None, timeout=600, **kw):
    "The console script, as a user runs it (Lightning's launcher re-runs this command line for rank 1)."
    return subprocess.run([str(Path(sys.executable).parent/'organage'), *map(str, args)],
                          env=_env(relay), capture_output=True, text=True, timeout=timeout, **kw)

DDP = ['--set', 'devices=2', '--set', 'strategy=ddp', '--set', 'epochs=4', '--set', 'batch_size=16']


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp('ddp')/'cohort'
    r = _organage('simulate', d, '--subjects', 100, '--seed', 3)
    assert r.returncode == 0, r.stderr
    return d


@pytest.mark.slow
def test_ddp_train_writes_once_resumes_and_predicts(cohort, tmp_path):
    "Two gloo processes train the curriculum; every file is written once; a run killed mid-stage resumes to the uninterrupted result."
    run, relay = tmp_path/'run', tmp_path/'relay.jsonl'
    r = _organage('train', '--data', cohort, '--run', run, *DDP, relay=relay)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert 'GLOBAL_RANK: 1, MEMBER: 2/2' in out                   # a second process really trained
    assert r.stdout.count('trained run written to') == 1 and r.stdout.count('portable model') == 1   # rank 0 reports and exports
    splits = pd.read_csv(run/'splits.csv', dtype={'subject_id': str})
    stages = [p for p in run.iterdir() if (p/'checkpoints').is_dir()]
    assert {p.name for p in stages} >= {'unimodal_rna', 'naive', 'aligned'}
    for s in stages:
        assert sorted(f.name for f in (s/'checkpoints').iterdir()) == ['best.ckpt', 'last.ckpt']   # no best-v1.ckpt from a second writer
        m = pd.read_csv(s/'logs'/'metrics.csv')
        for col in ('val_mae', 'train_loss'):   # one row per epoch and metric: one logger wrote
            ep = m.dropna(subset=[col]).epoch.tolist(); assert ep == list(range(4)), (s.name, col, ep)
        done = json.loads((s/'done.json').read_text())
        assert done['epochs_run'] == 4 and done['n_train'] > 0
    assert len({json.loads(l)['bar'].split(':')[0] for l in relay.read_text().splitlines()}) == 1   # the relay hears one process
    b = pd.read_csv(run/'baselines'/'predictions.csv', dtype={'subject_id': str})   # the predictions training writes
    assert not b.duplicated(['model', 'modality', 'split', 'subject_id', 'organ']).any()
    r = _organage('evaluate', '--run', run)
    assert r.returncode == 0, r.stderr[-3000:]
    p = pd.read_csv(run/'predictions_by_model.csv', dtype={'subject_id': str})
    assert not p.duplicated(['model', 'modality', 'split', 'subject_id', 'organ']).any()
    a = p[(p.model == 'aligned') & (p.modality == 'fusion')]
    assert set(a.subject_id) == set(splits.subject_id[splits.split.isin(['val', 'test'])])   # every held-out subject predicted

    # killed (every process) once the aligned stage has its first last.ckpt, then the same command resumes it
    run2 = tmp_path/'run2'
    cmd = [str(Path(sys.executable).parent/'organage'), 'train', '--data', str(cohort), '--run', str(run2), *DDP, '--no-export']
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last, t0 = run2/'aligned'/'checkpoints'/'last.ckpt', time.time()
    while not last.exists() and p.poll() is None and time.time() - t0 < 500: time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert not (run2/'aligned'/'done.json').exists(), 'the aligned stage finished before it could be interrupted'
    r = _organage('train', '--data', cohort, '--run', run2, *DDP, '--no-export')
    assert r.returncode == 0, r.stderr[-3000:]
    m = pd.read_csv(run2/'aligned'/'logs'/'metrics.csv').dropna(subset=['val_mae'])
    assert m.epoch.min() >= 1 and m.epoch.max() == 3             # the rerun started after the saved epoch, not from scratch
    for s in ('unimodal_rna', 'naive', 'aligned'):
        d1, d2 = (json.loads((x/s/'done.json').read_text()) for x in (run, run2))
        assert d2['epochs_run'] == 4 and d2['best_epoch'] == d1['best_epoch']
        assert d2['best_val_mae'] == pytest.approx(d1['best_val_mae'], rel=1e-4), s   # resumed = uninterrupted
