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
    ``n RSS(lambda) / (n - 1 - df(lambda))^2`` with ``df = sum s^2 / (s^2 + lambda)`` (Golub, Heath & Wahba 1979;
    the 1 is the fitted intercept: the data are centred).
    Everything comes from one thin SVD ``Xc = U S V^T``: with ``z = U^T yc`` and ``f = s^2 / (s^2 + lambda)``,
    ``RSS = |yc|^2 - sum (2 f - f^2) z^2`` and ``W = V diag(s / (s^2 + lambda)) z``.

    Returns ``(W [d, k], x_mean [d], y_mean [k], penalties [k])``; predictions are ``(x - x_mean) @ W + y_mean``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    penalties = relative * n
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    z = u.T @ yc  # [r, k]
    shrink = s[None, :] ** 2 / (s[None, :] ** 2 + penalties[:, None])  # [P, r]
    rss = (yc**2).sum(0)[None, :] - ((2 * shrink - shrink**2)[:, :, None] * z[None] ** 2).sum(1)  # [P, k]
    df = shrink.sum(1)  # [P]
    gcv = n * np.maximum(rss, 0) / np.maximum(n - 1 - df, 1e-9)[:, None] ** 2
    best = gcv.argmin(0)  # [k]
    weights = np.stack([vt.T @ (s / (s**2 + penalties[best[j]]) * z[:, j]) for j in range(y.shape[1])], 1)
    return weights, x_mean, y_mean, penalties[best]
