"""The linear baseline: ridge regression of the standardised targets on the fused, standardised inputs,
in closed form, one penalty per dimension chosen on the validation rows (the held-out dialogue groups the neural heads use
for early stopping). Fitted on the training rows only, like the neural heads, so both see the same data.

One eigendecomposition serves every penalty: of ``X^T X`` [d, d] when there are more rows than features,
else of ``X X^T`` [n, n] (the dual form), so a whole grid costs about one fit.
"""

from __future__ import annotations

import numpy as np
import torch

from core.metrics import ccc
from heads.models import LinearHead

# Penalties relative to the number of training rows (inputs are z-scored, so X^T X ~ n * correlation).
RELATIVE_PENALTIES = np.logspace(-4, 3, 22)


def ridge_path(x: np.ndarray, y: np.ndarray, penalties: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred ridge solutions for every penalty: ``(W [P, d, k], x_mean [d], y_mean [k])``.

    ``x`` [n, d], ``y`` [n, k] float64; ``W_p = (Xc^T Xc + lambda_p I)^-1 Xc^T Yc``.
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


def fit_ridge(model: LinearHead, train: tuple[torch.Tensor, ...], validation: tuple[torch.Tensor, ...]
              ) -> tuple[list[float], float, list[dict]]:
    """Set ``model``'s weights to the ridge fit with the best validation CCC per dimension.

    ``train`` and ``validation`` are ``(speech, prosody, state, targets)`` tensors (standardised). Returns
    the chosen penalty per dimension, the validation mean CCC at it, and the validation CCC of every penalty.
    """
    x = model.blocks(*train[:3]).double().numpy()
    y = train[3].double().numpy()
    x_val, y_val = model.blocks(*validation[:3]).double().numpy(), validation[3].double().numpy()
    penalties = RELATIVE_PENALTIES * len(x)
    weights, x_mean, y_mean = ridge_path(x, y, penalties)
    predictions = np.einsum("nd,pdk->pnk", x_val - x_mean, weights) + y_mean  # [P, n_val, k]
    scores = np.array([[ccc(predictions[p, :, k], y_val[:, k]) for k in range(y.shape[1])]
                       for p in range(len(penalties))])  # [P, k]
    best = scores.argmax(0)  # one penalty per dimension
    chosen = np.stack([weights[best[k], :, k] for k in range(y.shape[1])], 1)  # [d, k]
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(chosen.T))
        model.linear.bias.copy_(torch.from_numpy(y_mean - x_mean @ chosen))
    history = [{"penalty": float(lam), "val_ccc": scores[p].tolist()} for p, lam in enumerate(penalties)]
    return [float(penalties[b]) for b in best], float(scores[best, range(y.shape[1])].mean()), history
