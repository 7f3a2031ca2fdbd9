"""SHAP (shap.GradientExplainer) and integrated gradients (captum) of tabular models with the TabTransformer contract
(organage.explain.tabular), on a stand-in: categorical codes never interpolated, the linear known answer, and on a
trained non-linear model the planted age features recovered by both (precision@k = 1) with agreeing rankings."""
import logging
import numpy as np
import pytest
import torch
from torch import nn

from organage.explain.tabular import (shap_attributions, ig_attributions, feature_ranking, precision_at_k,
                                      compare_rankings, TabularAttribution)

CARDS = [4, 2, 2]      # tissue, data type, sex


class Standin(nn.Module):
    "n_cat leading code columns, an nn.Embedding each, encode -> (n, d), head = nn.Linear(d, 1); refuses interpolated codes."
    def __init__(self, cards=CARDS, n_num=20, d=16, emb=4, linear=False, dropout=0.0):
        super().__init__()
        self.n_cat = len(cards)
        self.emb = nn.ModuleList(nn.Embedding(c, emb) for c in cards)
        k = self.n_cat * emb + n_num
        self.body = nn.Identity() if linear else nn.Sequential(nn.Linear(k, 64), nn.GELU(), nn.Dropout(dropout), nn.Linear(64, d), nn.GELU())
        self.head = nn.Linear(k if linear else d, 1)
    def encode(self, x):
        c = x[:, :self.n_cat]
        assert torch.equal(c, c.round()), 'a categorical code was interpolated'
        return self.body(torch.cat([m(c[:, i].long()) for i, m in enumerate(self.emb)] + [x[:, self.n_cat:]], 1))
    def forward(self, x): return self.head(self.encode(x))


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def table(n, p, seed):
    g = np.random.default_rng(seed)
    return np.column_stack([g.integers(0, c, n) for c in CARDS] + [g.normal(size=(n, p))]).astype(np.float32)


def test_linear_known_answer_with_dropout_model_in_train_mode():
    p = 12; w = np.zeros(p); w[[0, 5, 7]] = [2., -1.5, 1.]
    torch.manual_seed(0); m = Standin(n_num=p, linear=True)
    with torch.no_grad():
        m.head.weight[0, len(CARDS) * 4:] = torch.as_tensor(w, dtype=torch.float32)
    m.train()                                              # explanations switch to eval and back
    bg, x = table(1500, p, 1), table(30, p, 2)
    names = [f'g{j}' for j in range(p)]
    exp = np.array([w * (r[3:] - bg[np.all(bg[:, :3] == r[:3], 1), 3:].mean(0)) for r in x])
    ig = ig_attributions(m, x, bg, names, n_steps=4)
    np.testing.assert_allclose(ig.values, exp, atol=1e-4)
    np.testing.assert_allclose(ig.completeness_gap, 0, atol=1e-3)
    sh = shap_attributions(m, x, bg, names, nsamples=1500, max_background=1500)
    assert m.training
    err = np.abs(sh.values - exp)[:, w != 0]
    assert err.mean() < 0.1 and np.abs(sh.completeness_gap).mean() < 0.1, (err.mean(), sh.completeness_gap)
    assert np.abs(sh.values[:, w == 0]).max() == 0
    for a in (sh, ig):
        r = feature_ranking(a)
        assert precision_at_k(r, ['g0', 'g5', 'g7'], 3) == 1.0
    # the reference output is that of the sample's own code group
    g0 = np.all(x[:, :3] == x[0, :3], 1)
    own_bg = bg[np.all(bg[:, :3] == x[0, :3], 1)]
    with torch.no_grad():
        ref = m.eval()(torch.as_tensor(np.column_stack([np.repeat(x[:1, :3], len(own_bg), 0), own_bg[:, 3:]]))).mean()
    assert abs(sh.base[0] - float(ref)) < 1e-4 and np.allclose(sh.base[g0], sh.base[0])
    assert np.ptp(sh.base) > 0.1                           # other code groups, other references (the codes' term differs)


def test_small_groups_take_the_pooled_background(caplog):
    p = 5; torch.manual_seed(0); m = Standin(n_num=p).eval()
    bg = table(200, p, 3); bg[:, 0] = np.where(bg[:, 0] == 3, 0, bg[:, 0])    # no background row of tissue 3
    x = table(20, p, 4); x[:4, 0] = 3
    with caplog.at_level(logging.WARNING, logger='organage'):
        sh = shap_attributions(m, x, bg, nsamples=20)
    groups = np.unique(x[:, :3], axis=0)
    small = sum(np.all(bg[:, :3] == u, 1).sum() < 10 for u in groups)
    assert sh.n_groups == len(groups) and sh.pooled_groups == small >= len(np.unique(x[x[:, 0] == 3, :3], axis=0))
    with torch.no_grad():                                  # a pooled group's reference: every background row, its codes held
        ref = m(torch.as_tensor(np.column_stack([np.repeat(x[:1, :3], len(bg), 0), bg[:, 3:]]))).mean()
    assert abs(sh.base[0] - float(ref)) < 1e-4
    assert 'pooled' in caplog.text
    assert 'shap-gradient' in repr(sh) and sh.seconds_per_sample > 0


def age_data(n, p, seed, planted):
    x = table(n, p, seed); num = x[:, 3:]
    tissue = x[:, 0]
    age = 50 + 6 * num[:, planted].sum(1) + 3 * np.tanh(num[:, planted[0]]) * (tissue - 1.5) + 5 * tissue
    return x, age.astype(np.float32)


def test_trained_model_rankings_recover_planted_features():
    p, planted = 40, [3, 11, 17, 29]
    x, age = age_data(3000, p, 0, planted)
    torch.manual_seed(0); m = Standin(n_num=p, dropout=0.1)
    opt = torch.optim.Adam(m.parameters(), 3e-3); X, A = torch.as_tensor(x), torch.as_tensor(age)
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        for idx in torch.randperm(len(X), generator=g).split(128):
            opt.zero_grad(); (m(X[idx])[:, 0] - A[idx]).abs().mean().backward(); opt.step()
    m.eval()
    xt, at = age_data(300, p, 1, planted)
    with torch.no_grad(): mae = float((m(torch.as_tensor(xt))[:, 0] - torch.as_tensor(at)).abs().mean())
    assert mae < 4, mae                                   # it learned age (the ages spread over ~25 years)
    names = [f'cg{j:02d}' for j in range(p)]; truth = [names[j] for j in planted]
    sh = shap_attributions(m, xt[:120], x[:1500], names, nsamples=200)
    ig = ig_attributions(m, xt[:120], x[:1500], names, n_steps=32)
    rs, ri = feature_ranking(sh), feature_ranking(ig)
    assert precision_at_k(rs, truth, 4) == 1.0 and precision_at_k(ri, truth, 4) == 1.0
    c = compare_rankings(rs, ri, k=4)
    assert c['top_k_overlap'] == 1.0 and c['spearman'] > 0.7, c
    # completeness: IG exact up to quadrature, expected gradients up to sampling
    span = np.abs(ig.output - ig.base).mean()
    assert np.abs(ig.completeness_gap).mean() < 0.02 * span, (np.abs(ig.completeness_gap).mean(), span)
    assert np.abs(sh.completeness_gap).mean() < 0.15 * np.abs(sh.output - sh.base).mean()
    print(f"SHAP {sh.seconds_per_sample * 1e3:.1f} ms/sample, IG {ig.seconds_per_sample * 1e3:.1f} ms/sample; spearman {c['spearman']:.3f}")
