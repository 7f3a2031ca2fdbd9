"""Seed 001's transfer to case-control classification (organage.model.transfer) on a stand-in with the TabTransformer
contract: an age model pre-trained with organage.model.regressor, whose embedding carries the aging direction that the
disease shifts, transferred with everything but its last layer frozen, against the same architecture from scratch."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from scipy.stats import mannwhitneyu

from organage.core import DataError
from organage.explain.tabular import shap_attributions, feature_ranking, precision_at_k
from organage.model.regressor import RegressorConfig, fit_regressor
from organage.model.transfer import (ClassifierConfig, transfer_classifier, scratch_classifier, predict_proba,
                                     classifier_metrics, auroc_difference, logistic_baseline)

CARDS, P, AGE_GENES = [3, 2], 200, 6


class Standin(nn.Module):
    "The contract: n_cat leading code columns, an nn.Embedding each, encode -> (n, d), head = nn.Linear(d, 1)."
    def __init__(self, cards=CARDS, n_num=P, d=16, emb=4):
        super().__init__()
        self.n_cat = len(cards)
        self.emb = nn.ModuleList(nn.Embedding(c, emb) for c in cards)
        self.body = nn.Sequential(nn.Linear(self.n_cat * emb + n_num, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, d), nn.ReLU())
        self.head = nn.Linear(d, 1)
    def encode(self, x):
        c = x[:, :self.n_cat].long()
        return self.body(torch.cat([m(c[:, i]) for i, m in enumerate(self.emb)] + [x[:, self.n_cat:]], 1))
    def forward(self, x): return self.head(self.encode(x))


class RowAges(Dataset):
    "Tabular rows with ages, items as organage.model.regressor reads them."
    def __init__(self, x, age): self.x, self.age = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(age, dtype=torch.float32)
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return dict(x=self.x[i], age=self.age[i])


def cohort(n, seed, case=None, shift=2.0):
    """Rows (codes, numeric) and ages: the first AGE_GENES features follow the biological age; a case's biological
    age runs ahead (disease = accelerated aging of those genes), so the age model's embedding carries the disease signal."""
    g = np.random.default_rng(seed)
    age = g.uniform(20, 80, n); a = (age - 50) / 17
    y = np.zeros(n, int) if case is None else case
    num = g.normal(size=(n, P)); num[:, :AGE_GENES] = (a + shift * y)[:, None] + 0.5 * g.normal(size=(n, AGE_GENES))
    codes = np.column_stack([g.integers(0, c, n) for c in CARDS])
    return np.column_stack([codes, num]).astype(np.float32), age


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "Tiny networks: one torch thread is several times faster than two on a shared 2-core machine (and deterministic)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def age_model(tmp_path_factory, one_thread):
    x, age = cohort(1500, 0); xv, agev = cohort(300, 1)
    torch.manual_seed(0)
    fit = fit_regressor(Standin(), RowAges(x, age), RowAges(xv, agev), tmp_path_factory.mktemp('age'),
                        RegressorConfig(loss='mae', lr=3e-3, epochs=20, patience=20, batch_size=100, device='cpu'))
    assert fit.val_mae < 6, fit.val_mae        # it learned age (the spread of ages is 17 years)
    return fit.model


def casectl(n, seed):
    y = np.tile([0, 1], n // 2)
    x, _ = cohort(n, seed, case=y)
    return x, y


def test_transfer_beats_scratch_at_small_n(age_model, tmp_path):
    before = {k: v.clone() for k, v in age_model.state_dict().items()}
    tr, va, (xt, yt) = casectl(30, 10), casectl(30, 11), casectl(800, 12)
    cfg = ClassifierConfig(lr=3e-2, epochs=150, patience=20, batch_size=16, device='cpu', seed=0)
    tf = transfer_classifier(age_model, tr, va, tmp_path / 'transfer', cfg)
    sc = scratch_classifier(age_model, tr, va, tmp_path / 'scratch', cfg.model_copy(update={'lr': 1e-2}))
    # freezing: only the new head trained; the age model itself untouched
    assert tf.trainable == ['head.weight', 'head.bias']
    for k, v in tf.model.state_dict().items():
        if not k.startswith('head.'): assert torch.equal(v, before[k]), k
    assert not torch.equal(tf.model.head.weight, before['head.weight'])
    assert all(torch.equal(v, before[k]) for k, v in age_model.state_dict().items())
    assert len(sc.trainable) == len(before) and all(not torch.equal(v, before[k]) for k, v in sc.model.state_dict().items())
    pt, ps = predict_proba(tf.model, xt), predict_proba(sc.model, xt)
    lr = logistic_baseline(np.vstack([tr[0], va[0]]), np.r_[tr[1], va[1]], n_cat=2, Cs=5).predict_proba(xt)[:, 1]
    m = classifier_metrics(yt, {'transfer': pt, 'scratch': ps, 'logistic': lr}, n_boot=300, seed=0).set_index('model')
    print(m[['auroc', 'auroc_lo', 'auroc_hi', 'auprc']].round(3))
    assert m.loc['transfer', 'auroc'] > 0.85                   # the oracle (the true biological-age score) reaches about 0.92
    assert m.loc['transfer', 'auroc'] > m.loc['scratch', 'auroc'] + 0.04, m.auroc
    d = auroc_difference(yt, pt, ps, n_boot=300, seed=0)
    print('paired AUROC difference transfer - scratch', {k: round(v, 4) for k, v in d.items()})
    assert d['lo'] > 0, d
    assert ((m.auroc_lo <= m.auroc) & (m.auroc <= m.auroc_hi) & (m.auprc_lo <= m.auprc) & (m.auprc <= m.auprc_hi)).all()
    # seed 001 ranks the classifier's features by SHAP: the disease (= accelerated-aging) genes come first.
    # 30 training rows are too few to match backgrounds on the codes: group_cols=() pools them (codes still held)
    sh = shap_attributions(tf.model, xt[:60], tr[0], nsamples=100, group_cols=())
    assert sh.pooled_groups == 0 and precision_at_k(feature_ranking(sh), [f'f{j}' for j in range(AGE_GENES)], AGE_GENES) == 1.0


def test_bad_labels_are_named(age_model, tmp_path):
    x, y = casectl(20, 3)
    y = y.copy(); y[7] = 2
    with pytest.raises(DataError, match=r'row 7.*found 2'):
        transfer_classifier(age_model, (x, y), casectl(20, 4), tmp_path, ClassifierConfig(epochs=1, device='cpu'))
    with pytest.raises(DataError, match='found -1'):
        classifier_metrics(np.r_[np.zeros(5), 1, -1], np.arange(7.))


def test_auroc_is_mann_whitney_with_ties():
    g = np.random.default_rng(5); y = np.repeat([0, 1], [70, 30])
    s = np.round(y * 0.8 + g.normal(size=100), 1)          # rounded: many ties, counted one half by both
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic
    m = classifier_metrics(y, s, n_boot=200)
    assert abs(m.auroc[0] - u / (30 * 70)) < 1e-12
    assert m.auroc_lo[0] <= m.auroc[0] <= m.auroc_hi[0]
