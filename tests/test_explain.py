"""Explanations: integrated gradients (genes, latents), Grad-CAM (2-D, 3-D), alignment diagnostics.

Known answers on hand-made models, cross-checks against Captum / MONAI / scipy, and the bad-input messages."""
import numpy as np, pandas as pd, pytest, torch, anndata as ad
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from hypothesis import given, settings, strategies as st, HealthCheck
from torch import nn

from organage.core import OrganageError, save_figure
from organage.explain.attribution import (integrated_gradients, mean_baseline, feature_attribution, top_features,
    attribution_summary, shared_features, cumulative_attribution, precision_at_k, read_truth_genes, latent_attribution,
    plot_rank_overlay, plot_cumulative_attribution, explain_genes, explain_latents, rna_age_forward)
from organage.explain.gradcam import (gradcam, group_maps, group_gradcam, age_groups, gap_groups, top_fraction,
    find_layer, plot_group_maps, plot_gap_maps, model_gradcam, model_group_gradcam)
from organage.explain.embedding import (alignment_metrics, compare_alignment, knn_modality_mixing, modality_silhouette,
    age_component_correlation, age_probe_r2, umap_embedding, plot_alignment_umap, observation_latents)

# ---------------------------------------------------------------- integrated gradients

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 7), p=st.integers(1, 9), steps=st.integers(2, 20), bs=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_ig_linear_equals_weight_times_difference(n, p, steps, bs, seed):
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(p, generator=g), torch.randn(1, generator=g)
    X, base = torch.randn(n, p, generator=g) * 3, torch.randn(p, generator=g)
    A = integrated_gradients(lambda x: x @ w + b, X, base, n_steps=steps, batch_size=bs, progress=False)
    np.testing.assert_allclose(A, (w * (X - base)).numpy(), rtol=1e-4, atol=1e-4)


def test_ig_completeness_and_agreement_with_captum():
    from captum.attr import IntegratedGradients
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 1))
    X, base = torch.randn(30, 10), torch.randn(10)
    A, d = integrated_gradients(net, X, base, n_steps=64, batch_size=7, progress=False, return_delta=True)
    with torch.no_grad(): gap = (net(X) - net(base[None]))[:, 0].numpy()
    np.testing.assert_allclose(A.sum(1), gap, atol=2e-3)          # completeness
    ref = IntegratedGradients(lambda x: net(x)[:, 0]).attribute(X, base[None].expand_as(X), n_steps=64)
    np.testing.assert_allclose(A, ref.detach().numpy(), atol=1e-5)  # batching does not change the answer


def test_ig_memory_is_bounded_by_batch_times_steps():
    seen = []
    def f(x): seen.append(len(x)); return x.sum(1)
    integrated_gradients(f, np.ones((100, 5)), n_steps=8, batch_size=10, progress=False)
    assert max(seen) <= 10 * 8 and sum(seen) == 100 * 8 + 2 * 100   # path points, plus inputs and baselines for the completeness gap


def _expression(n_per_organ=150, p=300, seed=0):
    "Toy cohort: per organ 10 own age genes + 5 shared age genes among p null genes; ages 20-80."
    rng = np.random.default_rng(seed)
    organs = ['liver', 'kidney']
    truth, rows, Xs = [], [], []
    shared = list(range(5))
    own = {'liver': list(range(5, 15)), 'kidney': list(range(15, 25))}
    for o in organs:
        age = rng.uniform(20, 80, n_per_organ)
        X = rng.normal(size=(n_per_organ, p))
        for j in shared + own[o]: X[:, j] += 0.05 * (age - 50)
        Xs.append(X); rows.append(pd.DataFrame(dict(organ=o, age=age)))
        truth += [dict(organ=o, gene_id=f'ENSG{j:05d}', symbol=f'GENE{j}', effect=0.05, programme='organ') for j in own[o]]
    truth += [dict(organ='all', gene_id=f'ENSG{j:05d}', symbol=f'GENE{j}', effect=0.05, programme='shared') for j in shared]
    obs = pd.concat(rows, ignore_index=True)
    obs['subject_id'] = [f'S{i}' for i in range(len(obs))]; obs.index = obs.index.astype(str)
    var = pd.DataFrame(dict(symbol=[f'GENE{j}' for j in range(p)]), index=[f'ENSG{j:05d}' for j in range(p)])
    return ad.AnnData(np.vstack(Xs).astype(np.float32), obs=obs, var=var), pd.DataFrame(truth)


def test_trained_model_recovers_true_age_genes(tmp_path):
    "Train a ridge age model per organ; IG's top-20 genes must be the true age genes (precision@20 >= 0.7)."
    from sklearn.linear_model import RidgeCV
    A, truth = _expression()
    truth.to_csv(tmp_path / 'truth_genes.csv', index=False)
    train, test = A[::2].copy(), A[1::2].copy()
    fwd = {}
    for o in ['liver', 'kidney']:
        s = train[train.obs.organ == o]
        r = RidgeCV(alphas=np.logspace(-1, 4, 11)).fit(s.X, s.obs.age)
        w, b = torch.tensor(r.coef_, dtype=torch.float32), float(r.intercept_)
        fwd[o] = (lambda w, b: lambda x: x @ w + b)(w, b)
    res = feature_attribution(fwd, test, mean_baseline(train), kind='gene', n_steps=8, progress=False)
    p = precision_at_k(res, read_truth_genes(tmp_path / 'truth_genes.csv'), k=20).set_index('organ')
    assert (p['precision'] >= 0.7).all(), p
    assert (p['chance'] < 0.1).all()
    assert (precision_at_k(res, truth, k=15)['precision'] >= 0.9).all()      # 15 true genes per organ
    assert {f'ENSG{j:05d}' for j in range(5)} <= set(shared_features(res, k=20).feature)  # the shared programme
    s = attribution_summary(res).set_index('organ')
    assert ((s['top5_share_of_top20'] > 0.25) & (s['top5_share_of_top20'] < 0.6)).all()   # 15 genes of similar effect
    # figures save
    save_figure(plot_rank_overlay(res), tmp_path / 'fig08_gene_attribution.png')
    save_figure(plot_cumulative_attribution(res, 'liver'), tmp_path / 'fig10.png')
    assert (tmp_path / 'fig08_gene_attribution.png').stat().st_size > 1000
    plt.close('all')


def test_bad_requests_list_what_is_available():
    A, _ = _expression(20, 30)
    fwd = {'liver': lambda x: x.sum(1), 'kidney': lambda x: x.sum(1)}
    with pytest.raises(OrganageError, match="organ 'heart' has no samples.*available organs: kidney, liver"):
        feature_attribution(fwd, A, organs=['heart'], progress=False)
    with pytest.raises(OrganageError, match='subject id.*GTEX-X.*available subjects: S0'):
        feature_attribution(fwd, A, subject_ids='GTEX-X', progress=False)
    with pytest.raises(OrganageError, match="organ 'kidney' is not one the model predicts; available organs: liver"):
        feature_attribution({'liver': fwd['liver']}, A, progress=False)
    with pytest.raises(OrganageError, match='available organs: kidney, liver'):
        cumulative_attribution(feature_attribution(fwd, A, n_steps=2, progress=False), 'lung')
    one = feature_attribution(fwd, A, subject_ids=['S0'], n_steps=2, progress=False)
    assert one.table.n_samples.unique().tolist() == [1] and one.organs == ['liver']


def _organ_model(modalities=('rna', 'xray', 'mri'), organs=('brain', 'kidney', 'liver', 'lung'), n_genes=30, kind='aligned', **kw):
    from organage.model.fusion import OrganAgeModel, ModelConfig
    torch.manual_seed(0)
    return OrganAgeModel(ModelConfig(kind=kind, modalities=list(modalities), organs=list(organs), n_genes=n_genes, latent_dim=16,
                                     proj_dim=8, enc_width=4, enc_depth=2, n_heads=2, n_layers=1, **kw)).eval()


def test_adapters_on_the_organ_age_model():
    A, _ = _expression(20, 30)
    m = _organ_model()
    g = explain_genes(m, A, A, n_steps=16, progress=False)
    assert g.organs == ['kidney', 'liver'] and max(g.delta.values()) < 0.05
    lat = explain_latents(m, A, A, organs=['liver'], n_steps=16, progress=False)
    assert lat.table.feature.nunique() == 16 and lat.kind == 'latent'
    with pytest.raises(OrganageError, match='no RNA encoder.*its modalities: xray, mri'):
        explain_genes(_organ_model(('xray', 'mri')), A, A)
    with pytest.raises(OrganageError, match="organ 'heart' is not one the model predicts; available organs: brain, kidney, liver, lung"):
        explain_latents(m, A, A, organs=['heart'])


# ---------------------------------------------------------------- the model's explanation interface
# explain/ used to rebuild the model's forward pass itself; these are those formulas, verbatim, as the reference
# that OrganAgeModel.encode_modality / fuse_latents / to_years must reproduce bit for bit.

def _old_encode(model, modality, x):
    return model.vibs[modality](model.encoders[modality](x))[1]


def _old_fuse(model, z, modality, organ_idx):
    from organage.model.fusion import scatter_tokens
    from organage.model.encoders import MODALITIES
    cfg, n = model.cfg, z.shape[0]
    subj = torch.arange(n, device=z.device)
    mod = torch.full((n,), MODALITIES.index(modality), dtype=torch.long, device=z.device)
    org = torch.full((n,), organ_idx, dtype=torch.long, device=z.device)
    if cfg.kind == 'aligned':
        tok, valid, m, o = scatter_tokens(z, subj, n, mod, org)
        h = model.fusion(tok, m, o, valid)
    else:
        h = model.fusion(z, subj, mod, org, n)
    mu, var = model.head(h)
    return mu[:, organ_idx] * cfg.age_scale + cfg.age_center, var[:, organ_idx].sqrt() * cfg.age_scale


_INPUTS = {'rna': lambda g: torch.randn(5, 20, generator=g), 'xray': lambda g: torch.rand(5, 1, 16, 16, generator=g),
           'mri': lambda g: torch.rand(3, 1, 16, 16, 16, generator=g)}


@pytest.mark.parametrize('kind,modalities,kw', [('aligned', ('rna', 'xray', 'mri'), {}), ('aligned', ('rna', 'xray', 'mri'), dict(n_latents=2)),
                                                ('aligned', ('rna', 'mri'), dict(fusion_mode='global')), ('naive', ('rna', 'xray', 'mri'), {}),
                                                ('unimodal', ('rna',), {})])
def test_model_interface_is_bit_identical_to_the_old_formulas(kind, modalities, kw):
    from organage.model.fusion import toy_batch
    m = _organ_model(modalities, organs=('brain', 'heart', 'lung'), n_genes=20, kind=kind, **kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in modalities:
            x = _INPUTS[mod](g)
            z = m.encode_modality(mod, x)
            assert torch.equal(z, _old_encode(m, mod, x))
            for k, organ in enumerate(m.cfg.organs):
                age, sigma = m.fuse_latents(z, mod, organ)
                old_age, old_sigma = _old_fuse(m, z, mod, k)
                assert torch.equal(age, old_age) and torch.equal(sigma, old_sigma), (mod, organ)
        b = {k: v for k, v in toy_batch().items() if k == 'subject_id' or k.split('_')[0] in modalities}
        c, out = m.cfg, m(b)
        mu, sd = out['mu'].float() * c.age_scale + c.age_center, out['var'].float().sqrt() * c.age_scale
        want = [(b['subject_id'][i], c.organs[o], float(mu[i, o]), float(sd[i, o])) for i, o in out['target_mask'].nonzero().tolist()]
        assert [(r['subject_id'], r['organ'], r['mu'], r['sigma']) for r in m.predict(b)] == want
        t = out['target_mask']
        assert torch.equal(m.loss(b)['mae'], ((out['mu'][t].float() * c.age_scale + c.age_center) - out['target'][t]).abs().mean())


@pytest.mark.parametrize('kind', ['aligned', 'naive'])
def test_explanations_unchanged_by_the_model_interface(kind):
    "Gene and latent IG, and Grad-CAM, equal what the old hand-built forward functions give, exactly."
    A, _ = _expression(20, 30)
    m = _organ_model(kind=kind)
    org = m.cfg.organs
    old_lat = lambda z, organ: _old_fuse(m, z, 'rna', org.index(organ))[0]
    old_enc = lambda x: _old_encode(m, 'rna', x)
    ig = dict(n_steps=8, progress=False)
    new = explain_genes(m, A, A, **ig)
    ref = feature_attribution(lambda x, organ: old_lat(old_enc(x), organ), A, mean_baseline(A), organs=['kidney', 'liver'],
                              model_organs=org, kind='gene', **ig)
    pd.testing.assert_frame_equal(new.table, ref.table, check_exact=True)
    assert new.delta == ref.delta and all(np.array_equal(new.samples[o][1], ref.samples[o][1]) for o in ref.samples)
    new = explain_latents(m, A, A, organs=['liver'], **ig)
    ref = latent_attribution(old_enc, old_lat, A, A, organs=['liver'], model_organs=org, **ig)
    pd.testing.assert_frame_equal(new.table, ref.table, check_exact=True)
    assert np.array_equal(new.samples['liver'][1], ref.samples['liver'][1])
    rng = np.random.default_rng(0)
    for mod, organ, shape in (('xray', 'lung', (3, 16, 16)), ('mri', 'brain', (2, 16, 16, 16))):
        imgs = rng.random(shape, dtype=np.float32)
        want = gradcam(m.encoders[mod], imgs, forward=lambda x: _old_fuse(m, _old_encode(m, mod, x), mod, org.index(organ))[0], progress=False)
        assert np.array_equal(model_gradcam(m, mod, imgs, progress=False), want), mod


# ---------------------------------------------------------------- Grad-CAM

def _blob_images(sd, n, size, rng, signal_at, distractor_at, age):
    "Noise images with a bright blob whose brightness encodes age and a dark distractor blob of random depth."
    x = rng.normal(0, 0.05, (n,) + (size,) * sd).astype(np.float32)
    sl = lambda c: (slice(None),) + tuple(slice(c - 2, c + 2) for _ in range(sd))
    x[sl(signal_at)] += (0.2 + (age - 20) / 60)[(slice(None),) + (None,) * sd]
    x[sl(distractor_at)] -= rng.uniform(0.2, 1.2, n)[(slice(None),) + (None,) * sd]
    return x


def _train_cnn(sd, x, age, steps=60):
    "A small CNN (two 3x3 convolutions, global average pooling) trained to predict age."
    Conv, Pool = (nn.Conv2d, nn.AdaptiveAvgPool2d) if sd == 2 else (nn.Conv3d, nn.AdaptiveAvgPool3d)
    torch.manual_seed(0)
    net = nn.Sequential(Conv(1, 6, 3, padding=1), nn.ReLU(), Conv(6, 6, 3, padding=1), nn.ReLU(), Pool(1), nn.Flatten(), nn.Linear(6, 1))
    opt = torch.optim.Adam(net.parameters(), 2e-2)
    X, y = torch.as_tensor(x)[:, None], torch.as_tensor((age - 50) / 20, dtype=torch.float32)
    for _ in range(steps):
        opt.zero_grad(); loss = ((net(X)[:, 0] - y) ** 2).mean(); loss.backward(); opt.step()
    return net, float(loss.detach())


@pytest.mark.parametrize('sd,size', [(2, 20), (3, 12)])
def test_gradcam_of_a_trained_cnn_peaks_on_the_age_signal(sd, size):
    "The age signal is a bright blob; a dark blob of random depth is a distractor: Grad-CAM must sit on the bright one."
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 80, 64 if sd == 2 else 40)
    x = _blob_images(sd, len(age), size, rng, signal_at=3, distractor_at=size - 4, age=age)
    net, loss = _train_cnn(sd, x, age)
    assert loss < 0.1, loss   # standardised MSE: the net has learnt the signal
    g = group_maps(gradcam(net, x, progress=False), ['all'] * len(age), images=x)
    m = g.cam[0]
    sig = m[(slice(1, 5),) * sd].mean(); dis = m[(slice(size - 6, size - 2),) * sd].mean()
    assert sig > 3 * dis and sig > 2 * m.mean(), (sig, dis, m.mean())
    tbl = group_gradcam(net, x, age_groups(age), top=0.2, batch_size=32, progress=False)
    assert tbl.group.tolist() == sorted(set(age_groups(age))) and tbl.n.sum() == len(age)
    fig = plot_group_maps(tbl); assert fig.axes[-1].get_ylabel() == 'mean Grad-CAM (normalised, 0-1)'
    plt.close('all')


def test_gradcam_agrees_with_monai():
    "Our Grad-CAM equals MONAI's GradCAM on the same layer: raw maps, and upsampled maps after min-max scaling."
    from monai.visualize import GradCAM
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 1)).eval()
    x = torch.rand(3, 1, 20, 20)
    cam = GradCAM(nn_module=net, target_layers='6')
    raw = cam.compute_map(x, class_idx=0)[:, 0].detach().numpy()                 # (3, 10, 10), ReLU'd, not upsampled
    np.testing.assert_allclose(gradcam(net, x.numpy(), layer='6', upsample=False, progress=False), raw, rtol=1e-4, atol=1e-9)
    ours = gradcam(net, x.numpy(), layer='6', progress=False)
    lo, hi = ours.reshape(3, -1).min(1)[:, None, None], ours.reshape(3, -1).max(1)[:, None, None]
    ref = cam(x, class_idx=0)[:, 0].detach().numpy()     # MONAI's default normaliser maps (min, max) to (1, 0)
    np.testing.assert_allclose((ours - lo) / (hi - lo), 1 - ref, atol=1e-4)


def test_gap_groups_and_difference_maps(tmp_path):
    x = np.zeros((6, 12, 12, 12), np.float32); x[:3, 2:5, 2:5, 2:5] = 1; x[3:, 7:10, 7:10, 7:10] = 1
    maps = x.copy()   # pretend Grad-CAM followed the bright cube
    gaps = np.array([-10, -9, -8, 8, 9, 10.])
    t = group_maps(maps, gap_groups(gaps, 5), images=x, top=0.2)
    assert t.group.tolist() == ['accelerated', 'decelerated']
    save_figure(plot_gap_maps(t), tmp_path / 'gap.png'); plt.close('all')
    assert np.isclose(top_fraction(np.arange(100.)[None], 0.2)[0].astype(bool).sum(), 20)


def test_gradcam_bad_layer_and_model_adapters():
    from organage.model.encoders import SmallCNN
    with pytest.raises(OrganageError, match=r"layer 'conv9' does not exist in SmallCNN; convolution layers: features\.0"):
        find_layer(SmallCNN(2, 4, width=4, depth=2), 'conv9')
    m = _organ_model(n_genes=30)
    imgs = np.random.default_rng(0).random((4, 16, 16), dtype=np.float32)
    maps = model_gradcam(m, 'xray', imgs, progress=False)
    assert maps.shape == imgs.shape
    # the Grad-CAM of the lung's predicted age, by hand: hooks on the encoder's last feature map, channel weights = spatial mean
    # of the gradients, ReLU of the weighted sum, bilinear to the input grid
    import torch.nn.functional as F
    from organage.explain.gradcam import image_age_forward
    from test_reference_checks import hand_gradcam
    enc = m.encoder('xray'); x = torch.as_tensor(imgs)[:, None]
    name, layer = find_layer(enc, None, example=x[:1])
    ref = hand_gradcam(layer, lambda z: image_age_forward(m, 'xray')(z), x.clone())
    ref = F.interpolate(torch.as_tensor(ref)[:, None], size=imgs.shape[1:], mode='bilinear')[:, 0].numpy()
    assert ref.max() > 0
    np.testing.assert_allclose(maps, ref, rtol=1e-4, atol=1e-6 * ref.max())
    t = model_group_gradcam(m, 'xray', imgs, ['a', 'a', 'b', 'b'], top=0.2, progress=False)
    assert t.n.tolist() == [2, 2]
    with pytest.raises(OrganageError, match="no image encoder for modality 'mri'; its image modalities: xray"):
        model_gradcam(_organ_model(('rna', 'xray')), 'mri', imgs)


# ---------------------------------------------------------------- alignment diagnostics

def _latent_sets(n=240, seed=0):
    rng = np.random.default_rng(seed)
    mod = np.repeat(['rna', 'xray', 'mri'], n // 3); age = rng.uniform(20, 80, n)
    off = {'rna': 0, 'xray': 1, 'mri': 2}
    before = np.eye(8)[[off[m] for m in mod]] * 5 + rng.normal(size=(n, 8)) + np.c_[(age - 50) / 60, np.zeros((n, 7))]
    after = np.c_[(age - 50) / 10, rng.normal(size=(n, 7))]
    return before, after, mod, age


def test_metrics_cross_checked():
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA
    from sklearn.metrics import pairwise_distances
    before, after, mod, age = _latent_sets()
    # kNN mixing by brute force
    D = pairwise_distances(after, metric='cosine'); np.fill_diagonal(D, np.inf)
    nb = np.argsort(D, 1)[:, :10]
    obs = (mod[nb] != mod[:, None]).mean(1).mean(); exp = np.mean([(len(mod) - (mod == m).sum()) / (len(mod) - 1) for m in mod])
    assert abs(knn_modality_mixing(after, mod, k=10) - obs / exp) < 0.02
    # Spearman of PC1 with age, against scipy on sklearn's PCA
    pc = PCA(3, random_state=0).fit_transform(after)
    assert np.isclose(abs(age_component_correlation(after, age, 3).rho[0]), abs(spearmanr(pc[:, 0], age).statistic))
    t = compare_alignment(before, after, mod, age).set_index('metric')
    assert t.loc['modality_silhouette', 'before'] > 0.3 > t.loc['modality_silhouette', 'after']
    assert t.loc['knn_modality_mixing', 'after'] > 0.8 > 0.2 > t.loc['knn_modality_mixing', 'before']
    assert t.loc['age_probe_r2', 'after'] > 0.9 and t.as_expected.all()


def test_metric_bad_input():
    with pytest.raises(OrganageError, match='needs two modalities'):
        modality_silhouette(np.random.rand(10, 3), ['rna'] * 10)
    with pytest.raises(OrganageError, match='age has 3 values for 10 latent rows'):
        age_probe_r2(np.random.rand(10, 3), [1, 2, 3])
    with pytest.raises(OrganageError, match='non-finite'):
        alignment_metrics(np.full((10, 3), np.nan), ['a', 'b'] * 5, np.arange(10))


def test_observation_latents_feed_the_metrics():
    from organage.model.fusion import toy_batch
    m = _organ_model(n_genes=20, organs=('brain', 'heart', 'lung'))
    lat = observation_latents(m, [toy_batch(seed=s) for s in range(8)])
    assert lat.n_obs == 32 and set(lat.obs.modality) == {'rna', 'xray', 'mri'}
    r = alignment_metrics(lat, k=5, cv=4, groups=lat.obs.subject_id.to_numpy() + lat.obs.index.to_numpy())
    from sklearn.metrics import silhouette_score
    assert r['n'] == 32 and r['modality_silhouette'] == pytest.approx(
        silhouette_score(lat.obsm['X_latent'], lat.obs.modality.astype(str), metric='cosine'), abs=1e-6)   # float32 latents


@pytest.fixture(scope='module')
def umaps():
    "The one UMAP fit of this file (numba compiles on first use: ~50 s)."
    before, after, mod, age = _latent_sets(150)
    return umap_embedding(before), umap_embedding(after), mod, age, compare_alignment(before, after, mod, age)


@pytest.mark.slow
def test_umap_figure(umaps, tmp_path):
    b, a, mod, age, t = umaps
    assert b.shape == a.shape == (150, 2) and np.isfinite(b).all()
    fig = plot_alignment_umap(b, a, mod, age, metrics=t)
    assert [ax.get_xlabel() for ax in fig.axes[:1]] == ['UMAP 1 (a.u.)']
    save_figure(fig, tmp_path / 'umap.png'); plt.close('all')
    assert (tmp_path / 'umap.png').stat().st_size > 1000


def test_cross_modal_retrieval_matches_brute_force():
    from organage.explain.embedding import cross_modal_retrieval
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(40, 5)); mod = np.array(['rna', 'xray'] * 20); sid = np.repeat(np.arange(20), 2)
    sid[-4:] = [100, 101, 102, 103]                     # some subjects seen once: not anchors
    Z[1::2] = Z[0::2] + rng.normal(0, 0.8, (20, 5))     # partners are noisy copies
    U = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    ranks = []
    for i in range(40):
        for j in range(40):
            if mod[j] != mod[i] and sid[j] == sid[i]:
                negs = [k for k in range(40) if mod[k] != mod[i] and sid[k] != sid[i]]
                ranks.append((sum(U[i] @ U[k] > U[i] @ U[j] for k in negs) + 1) / (len(negs) + 1))
    r = cross_modal_retrieval(Z, mod, sid, chunk=7)
    assert r['n_pairs'] == len(ranks) == 36
    assert np.isclose(r['retrieval_median_rank'], np.median(ranks))
    assert np.isclose(r['retrieval_top1'], np.mean(np.isclose(ranks, 1 / 20)))
