"""The linear baseline: closed-form ridge equals the normal equations; its penalty is chosen on validation."""

import numpy as np
import pytest

from cache import CacheReader
from core.errors import InputError
from core.linear import ridge_path
from core.metrics import dimension_metrics
from heads.training.experiment import train_fold
from heads.training.features import load_corpus_arrays
from heads.training.runs import read_run
from heads.training.train import TrainConfig
from heads.training.variants import parse_variant
from tests.synth_cache import planted_cache


@pytest.mark.parametrize("rows,features", [(200, 30), (20, 60)])  # primal (n >= d) and dual (n < d) forms
def test_every_penalty_gives_the_normal_equation_solution(rows, features):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(rows, features)), rng.normal(size=(rows, 2))
    penalties = np.array([0.1, 3.0, 100.0])
    weights, x_mean, y_mean = ridge_path(x, y, penalties)
    xc, yc = x - x.mean(0), y - y.mean(0)
    for w, lam in zip(weights, penalties):
        expected = np.linalg.solve(xc.T @ xc + lam * np.eye(features), xc.T @ yc)
        assert np.abs(w - expected).max() < 1e-8
    assert np.allclose(x_mean, x.mean(0)) and np.allclose(y_mean, y.mean(0))


def test_the_linear_head_fits_planted_linear_relations_and_records_its_penalties(tmp_path):
    arrays = load_corpus_arrays(CacheReader(planted_cache(tmp_path / "c.h5", n_per_speaker=40)))
    preds = train_fold(arrays, 2, parse_variant("linear", TrainConfig()), [0, 1], tmp_path / "run")
    m = dimension_metrics(preds.filter(preds["seed"] == 0))
    assert m["ccc_v"] > 0.9 and m["ccc_a"] > 0.9
    record, _ = read_run(tmp_path / "run")
    penalties = record["metrics_per_seed"]["0"]["ridge_penalty"]
    path = record["metrics_per_seed"]["0"]["ridge_path"]
    for dim in (0, 1):  # the chosen penalty is the one with the best validation CCC of its dimension
        best = max(path, key=lambda step, dim=dim: step["val_ccc"][dim])
        assert best["penalty"] == penalties[dim]
    seeds = [preds.filter(preds["seed"] == s)["valence_pred"].to_numpy() for s in (0, 1)]
    assert np.array_equal(*seeds)  # closed form: seeds change nothing


def test_a_learned_layer_mix_cannot_be_fitted_in_closed_form():
    with pytest.raises(InputError, match="one speech layer"):
        parse_variant("linear+layer=weighted", TrainConfig())


def test_gcv_chooses_the_penalty_a_naive_hat_matrix_computation_chooses():
    from core.linear import ridge_gcv

    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 12))
    y = np.stack([x[:, 0] + rng.normal(0, 0.3, 80), rng.normal(0, 1, 80)], 1)  # one signal, one pure noise
    relative = np.logspace(-3, 2, 9)
    weights, x_mean, y_mean, chosen = ridge_gcv(x, y, relative)
    xc, n = x - x.mean(0), len(x)
    for k in range(2):
        scores = []
        for lam in relative * n:
            hat = xc @ np.linalg.solve(xc.T @ xc + lam * np.eye(12), xc.T)  # naive [n, n] hat matrix
            residual = (np.eye(n) - hat) @ (y[:, k] - y[:, k].mean())
            scores.append(n * residual @ residual / (n - 1 - np.trace(hat)) ** 2)  # the intercept is fitted too
        lam = relative[int(np.argmin(scores))] * n
        assert chosen[k] == pytest.approx(lam)
        expected = np.linalg.solve(xc.T @ xc + lam * np.eye(12), xc.T @ (y[:, k] - y[:, k].mean()))
        assert np.abs(weights[:, k] - expected).max() < 1e-8
    assert chosen[1] > chosen[0]  # noise gets shrunk harder than signal
