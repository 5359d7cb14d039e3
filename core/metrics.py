"""Regression metrics for valence and arousal: CCC, Pearson, MSE, RMSE (numpy), and the CCC loss (torch)."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from core.columns import TARGETS


def ccc(pred: np.ndarray, true: np.ndarray) -> float:
    """Concordance correlation coefficient (Lin 1989) with population (1/N) moments.

    ``2 cov / (var_p + var_t + (mean_p - mean_t)^2)``; NaN (undefined) for fewer than 2 utterances, 0 when
    predictions and truth are the same constant.
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if len(pred) < 2:
        return float("nan")
    mp, mt = pred.mean(), true.mean()
    cov = ((pred - mp) * (true - mt)).mean()
    denom = pred.var() + true.var() + (mp - mt) ** 2
    return float(2 * cov / denom) if denom > 0 else 0.0


def pearson(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation; NaN for fewer than 2 utterances, 0 when either side is constant."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if len(pred) < 2:
        return float("nan")
    sp, st = pred.std(), true.std()
    if sp == 0 or st == 0:
        return 0.0
    return float(((pred - pred.mean()) * (true - true.mean())).mean() / (sp * st))


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2))


def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """``{ccc, pearson, mse, rmse}`` of one dimension."""
    m = mse(pred, true)
    return {"ccc": ccc(pred, true), "pearson": pearson(pred, true), "mse": m, "rmse": float(np.sqrt(m))}


def dimension_metrics(predictions: pl.DataFrame) -> dict[str, float]:
    """``ccc_v, pearson_v, mse_v, rmse_v, ccc_a, ...`` of a predictions table with columns
    ``valence_pred, valence_true, arousal_pred, arousal_true``."""
    out = {}
    for dim in TARGETS:
        for name, value in regression_metrics(predictions[f"{dim}_pred"].to_numpy(),
                                              predictions[f"{dim}_true"].to_numpy()).items():
            out[f"{name}_{dim[0]}"] = value
    return out


def ccc_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """``1 - CCC`` per column of ``[B, K]`` tensors -> ``[K]`` (differentiable)."""
    mp, mt = pred.mean(0), true.mean(0)
    cov = ((pred - mp) * (true - mt)).mean(0)
    denom = pred.var(0, unbiased=False) + true.var(0, unbiased=False) + (mp - mt) ** 2
    return 1 - 2 * cov / (denom + 1e-8)
