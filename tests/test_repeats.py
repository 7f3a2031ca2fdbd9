"Table 1 over repeated subject-grouped splits, end to end on a small simulated cohort: two tiny repeats, their splits, the tables, and a rerun that trains nothing."
import logging
from pathlib import Path
import pandas as pd
import pytest

from organage.core import load_config, ConfigError
from organage.data.synth import simulate_cohort
from organage.evaluate.repeats import repeated_splits

SETTINGS = {'epochs': 1, 'image_size': 32, 'volume_size': 16, 'n_genes': 300, 'device': 'cpu', 'batch_size': 32,
            'n_bootstrap': 200, 'seed': 3}
TINY = dict(latent_dim=16, proj_dim=8, enc_width=4, enc_depth=2, n_heads=2, n_layers=1)
TABLES = {
    'table1_repeats': ['repeat', 'seed', 'run', 'configuration', 'model', 'N', 'MSE', 'MAE', 'MAE_over_noise_floor',
                       'coverage95_raw', 'spearman_sigma_abs_error'],
    'table1_repeated': ['configuration', 'model', 'n_repeats', 'MAE_mean', 'MAE_sd', 'MAE_min', 'MAE_max',
                        'MAE_over_noise_floor_mean', 'coverage95_raw_sd', 'spearman_sigma_abs_error_max'],
    'table1_paired_differences_by_repeat': ['repeat', 'comparison', 'organ', 'model_a', 'model_b', 'n_pairs', 'n_subjects',
                                            'MAE_a', 'MAE_b', 'diff', 'low', 'high', 'level', 'test_train_ratio'],
    'table1_paired_differences': ['comparison', 'organ', 'model_a', 'model_b', 'n_repeats', 'mean_diff', 'sd_diff', 't_low',
                                  't_high', 'corrected_low', 'corrected_high', 'a_beats_b', 'ci_below_zero', 'ci_above_zero'],
}


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    return simulate_cohort(tmp_path_factory.mktemp('cohort')/'sim', subjects=160, seed=3, n_genes=300, image_size=32, volume_size=16)


@pytest.fixture(scope='module')
def repeats(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp('repeats')
    cfg = load_config('quick', overrides=SETTINGS)
    return cfg, out, repeated_splits(cfg, cohort, out, repeats=2, model=TINY, train={'progress': False})


def test_each_repeat_is_its_own_subject_grouped_split(repeats):
    cfg, out, res = repeats
    test = []
    for r in (0, 1):
        s = pd.read_csv(out/f'repeat_{r}'/'splits.csv', dtype={'subject_id': str})
        assert not s.subject_id.duplicated().any()          # no subject in two splits of one repeat
        assert set(s.split) == {'train', 'val', 'test'}
        test.append(set(s.subject_id[s.split == 'test']))
        p = pd.read_csv(out/f'repeat_{r}'/'predictions_by_model.csv', dtype={'subject_id': str})
        assert set(p.subject_id[p.split == 'test']) <= test[-1]
    assert test[0] != test[1]                                # a different split per repeat
    assert res['runs'].seed.tolist() == [cfg.seed, cfg.seed + 1] and res['runs'].action.tolist() == ['trained', 'trained']


def test_tables_have_the_documented_columns(repeats):
    cfg, out, res = repeats
    for name, cols in TABLES.items():
        t = pd.read_csv(out/f'{name}.csv')
        assert set(cols) <= set(t.columns), (name, set(cols) - set(t.columns))
    t1 = pd.read_csv(out/'table1_repeats.csv')
    assert sorted(t1.repeat.unique()) == [0, 1] and {'aligned', 'naive', 'enet_rna', 'stacked', 'truth'} <= set(t1.model)
    rep = pd.read_csv(out/'table1_repeated.csv').set_index('model')
    assert (rep.n_repeats == 2).all()
    mae = t1[t1.model == 'aligned'].MAE
    assert abs(rep.loc['aligned', 'MAE_mean'] - mae.mean()) < 1e-9 and abs(rep.loc['aligned', 'MAE_sd'] - mae.std()) < 1e-9
    d = pd.read_csv(out/'table1_paired_differences.csv')
    assert {'aligned - naive', 'naive - best unimodal network', 'unimodal_rna - enet_rna', 'aligned - stacked'} <= set(d.comparison)
    two = d[d.n_repeats == 2]                                # an organ's comparison may lack subjects in one repeat
    assert (d.n_repeats <= 2).all() and len(two) and ((two.t_low <= two.mean_diff) & (two.mean_diff <= two.t_high)).all()
    assert ((two.corrected_low <= two.t_low) & (two.t_high <= two.corrected_high)).all()   # the correction widens
    by = pd.read_csv(out/'table1_paired_differences_by_repeat.csv')
    an = by[by.comparison == 'aligned - naive'].set_index('repeat')
    assert ((an.MAE_a - an.MAE_b - an['diff']).abs() < 1e-9).all() and (an.low <= an.high).all()


def test_rerun_reads_finished_repeats(repeats, cohort, caplog):
    cfg, out, res = repeats
    files = {p: p.stat().st_mtime_ns for r in (0, 1) for p in (out/f'repeat_{r}').rglob('*') if p.is_file()}
    with caplog.at_level(logging.INFO, logger='organage'):
        again = repeated_splits(cfg, cohort, out, repeats=2, model=TINY, train={'progress': False})
    assert again['runs'].action.tolist() == ['finished', 'finished']
    assert sum('not retrained' in m for m in caplog.messages) == 2
    assert {p: p.stat().st_mtime_ns for p in files} == files    # nothing rewritten, nothing retrained
    assert not {p for r in (0, 1) for p in (out/f'repeat_{r}').rglob('*') if p.is_file()} - set(files)
    pd.testing.assert_frame_equal(again['paired_differences'], res['paired_differences'])


def test_main_run_is_repeat_zero(repeats, cohort, tmp_path):
    cfg, out, res = repeats
    one = repeated_splits(cfg, cohort, tmp_path, main_run=out/'repeat_0', repeats=1, model=TINY, train={'progress': False})
    assert one['runs'].action.tolist() == ['main run'] and not (tmp_path/'repeat_0').exists()
    pd.testing.assert_frame_equal(one['repeats'].drop(columns='run'), res['repeats'][res['repeats'].repeat == 0].drop(columns='run'))


def test_finished_repeat_with_other_settings_is_refused(repeats, cohort):
    cfg, out, res = repeats
    other = load_config('quick', overrides={**SETTINGS, 'epochs': 2})
    with pytest.raises(ConfigError, match='other settings.*run_config.epochs'):
        repeated_splits(other, cohort, out, repeats=2, model=TINY, train={'progress': False})
