"""Z-scoring with statistics of training rows only: a pure function shared by the state stage and the heads."""

from __future__ import annotations

import numpy as np

CLIP = 10.0  # standardised values beyond +-10 sd are clipped: one wild feature must not dominate a batch


def zscore(x: np.ndarray, train: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(clip((x - mean) / std, -CLIP, CLIP), mean, std)`` with NaN-aware statistics of ``train``.

    A statistic that is undefined (all-NaN column) becomes mean 0; a constant column gets std 1. NaN in
    ``x`` stays NaN (callers decide whether it means "missing": usually 0, the training mean).
    """
    mean = np.nanmean(train, axis=axis)
    std = np.nanstd(train, axis=axis)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
    return standardise(x, mean, std), mean, std


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``clip((x - mean) / std, -CLIP, CLIP)`` with statistics fitted before (``zscore``); NaN stays NaN.
    One new array (worked on in place): at MSP-Podcast scale a speech layer is 1.1 GB in float32."""
    out = x - mean
    if np.result_type(out, std) == out.dtype:
        np.divide(out, std, out=out)
    else:
        out = out / std
    return np.clip(out, -CLIP, CLIP, out=out)
