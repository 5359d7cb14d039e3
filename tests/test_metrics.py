"""CCC, Pearson and MSE agree with independent formulas and known cases."""

import numpy as np
import pytest
import scipy.stats
import torch

from core.metrics import ccc, ccc_loss, mse, pearson, regression_metrics


def _lin_ccc_loop(x, y):
    """Lin's CCC written out with explicit sums (population moments)."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y)) / n
    sxx = sum((a - mx) ** 2 for a in x) / n
    syy = sum((b - my) ** 2 for b in y) / n
    return 2 * sxy / (sxx + syy + (mx - my) ** 2)


@pytest.fixture
def pair():
    rng = np.random.default_rng(1)
    true = rng.uniform(1, 5, 200)
    return 0.7 * true + rng.normal(0.4, 0.5, 200), true


def test_ccc_matches_lins_formula(pair):
    pred, true = pair
    assert ccc(pred, true) == pytest.approx(_lin_ccc_loop(list(pred), list(true)), abs=1e-12)


def test_pearson_matches_scipy(pair):
    pred, true = pair
    assert pearson(pred, true) == pytest.approx(scipy.stats.pearsonr(pred, true).statistic, abs=1e-12)


def test_mse_and_rmse_match_the_definition(pair):
    pred, true = pair
    m = regression_metrics(pred, true)
    assert m["mse"] == pytest.approx(sum((p - t) ** 2 for p, t in zip(pred, true)) / len(pred))
    assert m["rmse"] == pytest.approx(np.sqrt(m["mse"]))


def test_known_cases():
    x = np.array([1.0, 2.0, 3.5, 4.0, 5.0])
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x + 1.0, x) < 1.0 and pearson(x + 1.0, x) == pytest.approx(1.0)
    assert ccc(np.full(5, x.mean()), x) == 0.0
    assert ccc(-x, x) < 0
    assert mse(x, x) == 0.0


def test_torch_ccc_loss_is_one_minus_ccc_per_column(pair):
    pred, true = pair
    loss = ccc_loss(torch.tensor(np.stack([pred, true], 1)), torch.tensor(np.stack([true, true], 1)))
    assert loss.tolist() == pytest.approx([1 - ccc(pred, true), 0.0], abs=1e-6)
