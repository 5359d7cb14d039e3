"""The linear baseline: ridge regression of the standardised targets on the fused, standardised inputs,
in closed form, one penalty per dimension chosen on the validation rows (the held-out dialogue groups the neural heads use
for early stopping). Fitted on the training rows only, like the neural heads, so both see the same data.

One eigendecomposition serves every penalty (``core.linear.ridge_path``), so a whole grid costs about one fit.
"""

from __future__ import annotations

import numpy as np
import torch

from core.linear import RELATIVE_PENALTIES, ridge_path
from core.metrics import ccc
from heads.training.models import LinearHead


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
