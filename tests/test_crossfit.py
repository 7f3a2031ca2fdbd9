"""Cross-fitting (organage.model.crossfit) on a tiny simulated cohort: every subject held out once per model, by an
outer model that did not train on it; validation rows come from the fold before; finished folds are reused; other
folds are refused."""
import logging
import pandas as pd
import pytest

from organage.core import load_config, ConfigError
from organage.data.synth import simulate_cohort
from organage.model.crossfit import cross_fit, held_out, fold_table1, OOF_COLUMNS

SETTINGS = {'epochs': 1, 'image_size': 32, 'volume_size': 16, 'n_genes': 300, 'device': 'cpu', 'batch_size': 32,
            'n_bootstrap': 200, 'seed': 5, 'oof_modalities': None}
TINY = dict(latent_dim=16, proj_dim=8, enc_width=4, enc_depth=2, n_heads=2, n_layers=1)
K = 3


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    return simulate_cohort(tmp_path_factory.mktemp('cohort')/'sim', subjects=150, seed=5, n_genes=300, image_size=32, volume_size=16)


@pytest.fixture(scope='module')
def fitted(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp('crossfit')
    cfg = load_config('quick', overrides=SETTINGS)
    return cfg, out, cross_fit(cfg, cohort, out, k=K, model=TINY, train={'progress': False})


def test_every_subject_is_held_out_once_by_a_model_that_never_trained_on_it(fitted):
    cfg, out, oof = fitted
    assert list(oof.columns[:len(OOF_COLUMNS)]) == OOF_COLUMNS
    folds = pd.read_csv(out/'folds.csv', dtype={'subject_id': str}).set_index('subject_id').fold
    h = held_out(oof)
    assert {'unimodal_rna', 'unimodal_xray', 'unimodal_mri', 'enet_rna', 'pcr_xray', 'pcr_mri'} <= set(h.model)
    for r in range(K):
        s = pd.read_csv(out/f'outer_{r}'/'splits.csv', dtype={'subject_id': str}).set_index('subject_id').split
        train = set(s.index[s == 'train'])
        rows = oof[oof.outer == r]
        assert not set(rows.subject_id) & train                      # nothing predicted for a subject it trained on
        assert set(rows.subject_id[rows.split == 'test']) <= set(folds.index[folds == r])
        assert set(rows.subject_id[rows.split == 'val']) <= set(folds.index[folds == (r - 1) % K])
    # every subject with RNA gets an out-of-fold RNA prediction per organ it has, from the outer model of its fold
    rna = h[h.model == 'unimodal_rna']
    assert rna.subject_id.map(folds).eq(rna.outer).all()
    assert rna.subject_id.nunique() == oof[oof.model == "unimodal_rna"].subject_id.nunique()


def test_fold_table1_is_each_outer_models_own_table1(fitted):
    cfg, out, oof = fitted
    t = fold_table1(oof)
    f = t['folds'].set_index(['outer', 'model'])
    for r in range(K):
        x = oof[(oof.outer == r) & (oof.split == 'test') & (oof.model == 'enet_rna')]
        assert f.loc[(r, 'enet_rna'), 'MAE'] == pytest.approx((x.mu - x.age).abs().mean())
    assert (t['over_folds'].set_index('model').loc[['unimodal_rna', 'enet_rna'], 'n_repeats'] == K).all()


def test_a_finished_cross_fit_is_reused_and_other_folds_refused(fitted, cohort, caplog):
    cfg, out, oof = fitted
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob('*.safetensors')}
    with caplog.at_level(logging.INFO, logger='organage'):
        again = cross_fit(cfg, cohort, out, k=K, model=TINY, train={'progress': False})
    assert sum('not retrained' in r.message for r in caplog.records) == K
    assert stamp == {p: p.stat().st_mtime_ns for p in out.rglob('*.safetensors')}
    pd.testing.assert_frame_equal(again.reset_index(drop=True), oof.reset_index(drop=True))
    with pytest.raises(ConfigError, match='k 3 -> 4'):
        cross_fit(cfg, cohort, out, k=4, model=TINY, train={'progress': False})
    with pytest.raises(ConfigError, match='stages'):            # more stages: the finished folds lack them
        cross_fit(cfg, cohort, out, k=K, stages=['unimodal', 'naive', 'baselines'], model=TINY, train={'progress': False})
    with pytest.raises(ConfigError, match='modalities'):        # RNA alone into a folder of every modality
        cross_fit(cfg, cohort, out, k=K, modalities=('rna',), model=TINY, train={'progress': False})


def test_another_cohort_is_refused(fitted, tmp_path):
    cfg, out, oof = fitted
    other = simulate_cohort(tmp_path/'other', subjects=150, seed=6, n_genes=300, image_size=32, volume_size=16)
    with pytest.raises(ConfigError, match='cohort_fingerprint'):
        cross_fit(cfg, other, out, k=K, model=TINY, train={'progress': False})


def test_an_rna_only_cross_fit_trains_rna_alone_on_the_ages_of_a_full_run(fitted, cohort, tmp_path):
    cfg, out, oof = fitted
    rna = cross_fit(cfg, cohort, tmp_path, k=K, modalities=('rna',), model=TINY, train={'progress': False})
    assert set(rna.modality) == {'rna', 'fusion'} and {'unimodal_rna', 'enet_rna'} <= set(rna.model)   # 'stacked': the enet alone
    assert not set(rna.model) & {'unimodal_xray', 'unimodal_mri', 'pcr_xray', 'pcr_mri'}
    pd.testing.assert_series_equal(pd.read_csv(tmp_path/'folds.csv').fold, pd.read_csv(out/'folds.csv').fold)  # the same subject folds
    key = ['model', 'subject_id', 'organ', 'split', 'outer']
    both = rna.merge(oof, on=key, suffixes=('', '_all'))
    assert len(both) == len(rna)                                # every row also in the all-modality cross-fit ...
    assert (both.age - both.age_all).abs().max() < 1e-9         # ... with the same target age (exact ages from images)
