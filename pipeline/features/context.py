"""Dialogue context that needs no training: a causal average of the previous turns' features.

For each utterance t of a dialogue (its rows in time order), the context is the exponentially weighted mean
of the *previous* turns' summaries, never the turn itself (the heads already see it)::

    c_t = sum_{s<t} a^(t-1-s) u_s / sum_{s<t} a^(t-1-s)        (c_1 = 0: no previous turn)
    m_t = 1 - a^(t-1)                                           how much history there is, in [0, 1)

and the state is ``[c_t, m_t]``. The speaker-aware variant keeps two such averages: over the same speaker's
previous turns and over the other speakers' previous turns, ``[c_self, m_self, c_other, m_other]``.

The summary ``u`` of an utterance is built by the state stage from its cached features (the leading principal
components of the speech block, the whole z-scored prosody block); the projection is fitted on the training
rows of each fold only and uses no labels, so no cross-fitting is needed.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from core.standardise import standardise, zscore


def fit_block_projection(x: np.ndarray, train_rows: np.ndarray, components: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal axes of one block on ``train_rows``: ``(mean [d], std [d], axes [d, components])`` with each axis
    scaled so that the projected training rows have unit variance (columns beyond the block's rank are 0). ``x`` [N, d] float, NaN = missing (-> the mean)."""
    z, mean, std = zscore(x, x[train_rows])
    z = np.nan_to_num(z, nan=0.0)
    train = z[train_rows].astype(np.float32)  # float32 products: half the time of float64 at 1024 dimensions
    k = max(1, min(components, train.shape[1], len(train_rows) - 1))
    covariance = (train.T @ train).astype(np.float64) / max(1, len(train_rows) - 1)
    values, vectors = np.linalg.eigh(covariance)  # ascending
    values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
    axes = np.zeros((train.shape[1], components))  # always ``components`` wide: unused axes stay 0
    axes[:, :k] = vectors / np.sqrt(np.maximum(values, 1e-12))
    return mean, std, axes


def project_block(x: np.ndarray, mean: np.ndarray, std: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """``[N, d] -> [N, k]`` float32 with a block's fitted projection (NaN = the training mean)."""
    return (np.nan_to_num(standardise(x, mean, std), nan=0.0) @ axes).astype(np.float32)


def causal_average(u: np.ndarray, sequence: np.ndarray, a: float, keep: np.ndarray | None = None) -> np.ndarray:
    """The definition, one sum per position (``context_states`` computes the same by recursion; the tests compare).
    ``[len(sequence), k + 1]``: for each position t of ``sequence`` (rows in time order), the weighted mean of
    ``u`` over earlier positions s < t whose ``keep[t, s]`` is true (all earlier ones without ``keep``), with
    weights ``a^(t-1-s)`` counted over kept positions only, and the history mass ``m_t = 1 - a^n`` (n kept)."""
    out = np.zeros((len(sequence), u.shape[1] + 1), np.float32)
    for t in range(len(sequence)):
        earlier = np.arange(t) if keep is None else np.flatnonzero(keep[t, :t])
        if len(earlier) == 0:
            continue
        lags = np.arange(len(earlier))[::-1]  # the latest kept turn has lag 0
        weights = a ** lags
        out[t, :-1] = weights @ u[sequence[earlier]] / weights.sum()
        out[t, -1] = 1.0 - a ** len(earlier)
    return out


def _averages_before(u: np.ndarray, a: float) -> np.ndarray:
    """``[m + 1, k + 1]``: row j holds the weighted mean of ``u``'s first j rows (weights ``a^(j-1-i)``, 0 for
    j = 0) and the history mass ``1 - a^j``. One recursion ``N_j = a N_(j-1) + u_(j-1)`` (``scipy.signal.lfilter``)
    instead of a sum per row: the same numbers as ``causal_average``, in time linear in the sequence."""
    m = len(u)
    out = np.zeros((m + 1, u.shape[1] + 1), np.float64)
    if m == 0:
        return out
    numerators = lfilter([1.0], [1.0, -a], np.asarray(u, np.float64), axis=0)  # N_1 .. N_m
    counts = np.arange(1, m + 1)
    denominators = counts.astype(np.float64) if a == 1 else (1 - a**counts) / (1 - a)
    out[1:, :-1] = numerators / denominators[:, None]
    out[1:, -1] = 1 - a**counts
    return out


def context_states(u: np.ndarray, sequences: list[np.ndarray], speakers: np.ndarray, a: float,
                   speaker_aware: bool) -> np.ndarray:
    """``[N, k + 1]`` (or ``[N, 2k + 2]`` speaker-aware) context of every row of ``sequences``; 0 elsewhere.
    The values of ``causal_average`` (the definition), computed by one recursion per sequence and speaker."""
    k = u.shape[1]
    out = np.zeros((len(u), (k + 1) * (2 if speaker_aware else 1)), np.float32)
    for sequence in sequences:
        if not speaker_aware:
            out[sequence] = _averages_before(u[sequence], a)[:-1]
            continue
        who = speakers[sequence]
        for speaker in np.unique(who):
            mine = np.flatnonzero(who == speaker)
            others = np.flatnonzero(who != speaker)
            out[sequence[mine], : k + 1] = _averages_before(u[sequence[mine]], a)[:-1]  # own earlier turns
            before = np.searchsorted(others, mine)  # how many of the others' turns precede each of mine
            out[sequence[mine], k + 1 :] = _averages_before(u[sequence[others]], a)[before]
    return out
