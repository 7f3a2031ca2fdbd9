"""Radiographs of several body sites (seed 004): the loader's site column, the simulator's anatomy against the
muscle organ's biological age, the per-site models against the training mean and the noise floor, and the
hierarchical ensemble across sites against the best single site."""
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from organage.core import DataError
from organage.data.chexpert import read_chexpert
from organage.data.synth import simulate_cohort
from organage.data.msk_sites import simulate_msk_sites_files, read_msk_sites, site_images, check_msk_sites, MSK_SITES


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    root = simulate_cohort(tmp_path_factory.mktemp('msk')/'c', subjects=500, n_genes=200, image_size=32, volume_size=16, seed=4)
    simulate_msk_sites_files(root, seed=0, size=32, fraction=0.8, p_site=dict(knee=0.9, hip=0.9, spine=0.3, hand=0.3, full_body=0.3))
    return root


# ---------------------------------------------------------------- loader
def test_site_column_unknown_site_named_and_counted(tmp_path):
    ds = tmp_path/'msk'/'MSK-v1.0'; ds.mkdir(parents=True)
    (ds/'train.csv').write_text('Path,Sex,Age,Frontal/Lateral,AP/PA,Site\n'
                                'MSK-v1.0/a/patient00001/study1/view1_frontal.jpg,Female,61.5,Frontal,AP,knee\n'
                                'MSK-v1.0/a/patient00001/study1/view2_frontal.jpg,Female,61.5,Frontal,AP,Pelvis\n'
                                'MSK-v1.0/a/patient00002/study1/view1_frontal.jpg,Male,50,Frontal,AP,shoulder\n'
                                'MSK-v1.0/a/patient00003/study1/view1_frontal.jpg,Male,50,Frontal,AP,shoulder\n'
                                'MSK-v1.0/a/patient00004/study1/view1_lateral.jpg,Male,70,Lateral,LL,Spine\n')
    a = read_chexpert(tmp_path/'msk')
    assert a.obs.site.tolist() == ['knee', 'hip', 'spine'] and a.obs.age.tolist() == [61.5, 61.5, 70.0]
    assert (a.obs.organ == 'muscle').all() and a.uns['dropped'] == {'unknown_site': 2} and a.uns['excluded'] == {}
    msg = [m for m in a.uns['problems'] if 'unknown body site' in m]
    assert len(msg) == 1 and str(ds/'train.csv') in msg[0] and "line 4: 'shoulder'" in msg[0] and "line 5: 'shoulder'" in msg[0]
    assert a.uns['sites'] == {'hip': 1, 'knee': 1, 'spine': 1}


def test_chexpert_csv_without_site_reads_as_before(cohort):
    "A simulated CheXpert folder (no site column): every frontal row, chest, organ lung, batch = AP/PA, in the CSV's order."
    a = read_chexpert(cohort/'chexpert')
    csv = pd.concat([pd.read_csv(cohort/'chexpert'/'CheXpert-v1.0-small'/f) for f in ('train.csv', 'valid.csv')
                     if (cohort/'chexpert'/'CheXpert-v1.0-small'/f).is_file()], ignore_index=True)
    fr = csv[csv['Frontal/Lateral'] == 'Frontal']
    assert a.obs_names.tolist() == fr.Path.tolist()
    assert (a.obs.site == 'chest').all() and (a.obs.organ == 'lung').all() and (a.obs.modality == 'xray').all()
    assert a.obs.batch.tolist() == fr['AP/PA'].tolist() and a.obs.age.tolist() == fr.Age.astype(float).tolist()
    assert a.uns['excluded'] == {'lateral_view': int((csv['Frontal/Lateral'] == 'Lateral').sum())} and a.uns['dropped'] == {}
    assert a.uns['chexpert']['site_source'] == 'default'


def test_links_file_missing_patient_is_named(cohort, tmp_path):
    import shutil
    m = tmp_path/'msk'; shutil.copytree(cohort/'msk', m)
    lk = pd.read_csv(m/'subject_links.csv', dtype=str); gone = lk.patient_id.iloc[0]
    lk.iloc[1:].to_csv(m/'subject_links.csv', index=False)
    with pytest.raises(DataError, match=f'images of patients without a subject.*{gone}'):
        read_msk_sites(m)


# ---------------------------------------------------------------- simulator
def test_anatomy_follows_muscle_biological_age(cohort):
    "The knee's joint-line band (brighter when the joint space narrows) follows the muscle organ's biological age, beyond chronological age."
    a = read_msk_sites(cohort)
    x, o = site_images(a, 'knee')
    truth = pd.read_csv(cohort/'truth.csv', dtype={'subject_id': str}).query("organ == 'muscle'").set_index('subject_id')
    band = x[:, 0, 13:19, 8:24].mean((1, 2))
    bio, age = truth.bio_age.loc[o.subject_id].to_numpy(), o.age.to_numpy()
    assert len(o) > 300 and stats.spearmanr(band, bio).statistic > 0.5
    # beyond age: the band's residual on age goes with the acceleration (OLS of band on age and acceleration)
    fit = sm.OLS(band, sm.add_constant(np.column_stack([age, bio - age]))).fit()
    assert fit.params[2] > 0 and fit.pvalues[2] < 1e-3, (fit.params, fit.pvalues)
    # check-data counts every image per site
    rep = check_msk_sites(cohort)
    assert rep['problems'] == [] and int(rep['counts'].images.sum()) == a.n_obs and set(rep['counts'].site) == set(MSK_SITES)


# ---------------------------------------------------------------- models and ensembles
@pytest.fixture(scope='module')
def crossfit(cohort, tmp_path_factory):
    import torch
    from organage.model.sites import SiteSettings, site_arrays, cross_fit_sites
    torch.set_num_threads(1)
    data = site_arrays(read_msk_sites(cohort), size=32, sites=['knee', 'hip'])
    s = SiteSettings(epochs=15, patience=6, device='cpu', pcr_folds=2)
    return data, cross_fit_sites(data, tmp_path_factory.mktemp('nets'), s)


def test_site_models_beat_the_training_mean(cohort, crossfit):
    from organage.evaluate.truth import read_truth
    from organage.model.sites import site_table
    data, cf = crossfit
    t = site_table(cf, read_truth(cohort), pd.read_csv(cohort/'msk'/'truth_sites.csv'))
    allf = t[t.scope == 'all folds'].set_index('model')
    assert set(allf.index) == {'cnn_knee', 'pcr_knee', 'cnn_hip', 'pcr_hip'}
    assert (allf.MAE < allf.MAE_train_mean - 3).all(), allf[['MAE', 'MAE_train_mean']]          # they learned age
    assert (allf.MAE > allf.noise_floor).all()                                                  # and stay above the floor
    held = cf.oof[cf.oof.split == 'test']
    for site, (x, o) in data.items():                                                          # every subject held out once
        assert sorted(held[held.model == f'cnn_{site}'].subject_id) == sorted(set(o.subject_id))


def test_ensemble_no_worse_than_best_site(crossfit):
    from organage.model.ensembles import EnsembleSettings
    from organage.model.sites import site_ensemble, ensemble_vs_sites
    data, cf = crossfit
    ens = site_ensemble(cf.oof, settings=EnsembleSettings(l1_ratio=(0.5, 1.0), n_alphas=10, inner_cv=3))
    for r in ens.records: assert not (r['fit'] & r['applied'])
    held = pd.concat([cf.oof[cf.oof.split == 'test'], ens.predictions[ens.predictions.split == 'test']], ignore_index=True)
    vs = ensemble_vs_sites(held, ens, n_boot=200).set_index('site')
    # on the subjects of each site, the muscle ensemble (which also reads their other site) is no worse than the site alone
    assert (vs['diff'] < 0.25).all(), vs[['MAE_ensemble', 'MAE_best', 'diff', 'low', 'high']]
    assert (vs['diff'] < 0).any()
