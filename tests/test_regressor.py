"The image/volume regressor's trainer: resuming runs only the remaining epochs and ends where an uninterrupted run ends."
import json
import numpy as np
import pandas as pd
import torch
from torch import nn
from organage.model.regressor import RegressorConfig, TensorAgeDataset, fit_regressor, predict_regressor


def _data(n, seed):
    g = np.random.default_rng(seed); age = g.uniform(20, 80, n)
    x = g.normal(size=(n, 1, 4, 4)).astype(np.float32); x[:, 0, 0, 0] = (age - 50) / 15
    return TensorAgeDataset(x, age)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))


def net50():
    "A network that starts at the mean age: with validation ages unrelated to the inputs, its best validation MAE is at the start."
    n = _net()
    with torch.no_grad(): n[-1].bias.fill_(50.0)
    return n


def test_resume_runs_only_the_remaining_epochs_and_matches_an_uninterrupted_run(tmp_path):
    tr, va = _data(96, 0), _data(32, 1)
    rc = RegressorConfig(epochs=6, patience=6, batch_size=16, lr=3e-3, device='cpu')
    whole = fit_regressor(_net(), tr, va, tmp_path/'whole', rc)
    # an "interrupted" run: 3 epochs, then its completion marker removed, as if killed after epoch 3's checkpoint
    part = tmp_path/'part'
    fit_regressor(_net(), tr, va, part, rc.model_copy(update={'epochs': 3}))
    (part/'done.json').unlink(); (part/'weights.pt').unlink()
    seen = []
    net = _net()   # a hook counts the training batches the resumed run really computes
    net.register_forward_hook(lambda m, i, o: seen.append(len(o)) if m.training else None)
    resumed = fit_regressor(net, tr, va, part, rc)
    assert len(seen) == 3 * (96 // 16), len(seen)          # epochs 4-6 only: 6 batches each
    assert resumed.epochs_run == whole.epochs_run
    a = predict_regressor(resumed.model, va, rc)[0]; b = predict_regressor(whole.model, va, rc)[0]
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert json.loads((part/'done.json').read_text())['best_epoch'] == whole.best_epoch


def test_sigma_is_the_validation_residual_rmse(tmp_path):
    tr, va = _data(96, 0), _data(32, 1)
    rc = RegressorConfig(epochs=3, batch_size=16, device='cpu')
    fit = fit_regressor(_net(), tr, va, tmp_path, rc)
    mu, sd = predict_regressor(fit.model, va, rc, sigma=fit.sigma)
    y = va.age.numpy()
    np.testing.assert_allclose(fit.sigma, np.sqrt(np.mean((mu - y) ** 2)), rtol=1e-5)
    assert np.allclose(sd, fit.sigma)


def test_resume_starts_after_the_last_epoch_even_when_the_best_epoch_was_earlier(tmp_path):
    # validation ages unrelated to the inputs: the validation MAE stops improving after an epoch or two, so the best
    # epoch is early. Lightning's own save_last writes last.ckpt only when the best improves; a resume from there
    # would replay epochs. The run must continue from epoch 4, whatever epoch was best.
    g = np.random.default_rng(7)
    tr = _data(96, 0)
    va = TensorAgeDataset(g.normal(size=(32, 1, 4, 4)).astype(np.float32), g.uniform(20, 80, 32))
    rc = RegressorConfig(epochs=6, patience=6, batch_size=16, lr=1e-2, device='cpu')
    whole = fit_regressor(net50(), tr, va, tmp_path/'whole', rc)
    part = tmp_path/'part'
    first = fit_regressor(net50(), tr, va, part, rc.model_copy(update={'epochs': 3}))
    assert first.best_epoch < 2, first.history   # the situation under test: the best epoch is not the last
    (part/'done.json').unlink(); (part/'weights.pt').unlink()
    assert torch.load(part/'checkpoints'/'last.ckpt', map_location='cpu', weights_only=False)['epoch'] == 2
    seen = []
    net = net50()
    net.register_forward_hook(lambda m, i, o: seen.append(len(o)) if m.training else None)
    resumed = fit_regressor(net, tr, va, part, rc)
    assert len(seen) == 3 * (96 // 16), len(seen)          # epochs 4-6 only
    np.testing.assert_allclose(predict_regressor(resumed.model, va, rc)[0], predict_regressor(whole.model, va, rc)[0], atol=1e-4)
    assert resumed.best_epoch == whole.best_epoch


def test_a_network_handed_over_in_eval_mode_still_trains_in_training_mode(tmp_path):
    # Lightning keeps the mode it is given; dropout and batch-norm updates must not be off during training
    tr, va = _data(32, 0), _data(16, 1)
    net = _net().eval()
    modes = []
    net[3].register_forward_hook(lambda m, i, o: modes.append(m.training))   # the Dropout layer
    fit_regressor(net, tr, va, tmp_path, RegressorConfig(epochs=1, batch_size=16, device='cpu'))
    assert True in modes, 'no training-mode forward pass: the network trained in eval mode'


def test_a_resumed_fit_continues_the_plateau_schedule(tmp_path):
    # validation ages unrelated to the inputs: the validation MAE stops improving and the rate is cut (patience 1);
    # a fit interrupted after 3 epochs and resumed to 8 must take the same cuts and end with the same weights
    g = np.random.default_rng(7)
    tr = _data(96, 0)
    va = TensorAgeDataset(g.normal(size=(32, 1, 4, 4)).astype(np.float32), g.uniform(20, 80, 32))
    rc = RegressorConfig(epochs=8, patience=8, batch_size=16, lr=1e-2, plateau_patience=1, plateau_factor=0.5, device='cpu')
    lr_of = lambda d: torch.load(d/'checkpoints'/'last.ckpt', map_location='cpu', weights_only=False)['optimizer_states'][0]['param_groups'][0]['lr']
    whole = fit_regressor(net50(), tr, va, tmp_path/'whole', rc)
    assert lr_of(tmp_path/'whole') < rc.lr   # the situation under test: the schedule cut the rate
    part = tmp_path/'part'
    fit_regressor(net50(), tr, va, part, rc.model_copy(update={'epochs': 3}))
    (part/'done.json').unlink(); (part/'weights.pt').unlink()
    resumed = fit_regressor(net50(), tr, va, part, rc)
    assert lr_of(part) == lr_of(tmp_path/'whole')
    h = resumed.history.merge(whole.history, on='epoch', suffixes=('', '_whole'))
    assert h.epoch.tolist() == [3, 4, 5, 6, 7], h   # the epochs the resumed fit ran
    np.testing.assert_allclose(h.val_mae, h.val_mae_whole, atol=1e-4)
    np.testing.assert_allclose(predict_regressor(resumed.model, va, rc)[0], predict_regressor(whole.model, va, rc)[0], atol=1e-4)


def test_a_folder_trained_before_the_newer_settings_is_loaded_not_retrained(tmp_path):
    # done.json written before plateau_* existed: the same model (no schedule) must load, not be retrained
    tr, va = _data(32, 0), _data(16, 1)
    rc = RegressorConfig(epochs=2, batch_size=16, device='cpu', recompute_bn=False)
    first = fit_regressor(_net(), tr, va, tmp_path, rc)
    info = json.loads((tmp_path/'done.json').read_text())
    for k in ('plateau_patience', 'plateau_factor', 'recompute_bn'): info['settings'].pop(k)
    (tmp_path/'done.json').write_text(json.dumps(info))
    again = fit_regressor(_net(), tr, va, tmp_path, rc)
    assert again.seconds == info['seconds'] and again.best_epoch == first.best_epoch   # loaded: the recorded seconds, no new training
