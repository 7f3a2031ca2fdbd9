"The predictions contract: error metrics against scikit-learn, the fused-rows rule, writing and reading a run's files."
import numpy as np, pandas as pd, pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from organage.core import DataError
from organage.evaluate.predictions import (PRED_COLUMNS, METRICS, error_metrics, fused_rows, main_predictions,
                                           write_predictions, read_predictions, simulate_predictions)


@pytest.mark.parametrize('n', [2, 3, 50, 1000])
def test_error_metrics_match_sklearn(n):
    r = np.random.default_rng(n); age = r.uniform(20, 80, n); pred = age + r.normal(2, 5, n)
    m = error_metrics(pred, age)
    assert list(m) == list(METRICS) and m['n'] == n
    assert np.isclose(m['mae'], mean_absolute_error(age, pred)) and np.isclose(m['mse'], mean_squared_error(age, pred))
    assert np.isclose(m['rmse'], np.sqrt(mean_squared_error(age, pred))) and np.isclose(m['r2'], r2_score(age, pred))
    assert np.isclose(m['mean_gap'], np.mean(pred - age)) and np.isclose(m['residual_sd'], np.std(pred - age, ddof=1))
    assert np.isnan(m['r_gap_age']) if n < 3 else np.isclose(m['r_gap_age'], np.corrcoef(age, pred - age)[0, 1])


def test_error_metrics_names_and_edge_cases():
    assert error_metrics(pd.Series([1., 3.]), pd.Series([2., 2.]), {'n': 'N', 'mse': 'MSE', 'mae': 'MAE'}) == dict(N=2, MSE=1., MAE=1.)
    one = error_metrics([5.], [3.]); assert one['mae'] == 2. and np.isnan(one['residual_sd']) and np.isnan(one['r2'])
    assert np.isnan(error_metrics([np.nan, 1.], [1., 1.])['mae'])          # NaN is not skipped
    with pytest.raises(DataError, match='unknown metric'): error_metrics([1.], [1.], ('medae',))


def _by_model():
    rows = []
    for model, mods in [('unimodal_rna', ['rna']), ('unimodal_xray', ['xray']), ('naive', ['fusion']), ('aligned', ['fusion', 'rna', 'xray'])]:
        for mod in mods: rows.append(simulate_predictions(n=20, organs=('lung',), seed=len(rows)).assign(model=model, modality=mod))
    return pd.concat(rows, ignore_index=True)


def test_fused_rows_is_each_models_main_answer():
    allp = _by_model()
    for model, mod in [('unimodal_rna', 'rna'), ('unimodal_xray', 'xray'), ('naive', 'fusion'), ('aligned', 'fusion')]:
        f = fused_rows(allp, model)
        assert len(f) == 20 and set(f.model) == {model} and set(f.modality) == {mod}
    assert set(fused_rows(allp).model) == {'naive', 'aligned'}
    main = main_predictions(allp)
    assert list(main.columns[:len(PRED_COLUMNS)]) == list(PRED_COLUMNS) and 'model' not in main
    assert main.mu.tolist() == fused_rows(allp, 'aligned').mu.tolist()
    assert main_predictions(allp[allp.model != 'aligned']).mu.tolist() == fused_rows(allp, 'naive').mu.tolist()


def test_write_then_read(tmp_path):
    allp = _by_model()
    pred = write_predictions(allp, tmp_path)
    assert list(pred.columns) == list(PRED_COLUMNS) and len(pred) == 20
    assert pd.read_csv(tmp_path / 'predictions_by_model.csv').columns.tolist() == ['model', *PRED_COLUMNS]
    assert not list(tmp_path.glob('.*.tmp'))                                # atomic writes leave no temporary file
    pd.testing.assert_frame_equal(read_predictions(tmp_path), pred)
    with pytest.raises(DataError, match='predictions not found'): read_predictions(tmp_path / 'none')
