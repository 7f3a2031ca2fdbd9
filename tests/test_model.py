"Model parts on hand-made tensors: encoders, VIB, InfoNCE and its positives, fusion masks, Gaussian head, baselines."
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from organage.core import ConfigError
from organage.model.encoders import make_encoder, MLPEncoder, SmallCNN, RandomShift, monai_resnet, load_backbone_weights
from organage.model.alignment import VIB, kl_standard_normal, info_nce, subject_positives, age_positives, positive_mask
from organage.model.fusion import (ModelConfig, OrganAgeModel, FusionTransformer, GaussianHead, gaussian_nll,
                                   scatter_tokens, toy_batch)

SMALL = dict(n_genes=20, latent_dim=16, proj_dim=8, enc_width=4, enc_depth=2, n_heads=2, n_layers=1)


# ---------- encoders ----------
@pytest.mark.parametrize('modality,shape', [('rna', (3, 20)), ('xray', (3, 1, 32, 32)), ('mri', (2, 1, 16, 16, 16))])
def test_encoders_share_output_width(modality, shape):
    enc = make_encoder(modality, 24, n_genes=20, width=4, depth=2)
    assert enc(torch.randn(*shape)).shape == (shape[0], 24)


@pytest.mark.parametrize('sd,shape', [(2, (2, 1, 32, 32)), (3, (2, 1, 16, 16, 16))])
def test_monai_resnet_backbones(sd, shape):
    net = make_encoder('xray' if sd == 2 else 'mri', 12, backbone='resnet10')
    assert net(torch.randn(*shape)).shape == (2, 12)


def test_pretrained_weights_loaded_from_local_file(tmp_path):
    src = monai_resnet(2, 7, depth=10)
    torch.save(src.state_dict(), tmp_path / 'w.pt')
    dst = monai_resnet(2, 12, depth=10, pretrained_path=tmp_path / 'w.pt')
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / 'w.safetensors'))
    dst2 = monai_resnet(2, 12, depth=10, pretrained_path=tmp_path / 'w.safetensors')
    assert torch.equal(dst2.conv1.weight, src.conv1.weight)
    torch.save({'nothing': torch.zeros(1)}, tmp_path / 'bad.pt')
    with pytest.raises(ConfigError, match='no tensor matches'):
        load_backbone_weights(dst, tmp_path / 'bad.pt')


def _square(col, row=56, n=128, value=1.0):
    x = torch.zeros(1, 1, n, n); x[..., row:row + 8, col:col + 8] = value; return x


def test_gridded_cnn_keeps_where_a_square_is():
    "A square left or right of centre: pooled features are identical, a gridded CNN plus a linear probe tells them apart."
    torch.manual_seed(0)
    left = torch.cat([_square(32, row=r, value=v) for r in (40, 56, 72) for v in (0.5, 1.0, 2.0)])
    right = torch.cat([_square(80, row=r, value=v) for r in (40, 56, 72) for v in (0.5, 1.0, 2.0)])
    x, y = torch.cat([left, right]), torch.cat([torch.zeros(9), torch.ones(9)])
    with torch.no_grad():
        gap = SmallCNN(2, 8, width=4, depth=2).eval()
        assert torch.allclose(gap(left), gap(right), atol=1e-5)   # pooling cannot see the move (a multiple of the stride 16)
    net = SmallCNN(2, 1, width=4, depth=2, grid=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.binary_cross_entropy_with_logits(net(x)[:, 0], y); opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): acc = ((net.eval()(x)[:, 0] > 0).float() == y).float().mean().item()
    assert acc == 1.0


def test_random_shift_moves_whole_images_within_bounds_only_in_training():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 12, 12)
    sh = RandomShift(2)
    y = sh.train()(x)
    xp = F.pad(x, [2] * 4, mode='replicate')
    for b in range(16):   # every output is one window of its own padded input
        assert any(torch.equal(y[b], xp[b, :, i:i + 12, j:j + 12]) for i in range(5) for j in range(5))
    assert not torch.equal(y, x)
    torch.manual_seed(1); a = sh(x); torch.manual_seed(1); b = sh(x)
    assert torch.equal(a, b)                       # the global seed decides: a resumed epoch replays
    assert torch.equal(sh.eval()(x), x)
    v = torch.randn(2, 1, 6, 6, 6)
    assert RandomShift(1).train()(v).shape == v.shape


def test_new_encoder_options_add_no_tensors_to_old_layouts():
    "Input dropout and shifts hold no weights; older checkpoints (pooled CNN, plain MLP) load into the new classes."
    assert list(MLPEncoder(20, 4, hidden=(8,), in_dropout=0.5).state_dict()) == list(MLPEncoder(20, 4, hidden=(8,)).state_dict())
    assert list(SmallCNN(2, 4, width=4, shift=2).state_dict()) == list(SmallCNN(2, 4, width=4).state_dict())
    enc = MLPEncoder(20, 4, hidden=(8,), in_dropout=0.5).eval()
    x = torch.randn(3, 20)
    assert torch.equal(enc(x), enc(x))


# ---------- VIB ----------
def test_vib_kl_matches_torch_distributions():
    mu, lv = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * lv).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    want = torch.distributions.kl_divergence(q, p).sum(-1).mean()
    assert torch.allclose(kl_standard_normal(mu, lv), want, atol=1e-5)


def test_vib_samples_in_training_and_uses_mean_in_eval():
    torch.manual_seed(0)
    vib = VIB(4, 4)
    x = torch.randn(2000, 4)
    z, mu, lv = vib.train()(x)
    # reparameterised sample: (z - mu) / sigma is standard normal
    eps = ((z - mu) / (0.5 * lv).exp()).detach()
    assert abs(eps.mean().item()) < 0.05 and abs(eps.std().item() - 1) < 0.05
    z, mu, _ = vib.eval()(x)
    assert torch.equal(z, mu)


# ---------- InfoNCE ----------
def test_infonce_equals_clip_loss_on_matched_pairs():
    torch.manual_seed(1)
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    u = torch.cat([a, b]); mod = torch.tensor([0] * 5 + [1] * 5); subj = torch.arange(5).repeat(2)
    S = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / 0.2
    clip = (F.cross_entropy(S, torch.arange(5)) + F.cross_entropy(S.T, torch.arange(5))) / 2
    got = info_nce(u, subject_positives(subj, mod), tau=0.2, modality=mod)
    assert torch.allclose(got, clip, atol=1e-5)


def test_infonce_is_symmetric_in_modality_order_and_magnitude_invariant():
    torch.manual_seed(2)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    mod = torch.tensor([0] * 4 + [1] * 4); subj = torch.arange(4).repeat(2)
    pos = subject_positives(subj, mod)
    l1 = info_nce(torch.cat([a, b]), pos, 0.1, mod)
    l2 = info_nce(torch.cat([b, a]), pos, 0.1, mod)
    l3 = info_nce(torch.cat([a * 10, b * 0.01]), pos, 0.1, mod)   # cosine: magnitude does not matter
    assert torch.allclose(l1, l2, atol=1e-5) and torch.allclose(l1, l3, atol=1e-5)


def test_infonce_known_value_and_stability():
    e = torch.eye(3)
    mod = torch.tensor([0, 0, 0, 1, 1, 1]); subj = torch.tensor([0, 1, 2, 0, 1, 2])
    pos = subject_positives(subj, mod)
    # aligned orthogonal pairs at tau=1: -log(e / (e + 2)) per anchor
    assert math.isclose(info_nce(torch.cat([e, e]), pos, 1.0, mod).item(), -math.log(math.e / (math.e + 2)), rel_tol=1e-5)
    # tiny temperature and huge inputs stay finite, gradients too
    u = (torch.randn(6, 3) * 1e4).requires_grad_()
    loss = info_nce(u, pos, 1e-4, mod); loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(u.grad).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_infonce_invariant_to_permutation(seed):
    g = torch.Generator().manual_seed(seed)
    n = 8
    u = torch.randn(n, 4, generator=g); mod = torch.randint(0, 3, (n,), generator=g)
    age = torch.randint(20, 80, (n,), generator=g).float(); subj = torch.randint(0, 4, (n,), generator=g)
    pos = positive_mask(subj, mod, age, mode='auto')
    perm = torch.randperm(n, generator=g)
    a = info_nce(u, pos, 0.3, mod)
    b = info_nce(u[perm], pos[perm][:, perm], 0.3, mod[perm])
    assert torch.allclose(a, b, atol=1e-5)
    assert a.item() >= 0


def test_age_positives_without_matched_subjects():
    # unpaired cohort: every subject has one observation; positives come from matched age across modalities
    age = torch.tensor([21., 23, 44, 46, 80]); mod = torch.tensor([0, 1, 0, 1, 2]); subj = torch.arange(5)
    sex = torch.tensor([0, 0, 1, 0, 1])
    assert not subject_positives(subj, mod).any()
    binp = positive_mask(subj, mod, age, mode='auto', bin_width=5)
    assert binp.nonzero().tolist() == [[0, 1], [1, 0]]         # 5-year bins: 21/23 together, 44/46 apart
    both = age_positives(age, mod, 'bin', 10)
    assert both[2, 3] and both[3, 2] and not both[0, 2]
    assert not age_positives(age, mod, 'bin', 10, sex=sex)[2, 3]   # same age bin, other sex
    near = age_positives(age, mod, 'nearest')
    assert near[4, 2] and near[4, 3] and near[0, 1] and not near[0, 3]


def test_alignment_training_pulls_matched_pairs_together():
    "Two 'modalities' seeing the same latent through different random maps: InfoNCE learns to retrieve partners."
    torch.manual_seed(0)
    n, d = 64, 8
    s = torch.randn(n, d); A, B = torch.randn(d, 20), torch.randn(d, 30)
    xa, xb = s @ A + 0.1 * torch.randn(n, 20), s @ B + 0.1 * torch.randn(n, 30)
    fa, fb = torch.nn.Linear(20, 16), torch.nn.Linear(30, 16)
    mod = torch.tensor([0] * n + [1] * n); subj = torch.arange(n).repeat(2)
    pos = subject_positives(subj, mod)
    def recall():
        with torch.no_grad():
            S = F.normalize(fa(xa), dim=-1) @ F.normalize(fb(xb), dim=-1).T
            return (S.argmax(1) == torch.arange(n)).float().mean().item()
    r0 = recall()
    opt = torch.optim.Adam([*fa.parameters(), *fb.parameters()], lr=1e-2)
    for _ in range(150):
        loss = info_nce(torch.cat([fa(xa), fb(xb)]), pos, 0.1, mod); opt.zero_grad(); loss.backward(); opt.step()
    assert recall() > 0.9 > r0


# ---------- Gaussian head ----------
def test_gaussian_nll_matches_torch_and_variance_floor():
    mu, var, y = torch.randn(9), torch.rand(9) + 0.05, torch.randn(9)
    assert torch.allclose(gaussian_nll(mu, var, y), F.gaussian_nll_loss(mu, y, var, eps=1e-12), atol=1e-6)
    h = GaussianHead(5, var_min=0.04)
    _, v = h(torch.randn(100, 5) * 1e3)
    assert (v >= 0.04).all()


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(0, 2**16))
def test_beta_nll_mean_gradient_is_the_nll_gradient_times_var_to_beta(beta, seed):
    "beta-NLL: d/dmu = (mu - y) / var * var**beta / n; at beta=1 that is the squared error's gradient, halved."
    g = torch.Generator().manual_seed(seed)
    mu, var, y = torch.randn(7, generator=g), torch.rand(7, generator=g) * 3 + 0.05, torch.randn(7, generator=g)
    m = mu.clone().requires_grad_()
    gaussian_nll(m, var, y, beta=beta).backward()
    assert torch.allclose(m.grad, (mu - y) / var * var ** beta / 7, atol=1e-5)
    if beta == 1.0:
        m2 = mu.clone().requires_grad_(); (0.5 * ((m2 - y) ** 2).mean()).backward()
        assert torch.allclose(m.grad, m2.grad, atol=1e-6)


def test_beta_nll_variance_still_fits_the_squared_residual():
    "The weight is held constant: the variance's gradient vanishes at the squared residual and points to it, as under the NLL."
    torch.manual_seed(0)
    mu, y = torch.randn(20), torch.randn(20)
    r2 = (mu - y) ** 2
    for beta in (0.0, 0.5, 1.0):
        grads = []
        for f in (0.5, 1.0, 2.0):
            v = (f * r2).requires_grad_()
            gaussian_nll(mu, v, y, beta=beta).backward(); grads.append(v.grad)
        assert (grads[0] < 0).all() and torch.allclose(grads[1], torch.zeros(20), atol=1e-5) and (grads[2] > 0).all(), beta

def test_gaussian_head_learns_heteroscedastic_noise():
    "Trained with equation 5, the predicted sigma tracks the true noise level."
    torch.manual_seed(0)
    x = torch.rand(1000, 1)
    y = 2 * x[:, 0] + torch.randn(1000) * (0.1 + 0.9 * x[:, 0])
    h = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.GELU(), GaussianHead(16, 1e-4))
    opt = torch.optim.Adam(h.parameters(), lr=1e-2)
    for _ in range(300):
        mu, var = h(x); loss = gaussian_nll(mu, var, y); opt.zero_grad(); loss.backward(); opt.step()
    _, var = h(torch.tensor([[0.05], [0.95]]))
    lo, hi = var.sqrt().tolist()
    assert abs(lo - 0.145) < 0.08 and abs(hi - 0.955) < 0.2


# ---------- fusion ----------
def _tokens():
    torch.manual_seed(0)
    tok = torch.randn(2, 4, 8)
    mod = torch.tensor([[0, 1, 0, 2], [0, 0, 0, 0]])
    org = torch.tensor([[2, 2, 1, 0], [1, 0, 0, 0]])
    val = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    return tok, mod, org, val


@pytest.mark.parametrize('n_latents', [0, 2])
def test_organ_queries_read_only_their_organ(n_latents):
    tok, mod, org, val = _tokens()
    ft = FusionTransformer(8, 3, n_heads=2, n_layers=2, mode='organ', n_latents=n_latents).eval()
    tok2 = tok.clone(); tok2[0, 3] = torch.randn(8) * 3    # perturb subject 0's brain (organ 0) token
    a, b = ft(tok, mod, org, val), ft(tok2, mod, org, val)
    assert torch.allclose(a[0, 1:], b[0, 1:], atol=1e-5)  # heart and lung answers unchanged
    assert not torch.allclose(a[0, 0], b[0, 0], atol=1e-3)
    assert torch.allclose(a[1], b[1], atol=1e-6)          # the other subject is untouched
    g = FusionTransformer(8, 3, n_heads=2, n_layers=2, mode='global', n_latents=n_latents).eval()
    assert not torch.allclose(g(tok, mod, org, val)[0, 2], g(tok2, mod, org, val)[0, 2], atol=1e-3)


def test_padding_is_invisible():
    tok, mod, org, val = _tokens()
    ft = FusionTransformer(8, 3, n_heads=2, n_layers=2, mode='global').eval()
    a = ft(tok, mod, org, val)[1]
    tok2 = tok.clone(); tok2[1, 1:] = 1e3 * torch.randn(3, 8)   # garbage in padded slots
    assert torch.allclose(ft(tok2, mod, org, val)[1], a, atol=1e-5)
    alone = ft(tok[1:, :1], mod[1:, :1], org[1:, :1], val[1:, :1])[0]
    assert torch.allclose(alone, a, atol=1e-5)


def test_scatter_tokens_round_trip():
    z = torch.randn(7, 3); subj = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    tok, valid = scatter_tokens(z, subj, 4)
    assert tok.shape == (4, 4, 3) and valid.sum(1).tolist() == [2, 1, 4, 0]
    assert torch.equal(tok[valid], z[torch.argsort(subj, stable=True)])


@pytest.mark.parametrize('kind,mods', [('aligned', ['rna', 'xray', 'mri']), ('naive', ['rna', 'xray', 'mri']),
                                       ('unimodal', ['rna']), ('unimodal', ['mri'])])
def test_models_fit_a_hand_made_batch(kind, mods):
    torch.manual_seed(0)
    model = OrganAgeModel(ModelConfig(kind=kind, modalities=mods, dropout=0.0, beta=0.0, **SMALL))
    batch = toy_batch(image_size=8, volume_size=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.loss(batch)['mae'].item()
    for _ in range(40):
        out = model.loss(batch); opt.zero_grad(); out['loss'].backward(); opt.step()
    assert model.eval().loss(batch)['mae'].item() < min(first, 3.0)


def test_missing_modalities_and_per_modality_inputs():
    model = OrganAgeModel(ModelConfig(**SMALL)).eval()
    batch = toy_batch()
    only_rna = model.predict(batch, ['rna'])
    assert sorted((r['subject_id'], r['organ']) for r in only_rna) == [('A', 'lung'), ('B', 'brain')]
    only_mri = model.predict(batch, ['mri'])
    assert [(r['subject_id'], r['organ']) for r in only_mri] == [('B', 'brain')]
    # a batch without any radiograph still works
    nox = {k: v for k, v in batch.items() if not k.startswith('xray')}
    assert len(model.predict(nox)) == 2


def test_config_fingerprint_and_unknown_modality():
    assert ModelConfig(**SMALL).fingerprint() == ModelConfig(**SMALL, lambda_align=3).fingerprint()
    assert ModelConfig(**SMALL).fingerprint() != ModelConfig(**{**SMALL, 'n_genes': 21}).fingerprint()
    assert ModelConfig(**SMALL).fingerprint() != ModelConfig(**SMALL, enc_grid=4).fingerprint()
    assert ModelConfig(**SMALL).fingerprint() == ModelConfig(**SMALL, image_shift=2, input_dropout=0.5, nll_beta=0.5).fingerprint()
    with pytest.raises(ConfigError, match="modality 'pet'"):
        OrganAgeModel(ModelConfig(**{**SMALL, 'modalities': ['pet']}))
