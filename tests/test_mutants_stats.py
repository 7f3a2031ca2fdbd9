"""Tests written to kill surviving mutants found by `bench/_mutation.py` (mutmut 3) in organage/evaluate/calibration.py.

Each test names the mutant it kills; it asserts behaviour a caller relies on (column names, error conditions), not code."""
import numpy as np, pandas as pd, pytest
from organage.core import DataError
from organage.evaluate.predictions import simulate_predictions
from organage.evaluate.calibration import fit_bias_correction, fit_intervals, organ_zscores, organ_gap


def test_organ_gap_is_named_gap_and_equals_pred_minus_age():
    # kills x_organ_gap__mutmut_10/11 (the Series renamed): callers join on the name 'gap'
    t = simulate_predictions(n=200, seed=1)
    g = organ_gap(t)
    assert g.name == 'gap'
    np.testing.assert_array_equal(g.to_numpy(), (t.mu - t.age).to_numpy())
    assert organ_gap(t, pred='age').abs().max() == 0


def test_organ_zscores_requires_sigma():
    # kills x_organ_zscores__mutmut_14/25 (sigma=True turned to None/False from the input check): the intervals scale by sigma,
    # so a table without a valid sigma must be refused with a DataError naming the column
    t = simulate_predictions(n=600, seed=2)
    c = fit_bias_correction(t).apply(t); ic = fit_intervals(c)
    with pytest.raises(DataError, match='sigma'): organ_zscores(c.drop(columns='sigma'), ic)
    with pytest.raises(DataError, match='sigma'): organ_zscores(c.assign(sigma=-1.0), ic)
