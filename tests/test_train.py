"The staged curriculum end to end on a tiny cohort: stage files, checkpoints, resume, refusal, evaluation tables."
import json, logging
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
import anndata as ad
import lightning as L

from organage.core import load_config, ConfigError
from organage.model.train import train_curriculum
from organage.model.weights import load_model, load_weights, save_weights
from organage.evaluate.tables import evaluate_run, results_tables
from organage.model.fusion import OrganAgeModel, ModelConfig

LOADERS = {'xray': np.load, 'mri': np.load}
ORGANS = ['brain', 'heart', 'lung']


def toy_cohort(folder, n=48, n_genes=60, seed=0, size=16):
    "Every subject has RNA of three organs, a radiograph and a volume whose content grows with the organ's age."
    rng = np.random.default_rng(seed); folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    age = rng.uniform(20, 80, n); sex = rng.choice(['male', 'female'], n)
    bio = {o: age + rng.normal(0, 3, n) for o in ORGANS}
    w = rng.normal(0, 1, (3, n_genes)) * (rng.random(n_genes) < 0.3)
    rows, X = [], []
    for i in range(n):
        for k, o in enumerate(ORGANS):
            X.append(rng.poisson(np.exp(3 + 0.02 * w[k] * (bio[o][i] - 50))))
            rows.append(dict(subject_id=f's{i:03d}', organ=o, age=age[i], sex=sex[i]))
    rna = ad.AnnData(np.array(X, np.float32), obs=pd.DataFrame(rows, index=[f'r{j}' for j in range(len(rows))]))
    rna.var_names = [f'g{j}' for j in range(n_genes)]
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    z3 = np.sqrt(sum(g ** 2 for g in np.mgrid[:8, :8, :8] / 8 - 0.5))
    xr, mr = [], []
    for i in range(n):
        p = folder / f'x{i}.npy'; np.save(p, (np.hypot(xx, yy) < 0.1 + 0.3 * (bio['lung'][i] - 20) / 60).astype(np.float32))
        xr.append(dict(subject_id=f's{i:03d}', organ='lung', age=age[i], sex=sex[i], path=str(p)))
        p = folder / f'v{i}.npy'; np.save(p, (z3 < 0.1 + 0.3 * (bio['brain'][i] - 20) / 60).astype(np.float32))
        mr.append(dict(subject_id=f's{i:03d}', organ='brain', age=age[i], sex=sex[i], path=str(p)))
    mk = lambda r, pre: ad.AnnData(np.zeros((len(r), 0), np.float32), obs=pd.DataFrame(r, index=[f'{pre}{j}' for j in range(len(r))]))
    return {'rna': rna, 'xray': mk(xr, 'x'), 'mri': mk(mr, 'm')}


def cfg(**kw):
    return load_config('quick', overrides={'epochs': 1, 'image_size': 16, 'volume_size': 16, 'n_genes': 50, 'device': 'cpu',
                                           'batch_size': 16, **kw})


TINY = dict(latent_dim=16, proj_dim=8, enc_width=4, enc_depth=2, n_heads=2, n_layers=1)


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    return toy_cohort(tmp_path_factory.mktemp('cohort'))


@pytest.fixture(scope='module')
def run(cohort, tmp_path_factory):
    d = tmp_path_factory.mktemp('run')
    out = train_curriculum(cfg(), cohort, d, model=TINY, loaders=LOADERS)
    return d, out


def test_every_stage_writes_checkpoint_metrics_and_weights(run):
    d, out = run
    assert list(out) == ['unimodal_rna', 'unimodal_xray', 'unimodal_mri', 'naive', 'aligned', 'baselines']
    for s in [s for s in out if s != 'baselines']:
        assert (d / s / 'done.json').exists() and (d / s / 'model.safetensors').exists()
        ck = torch.load(d / s / 'checkpoints' / 'last.ckpt', map_location='cpu', weights_only=True)
        assert 'state_dict' in ck and ck['epoch'] == 0
        logs = pd.read_csv(next((d / s / 'logs').rglob('metrics.csv')))
        assert {'val_mae', 'train_loss_epoch' if 'train_loss_epoch' in logs else 'train_loss'} <= set(logs.columns)
    assert 'val_infonce' in pd.read_csv(next((d / 'aligned' / 'logs').rglob('metrics.csv'))).columns
    splits = pd.read_csv(d / 'splits.csv')
    assert splits.subject_id.is_unique and set(splits.split) == {'train', 'val', 'test'}


def test_fused_stages_start_from_the_unimodal_encoders(cohort, tmp_path):
    "What `train_curriculum` did: when the naive and aligned stages start, each encoder holds its unimodal stage's trained weights (not a fresh start)."
    seen = Seen()
    train_curriculum(cfg(), cohort, tmp_path / 'run', model=TINY, loaders=LOADERS, stages=('unimodal', 'naive', 'aligned'), callbacks=[seen])
    fresh = {k: v for k, v in OrganAgeModel(load_model(tmp_path / 'run' / 'aligned').cfg).named_parameters() if k.startswith('encoders.')}
    for kind in ('naive', 'aligned'):
        start = seen.start[kind]
        for m in ('rna', 'xray', 'mri'):
            uni = {k: v for k, v in load_model(tmp_path / 'run' / f'unimodal_{m}').named_parameters() if k.startswith(f'encoders.{m}.')}
            assert uni and all(torch.equal(start[k], v) for k, v in uni.items()), (kind, m)
            assert not all(torch.equal(fresh[k], v) for k, v in uni.items())   # a fresh start would differ: the check can fail


def test_rerun_skips_finished_stages(run, cohort):
    d, out = run
    again = train_curriculum(cfg(), cohort, d, model=TINY, loaders=LOADERS)
    assert again == out


def test_run_folder_with_other_settings_is_refused(run, cohort):
    d, _ = run
    with pytest.raises(ConfigError, match='other settings.*model_config.latent_dim'):
        train_curriculum(cfg(), cohort, d, model={**TINY, 'latent_dim': 32}, loaders=LOADERS)


def test_checkpoint_from_another_config_is_refused(run):
    d, _ = run
    other = OrganAgeModel(ModelConfig(**{**load_model(d / 'aligned').cfg.model_dump(), 'latent_dim': 32}))
    with pytest.raises(ConfigError, match='another model configuration.*latent_dim'):
        load_weights(other, d / 'aligned')


def test_evaluate_writes_predictions_and_tables(run, cohort):
    d, _ = run
    pred = evaluate_run(d, cohort, device='cpu', loaders=LOADERS)
    assert list(pred.columns) == ['subject_id', 'organ', 'modality', 'split', 'age', 'mu', 'sigma']
    assert set(pred.modality) == {'fusion'} and set(pred.split) == {'val', 'test'}
    assert (pred.sigma >= 0.5).all() and np.isfinite(pred.mu).all()
    splits = pd.read_csv(d / 'splits.csv', dtype={'subject_id': str}).set_index('subject_id').split
    assert (pred.split.values == splits.loc[pred.subject_id].values).all()
    assert set(pred.groupby('subject_id').organ.nunique()) == {3}
    t1 = pd.read_csv(d / 'tables' / 'table1.csv')
    assert t1.configuration.tolist() == ['RNA only', 'X-ray only', 'MRI only', 'Naive fusion', 'Aligned fusion', 'Elastic net (RNA)',
                                         'PCA + ridge (X-ray)', 'PCA + ridge (MRI)', 'Stacked linear (late fusion)',
                                         'Shipped: network + baselines per organ']
    allp = pd.read_csv(d / 'predictions_by_model.csv', dtype={'subject_id': str})
    test = allp[(allp.split == 'test') & (allp.model == 'unimodal_xray')]
    assert t1.set_index('model').loc['unimodal_xray', 'N'] == len(test) == (splits == 'test').sum()
    assert np.isclose(t1.set_index('model').loc['unimodal_xray', 'MAE'], (test.mu - test.age).abs().mean())
    t2 = pd.read_csv(d / 'tables' / 'table2.csv')
    assert t2.modality.tolist() == ['All', 'RNA', 'X-ray', 'MRI']
    assert t2.baseline.tolist() == ['stacked', 'enet_rna', 'pcr_xray', 'pcr_mri'] and (t2.baseline_N == t2.N).all()


BASELINES = {'enet_rna': 'rna', 'pcr_xray': 'xray', 'pcr_mri': 'mri', 'stacked': 'fusion'}


def test_baselines_stage_fits_on_training_subjects_only(run):
    "The stage writes every split's rows, training rows out of fold, with what it chose; no training subject leaks into another split."
    d, out = run
    info = out['baselines']
    assert info['models'] == sorted(BASELINES) and (d / 'baselines' / 'done.json').exists()
    b = pd.read_csv(d / 'baselines' / 'predictions.csv', dtype={'subject_id': str})
    splits = pd.read_csv(d / 'splits.csv', dtype={'subject_id': str}).set_index('subject_id').split
    assert (b.split.values == splits.loc[b.subject_id].values).all()
    assert set(b.split) == {'train', 'val', 'test'} and np.isfinite(b.mu).all() and (b.sigma > 0).all()
    for model, modality in BASELINES.items():
        assert set(b[b.model == model].modality) == {modality}
    assert not b.duplicated(['model', 'split', 'subject_id', 'organ']).any()   # one row per (subject, organ): radiographs averaged
    st = json.loads((d / 'baselines' / 'settings.json').read_text())
    assert set(st['models']) == {'enet_rna', 'pcr_xray', 'pcr_mri'} and set(st['models']['enet_rna']) == set(ORGANS)
    assert st['folds']['subjects'] == (splits == 'train').sum()
    assert {'l1_ratio', 'alpha', 'sigma'} <= set(st['models']['enet_rna']['lung']) and 'components' in st['models']['pcr_mri']['brain']
    tr = b[(b.model == 'enet_rna') & (b.split == 'train')].groupby('organ')
    for organ, g in tr:   # sigma is the RMS of the out-of-fold errors
        assert np.isclose(g.sigma.iloc[0], np.sqrt(((g.mu - g.age) ** 2).mean()))


def test_baselines_learn_and_are_scored_on_the_networks_ages(run, cohort):
    "A network and its baseline answer the same age for every (subject, organ): where another modality knows a GTEx donor's exact age, both use it, not the bracket midpoint."
    d, _ = run
    if not (d / 'predictions_by_model.csv').exists(): evaluate_run(d, cohort, device='cpu', loaders=LOADERS)
    allp = pd.read_csv(d / 'predictions_by_model.csv', dtype={'subject_id': str})
    key = ['split', 'subject_id', 'organ']
    for deep, base in [('unimodal_rna', 'enet_rna'), ('unimodal_xray', 'pcr_xray'), ('unimodal_mri', 'pcr_mri')]:
        a = allp[allp.model == deep].groupby(key).age.first()
        b = allp[allp.model == base].groupby(key).age.first()
        both = a.index.intersection(b.index)
        assert len(both) > 0 and np.allclose(a[both], b[both]), (deep, base)
    rna = allp[allp.model == 'enet_rna']
    assert (rna.age % 5 != 0).any()   # some RNA ages are exact, not only bracket midpoints (25, 35, ...)


def test_baseline_rows_reach_predictions_by_model_and_table1(run, cohort):
    d, _ = run
    evaluate_run(d, cohort, device='cpu', loaders=LOADERS)
    allp = pd.read_csv(d / 'predictions_by_model.csv', dtype={'subject_id': str})
    for model, modality in BASELINES.items():
        rows = allp[allp.model == model]
        assert set(rows.split) == {'val', 'test'} and set(rows.modality) == {modality}
        assert np.isfinite(rows.mu).all() and np.isfinite(rows.sigma).all() and (rows.sigma > 0).all()
    pred = pd.read_csv(d / 'predictions.csv', dtype={'subject_id': str})   # the contract table stays aligned fusion's
    al = allp[(allp.model == 'aligned') & (allp.modality == 'fusion')].reset_index(drop=True)
    assert np.allclose(pred.mu, al.mu) and len(pred) == len(al)
    t1 = pd.read_csv(d / 'tables' / 'table1.csv').set_index('model')
    test = allp[allp.split == 'test']
    for model, modality in BASELINES.items():
        rows = test[(test.model == model) & (test.modality == modality)]
        assert t1.loc[model, 'N'] == len(rows) > 0 and np.isclose(t1.loc[model, 'MAE'], (rows.mu - rows.age).abs().mean())
        assert 0 <= t1.loc[model, 'coverage95_raw'] <= 1
    assert {'MAE_over_noise_floor', 'coverage95_raw', 'spearman_sigma_abs_error'} <= set(t1.columns)
    fc = pd.read_csv(d / 'tables' / 'fusion_check.csv').set_index('organ')
    assert {'MAE_stacked', 'MAE_enet_rna', 'best_baseline_MAE', 'aligned_beats_best_baseline'} <= set(fc.columns)
    assert np.isfinite(fc.loc['lung', ['MAE_pcr_xray', 'MAE_stacked', 'best_unimodal_MAE']].astype(float)).all()


def test_results_tables_on_hand_made_predictions():
    rows = []
    for model, mod, err in [('unimodal_rna', 'rna', 4.0), ('unimodal_xray', 'xray', 3.0), ('aligned', 'fusion', 1.0)]:
        for s in ['a', 'b']:
            organs = ['lung'] if model == 'unimodal_xray' else ['lung', 'brain']
            rows += [dict(model=model, subject_id=s, organ=o, modality=mod, split='test', age=50., mu=50 + err, sigma=2.) for o in organs]
    truth = pd.DataFrame([dict(subject_id=s, organ=o, age=50., bio_age=52.) for s in 'ab' for o in ['lung', 'brain']])
    t = results_tables(pd.DataFrame(rows), truth)
    t1 = t['table1'].set_index('model')
    assert t1.loc['aligned', 'MAE'] == 1.0 and t1.loc['unimodal_xray', 'N'] == 2 and t1.loc['truth', 'MAE'] == 2.0
    fc = t['fusion_check'].set_index('organ')
    assert fc.loc['lung', 'best_unimodal_MAE'] == 3.0 and fc.loc['brain', 'best_unimodal_MAE'] == 4.0
    assert fc.aligned_beats_best_unimodal.all()


class Interrupt(L.Callback):
    "Fails the aligned stage in the middle of its third epoch, after two epochs were checkpointed."
    def on_train_batch_start(self, trainer, module, batch, i):
        if module.model.cfg.kind == 'aligned' and trainer.current_epoch == 2 and i == 1:
            raise RuntimeError('simulated crash')


class Seen(L.Callback):
    "Training batches run per epoch, and the encoders' parameters when each stage's fit starts."
    def __init__(self): self.batches, self.start = {}, {}
    def on_fit_start(self, trainer, module):
        self.start[module.model.cfg.kind] = {k: v.detach().clone() for k, v in module.model.named_parameters() if k.startswith('encoders.')}
    def on_train_batch_start(self, trainer, module, batch, i):
        self.batches[trainer.current_epoch] = self.batches.get(trainer.current_epoch, 0) + 1


def test_interrupted_run_resumes_to_the_same_result(cohort, tmp_path):
    kw = dict(model=TINY, loaders=LOADERS, stages=('aligned',))
    c = cfg(epochs=3)
    train_curriculum(c, cohort, tmp_path / 'straight', **kw)
    with pytest.raises(RuntimeError, match='simulated crash'):
        train_curriculum(c, cohort, tmp_path / 'crashed', callbacks=[Interrupt()], **kw)
    assert (tmp_path / 'crashed' / 'aligned' / 'checkpoints' / 'last.ckpt').exists()
    assert not (tmp_path / 'crashed' / 'aligned' / 'done.json').exists()
    seen = Seen()
    train_curriculum(c, cohort, tmp_path / 'crashed', callbacks=[seen], **kw)
    # the rerun started from last.ckpt: only the third epoch ran, every one of its batches (a rerun from scratch shows epochs 0-2)
    per_epoch = json.loads((tmp_path / 'straight' / 'aligned' / 'done.json').read_text())['n_train'] // c.batch_size
    assert sorted(seen.batches) == [2] and seen.batches[2] == per_epoch, seen.batches
    a = load_model(tmp_path / 'straight' / 'aligned').state_dict()
    b = load_model(tmp_path / 'crashed' / 'aligned').state_dict()
    for k in a: assert torch.allclose(a[k], b[k], atol=1e-6), k
    pa = evaluate_run(tmp_path / 'straight', cohort, device='cpu', loaders=LOADERS)
    pb = evaluate_run(tmp_path / 'crashed', cohort, device='cpu', loaders=LOADERS)
    pd.testing.assert_frame_equal(pa, pb)


def test_each_stage_shows_an_epoch_bar_with_its_metrics(cohort, tmp_path, monkeypatch, caplog, recwarn):
    "Under `organage reproduce` the bars go to the relay file: one per stage, counting epochs, with loss and val MAE."
    relay = tmp_path / 'bars.jsonl'
    monkeypatch.setenv('ORGANAGE_PROGRESS_FILE', str(relay))
    caplog.set_level(logging.INFO)
    train_curriculum(cfg(epochs=2), cohort, tmp_path / 'run', model=TINY, loaders=LOADERS, stages=('unimodal', 'naive'))
    said = caplog.text + ''.join(str(w.message) for w in recwarn)   # what would fill the training cell's output
    for chatter in ('GPU available', 'litlogger', 'LeafSpec', 'smaller than the logging interval'):
        assert chatter not in said, chatter
    bars, epochs = {}, set()
    for line in relay.read_text().splitlines():
        e = json.loads(line); bars.setdefault(e['bar'], []).append(e)
        if str(e.get('desc', '')).endswith(': epochs'): epochs.add(e['bar'])
    other = {v[0]['desc'] for b, v in bars.items() if b not in epochs}
    assert other <= {'xray: decoding images into the pixel cache', 'mri: decoding images into the pixel cache'}, other   # the one decoding pass
    bars = {b: v for b, v in bars.items() if b in epochs}
    descs = [v[0]['desc'] for v in bars.values()]
    assert sorted(descs[:-1]) == ['unimodal_mri: epochs', 'unimodal_rna: epochs', 'unimodal_xray: epochs']
    assert descs[-1] == 'naive: epochs'
    for bid, ev in bars.items():
        assert (ev[0]['n'], ev[0]['total'], ev[0]['unit']) == (0, 2, 'epoch')
        assert ev[-1] == {'bar': bid, 'closed': True}
        assert ev[-2]['n'] == 2 and 'train_loss=' in ev[-2]['postfix'] and 'val_mae=' in ev[-2]['postfix']


def test_deterministic_mode_changes_nothing_on_cpu(cohort, tmp_path):
    "`deterministic=True` (meant for GPUs) trains the same weights on CPU, whose kernels are deterministic already."
    kw = dict(model=TINY, loaders=LOADERS, stages=('unimodal',), train={'progress': False})
    train_curriculum(cfg(epochs=2), cohort, tmp_path / 'default', **kw)
    train_curriculum(cfg(epochs=2, deterministic=True), cohort, tmp_path / 'deterministic', **kw)
    for m in ('rna', 'xray', 'mri'):
        a = load_model(tmp_path / 'default' / f'unimodal_{m}').state_dict()
        b = load_model(tmp_path / 'deterministic' / f'unimodal_{m}').state_dict()
        for k in a: assert torch.equal(a[k], b[k]), (m, k)


def test_run_folder_from_another_version_gets_a_clear_error(run, cohort, tmp_path):
    d, _ = run
    rec = json.loads((d / 'run.json').read_text())
    rec['train_config']['warmup_epochs'] = 3                    # a setting this version does not know
    (tmp_path / 'run.json').write_text(json.dumps(rec))
    from organage.model.predict import open_run
    with pytest.raises(ConfigError, match=r"run.json: settings this organage cannot read .*warmup_epochs: Extra inputs"):
        open_run(tmp_path, cohort, device='cpu')


def test_full_profile_smoke_on_cpu(cohort, tmp_path, caplog):
    "The `full` profile's paths on CPU at toy sizes: ResNet-18 image encoders, VST chosen for the RNA, bf16 asked for and trained in fp32 with a message."
    from organage.data.prepare import CohortData
    from organage.core import train_config_for
    c = load_config('full', overrides={'epochs': 1, 'image_size': 32, 'volume_size': 16, 'n_genes': 50, 'device': 'cpu', 'batch_size': 16, 'num_workers': 0})
    assert c.precision == 'bf16-mixed'
    caplog.set_level(logging.INFO, logger='organage')
    out = train_curriculum(c, cohort, tmp_path/'run', loaders=LOADERS, stages=('aligned',), train={'progress': False})
    assert 'precision bf16-mixed requested on CPU: training in 32-bit' in caplog.text
    m = load_model(tmp_path/'run'/'aligned')
    assert m.cfg.backbone == 'resnet18' and m.cfg.latent_dim == 256
    for mod in ('xray', 'mri'):
        kinds = {type(x).__name__ for x in m.encoders[mod].modules()}
        assert 'ResNet' in kinds and sum(type(x).__name__ == 'ResNetBlock' for x in m.encoders[mod].modules()) == 8, (mod, kinds)   # 2+2+2+2 basic blocks
    assert all(p.dtype == torch.float32 for p in m.parameters())
    pre = CohortData(cohort, c, train_config_for(c, progress=False), tmp_path/'run', loaders=LOADERS).preprocessors['rna']
    assert pre.method == 'vst' and pre.vst_used_ in ('parametric', 'mean')
    assert np.isfinite(out['aligned']['best_val_mae'])
