"""Ridge regression in closed form: every penalty of a grid from one eigendecomposition, and the penalty chosen
by generalised cross-validation (GCV) on the training rows alone. Used by the linear head baseline and by the
first-pass predictor of the ``ema-predictions`` dialogue state."""

from __future__ import annotations

import numpy as np

# Penalties relative to the number of training rows (inputs are z-scored, so X^T X ~ n * correlation).
RELATIVE_PENALTIES = np.logspace(-4, 3, 22)


def ridge_path(x: np.ndarray, y: np.ndarray, penalties: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred ridge solutions for every penalty: ``(W [P, d, k], x_mean [d], y_mean [k])``.

    ``x`` [n, d], ``y`` [n, k] float64; ``W_p = (Xc^T Xc + lambda_p I)^-1 Xc^T Yc``. One eigendecomposition serves
    every penalty: of ``X^T X`` [d, d] when there are more rows than features, else of ``X X^T`` [n, n] (dual).
    """
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    if x.shape[0] >= x.shape[1]:
        values, vectors = np.linalg.eigh(xc.T @ xc)  # primal: [d, d]
        projected = vectors.T @ (xc.T @ yc)  # [d, k]
        weights = np.stack([vectors @ (projected / (values + lam)[:, None]) for lam in penalties])
    else:
        values, vectors = np.linalg.eigh(xc @ xc.T)  # dual: [n, n]; W = Xc^T (Xc Xc^T + lambda I)^-1 Yc
        projected = vectors.T @ yc  # [n, k]
        weights = np.stack([xc.T @ (vectors @ (projected / (values + lam)[:, None])) for lam in penalties])
    return weights, x_mean, y_mean


def ridge_gcv(x: np.ndarray, y: np.ndarray, relative: np.ndarray = RELATIVE_PENALTIES
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge of ``y`` [n, k] on ``x`` [n, d] with one penalty per target chosen by GCV,
    ``n RSS(lambda) / (n - df(lambda))^2`` with ``df = sum s^2 / (s^2 + lambda)`` (Golub, Heath & Wahba 1979).

    Returns ``(W [d, k], x_mean [d], y_mean [k], penalties [k])``; predictions are ``(x - x_mean) @ W + y_mean``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    penalties = relative * n
    weights, x_mean, y_mean = ridge_path(x, y, penalties)
    xc = x - x_mean
    singular = np.linalg.svd(xc, compute_uv=False) ** 2
    df = np.array([(singular / (singular + lam)).sum() for lam in penalties])  # [P]
    residuals = (y - y_mean)[None] - np.einsum("nd,pdk->pnk", xc, weights)  # [P, n, k]
    gcv = n * (residuals**2).sum(1) / np.maximum(n - df, 1e-9)[:, None] ** 2  # [P, k]
    best = gcv.argmin(0)
    chosen = np.stack([weights[best[k], :, k] for k in range(y.shape[1])], 1)
    return chosen, x_mean, y_mean, penalties[best]
