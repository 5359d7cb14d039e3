"""Uncertainty of head metrics: intervals chosen by calibration, paired comparisons, Holm's correction.

Which interval a table prints was chosen by measuring, not by habit (``benchmarks/bench_stats.py
--calibration``, the table in docs/benchmarks.md and ``heads/evaluation/calibration.csv``): simulated experiments of the
shapes users have (5 folds of 2, 4 or 10 test speakers, 1 or 3 seeds; single test sets of 10 or 50 speakers),
null and non-null differences, homogeneous and heterogeneous noise, and heads trained in the loop.

* **k folds: a t interval over the folds** (``fold_t_interval``). A fold's metric (or the difference of two
  variants' metrics) is computed on its test utterances, averaged over seeds; the interval is the mean over
  folds ± t(F-1) x sd/sqrt(F). Folds are independent groups of speakers. Of the candidates it came closest to
  the bar (false positives <= 6 %, coverage >= 93 % at every shape): for a difference, 3.7-6.0 % false
  positives and 93.9-96.3 % coverage everywhere but one case, the heterogeneous null at 2 speakers per fold
  (7.0-7.1 %, 92.7-93.0 %); for one variant's mean, 93.4-95.8 % coverage with predictions fixed, but
  89.9-91.8 % with heads trained in the loop (folds that share training data are correlated). The
  percentile speaker bootstrap within folds, the old interval, called a null difference real in 20-28 % of the
  experiments at IEMOCAP's 2 speakers per fold (a fold of two speakers has three distinct resamples), the
  rescaled one in 9-14 %, the two-stage (folds, then speakers) bootstrap in 5-10 %.
* **one test set (predefined partitions): the speaker bootstrap** (``bootstrap_counts``), resampling the test
  set's speakers: 6-8 % false positives and 92-94 % coverage at 50 speakers, worse below (see the table).

Comparisons of two variants on the same utterances also get a p-value from a paired **speaker-permutation
test**: swapping the two variants' predictions for any set of speakers leaves the distribution of the
difference unchanged when the predictions are exchangeable per speaker, so the p-value is exact under that
exchangeability (all swaps are enumerated up to 2^14 of them, else a random sample); it is not exact when the
variants differ in the structure of their errors (say one errs per utterance, the other per speaker), which
is why a difference is called real only when the interval excludes 0 *and* the Holm-adjusted p is below the
level. With G speakers the smallest p the enumeration can give is 2/2^G: with five or fewer speakers nothing
reaches 0.05, and the tables say so.

Everything is computed from per-speaker sufficient statistics ``[n, sum p, sum t, sum p^2, sum t^2, sum p*t]``,
so a resample costs a matrix product, not a pass over utterances.

Shapes: S seeds, G speaker groups (a speaker within a fold), F folds, D = 2 dimensions (valence, arousal),
B resamples. Metrics are ``ccc``, ``pearson``, ``mse`` (and ``rmse``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import product

import numpy as np
import polars as pl
from scipy import stats as scipy_stats

from core.columns import TARGETS
from core.errors import InputError

METRICS = ("ccc", "pearson", "mse", "rmse")
EXACT_SWAPS_UP_TO = 14  # speakers: 2^14 = 16384 swaps are enumerated, more are sampled


@dataclass(frozen=True)
class StatsConfig:
    """Settings of intervals and tests (saved in metrics.json)."""

    resamples: int = 2000  # bootstrap resamples; 0 = no intervals
    permutations: int = 10000  # sampled speaker swaps when there are too many to enumerate
    confidence: float = 0.95
    alpha: float = 0.05  # for the words "better" / "worse" / "not distinguishable"
    seed: int = 0


@dataclass(frozen=True)
class Moments:
    """Per-speaker sufficient statistics of one run label's test predictions.

    ``values`` [S, G, D, 6]; ``group_fold`` [G] fold index (into ``folds``) of each speaker group;
    ``groups`` the (fold, speaker) of each group; ``utt_ids`` the utterances every seed predicted."""

    values: np.ndarray
    group_fold: np.ndarray
    folds: tuple[int, ...]
    groups: tuple[tuple[int, str], ...]
    seeds: tuple[int, ...]
    utt_ids: frozenset[str]


def speaker_moments(predictions: pl.DataFrame) -> Moments:
    """Sufficient statistics per seed, (fold, speaker) group and dimension of a predictions table
    (columns ``seed, fold, speaker, utt_id, valence_true, valence_pred, arousal_true, arousal_pred``)."""
    seeds = sorted(predictions["seed"].unique().to_list())
    frames = [predictions.filter(pl.col("seed") == seed).sort("utt_id") for seed in seeds]
    first = frames[0]
    true = np.stack([first[f"{d}_true"].to_numpy() for d in TARGETS], -1)
    for seed, rows in zip(seeds, frames):
        if not rows["utt_id"].equals(first["utt_id"]):
            raise InputError(f"seed {seed} predicted other utterances than seed {seeds[0]}")
        if not np.array_equal(np.stack([rows[f"{d}_true"].to_numpy() for d in TARGETS], -1), true):
            raise InputError(f"seed {seed} has other true values than seed {seeds[0]} for the same utterances")
    pred = np.stack([np.stack([rows[f"{d}_pred"].to_numpy() for d in TARGETS], -1) for rows in frames])
    return moments_from_arrays(pred, true, first["fold"].to_numpy(), first["speaker"].cast(pl.String).to_numpy(),
                               tuple(seeds), frozenset(first["utt_id"].to_list()))


def moments_from_arrays(pred: np.ndarray, true: np.ndarray, folds: np.ndarray, speakers: np.ndarray,
                        seeds: tuple[int, ...] = (0,), utt_ids: frozenset[str] = frozenset()) -> Moments:
    """``pred`` [S, n, D], ``true`` [n, D], ``folds`` [n] int, ``speakers`` [n] -> per-group sums."""
    fold_values, fold_index = np.unique(np.asarray(folds, np.int64), return_inverse=True)
    speaker_values, speaker_index = np.unique(np.asarray(speakers).astype(str), return_inverse=True)
    codes, group = np.unique(fold_index * len(speaker_values) + speaker_index, return_inverse=True)  # (fold, speaker)
    keys = [(int(fold_values[c // len(speaker_values)]), str(speaker_values[c % len(speaker_values)])) for c in codes]
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    values = np.zeros((pred.shape[0], len(keys), pred.shape[2], 6))
    for s in range(pred.shape[0]):
        for d in range(pred.shape[2]):
            p, t = pred[s, :, d], true[:, d]
            for m, v in enumerate((np.ones_like(p), p, t, p * p, t * t, p * t)):
                values[s, :, d, m] = np.bincount(group, v, minlength=len(keys))
    fold_list = tuple(sorted({f for f, _ in keys}))
    group_fold = np.array([fold_list.index(f) for f, _ in keys])
    return Moments(values, group_fold, fold_list, tuple(keys), tuple(seeds), utt_ids)


def metrics_from_moments(m: np.ndarray) -> dict[str, np.ndarray]:
    """``[..., 6]`` sums -> ``{ccc, pearson, mse, rmse}`` of shape ``[...]`` (population moments, as
    ``core.metrics``). Undefined values (no rows, constant predictions and truth) are NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = m[..., 0]
        mp, mt = m[..., 1] / n, m[..., 2] / n
        vp = np.maximum(m[..., 3] / n - mp**2, 0.0)
        vt = np.maximum(m[..., 4] / n - mt**2, 0.0)
        cov = m[..., 5] / n - mp * mt
        mse = np.maximum(m[..., 3] / n - 2 * m[..., 5] / n + m[..., 4] / n, 0.0)
        denominator = vp + vt + (mp - mt) ** 2
        ccc = np.where(denominator > 0, 2 * cov / denominator, 0.0)  # as core.metrics: constants agree -> 0
        pearson = np.where(vp * vt > 0, cov / np.sqrt(vp * vt), 0.0)
        ccc, pearson = (np.where(n >= 2, v, np.nan) for v in (ccc, pearson))  # one utterance: undefined
    return {"ccc": ccc, "pearson": pearson, "mse": mse, "rmse": np.sqrt(mse)}


def fold_sums(values: np.ndarray, group_fold: np.ndarray, num_folds: int, weights: np.ndarray | None = None
              ) -> np.ndarray:
    """``[S, G, D, 6]`` -> ``[S, F, D, 6]``: sums of each fold's speaker groups; with ``weights`` [B, G]
    (bootstrap counts) -> ``[B, S, F, D, 6]``."""
    onehot = np.eye(num_folds)[group_fold]  # [G, F]
    if weights is None:
        return np.einsum("sgdm,gf->sfdm", values, onehot)
    return np.einsum("bg,sgdm,gf->bsfdm", weights, values, onehot, optimize=True)


def bootstrap_counts(group_fold: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[B, G]`` how often each speaker group is drawn: within each fold, as many draws as the fold has
    groups, uniformly with replacement."""
    counts = np.zeros((resamples, len(group_fold)))
    for fold in np.unique(group_fold):
        members = np.flatnonzero(group_fold == fold)
        counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=resamples)
    return counts


@dataclass(frozen=True)
class Aggregates:
    """One label's metrics, ``{metric: array}`` with the dimension D last (``ccc_avg`` has none):
    ``per_fold`` [..., F] (mean over seeds), ``per_seed`` [..., S] (mean over folds of each seed), ``mean``
    [...] (over folds and seeds: the table's number), ``pooled`` [...] (all test rows, mean over seeds)."""

    per_fold: dict[str, np.ndarray]
    per_seed: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    pooled: dict[str, np.ndarray]


def _with_avg(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**metrics, "ccc_avg": metrics["ccc"].mean(-1)}


def aggregate(sums: np.ndarray) -> Aggregates:
    """Metrics of fold sums ``[..., S, F, D, 6]`` (``...`` = resamples or nothing)."""
    per_seed_fold = metrics_from_moments(sums)  # [..., S, F, D]
    pooled = metrics_from_moments(sums.sum(-3))  # [..., S, D]
    return Aggregates(
        per_fold=_with_avg({k: v.mean(-3) for k, v in per_seed_fold.items()}),
        per_seed=_with_avg({k: v.mean(-2) for k, v in per_seed_fold.items()}),
        mean=_with_avg({k: v.mean((-3, -2)) for k, v in per_seed_fold.items()}),
        pooled=_with_avg({k: v.mean(-2) for k, v in pooled.items()}),
    )


def interval(draws: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis (resamples), ignoring undefined draws."""
    tail = (1 - confidence) / 2 * 100
    if not np.isnan(draws).any():
        low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
        return low, high
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: an undefined metric stays undefined
        low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    return low, high


def intervals(metrics: dict[str, np.ndarray], confidence: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``interval`` of every metric: ``(lows, highs)``."""
    bounds = {k: interval(v, confidence) for k, v in metrics.items()}
    return {k: b[0] for k, b in bounds.items()}, {k: b[1] for k, b in bounds.items()}


def swap_masks(num_groups: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """``[P, G]`` in {0, 1}: which speaker groups swap variants. Every one of the 2^G swaps when there are
    at most ``2**EXACT_SWAPS_UP_TO`` (the identity among them); otherwise ``permutations`` random ones, which
    may or may not include the identity (``permutation_p_value`` adds it once)."""
    if num_groups <= EXACT_SWAPS_UP_TO:
        return np.array(list(product((0, 1), repeat=num_groups)), dtype=np.float64)
    return rng.integers(0, 2, size=(permutations, num_groups)).astype(np.float64)


def permutation_p_value(observed: np.ndarray, null: np.ndarray, exact: bool) -> np.ndarray:
    """Two-sided p-value of ``observed`` [...] against the swap distribution ``null`` [P, ...]. An exact
    enumeration includes the identity swap once; sampled swaps count it once more: ``(1 + k) / (P + 1)``."""
    extreme = (np.abs(null) >= np.abs(observed) - 1e-12).sum(0)
    p = extreme / len(null) if exact else (1 + extreme) / (len(null) + 1)
    return np.where(np.isfinite(observed), p, np.nan)  # an undefined difference has no p-value


def smallest_permutation_p(num_groups: int) -> float:
    """The smallest two-sided p the full swap enumeration of ``num_groups`` speakers can give: 2 / 2^G (the
    identity and the complete swap are always as extreme as the observed difference)."""
    return 2.0 / 2.0**num_groups if num_groups <= EXACT_SWAPS_UP_TO else 0.0


def fold_t_interval(per_fold: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t interval of the mean over folds and the two-sided p-value of "mean = 0".

    ``per_fold`` [..., F]: each fold's metric, or each fold's difference of two variants (seeds averaged).
    Folds whose value is undefined (NaN) are left out; with fewer than 2 defined folds everything is NaN.
    Returns ``(low, high, p)`` of shape ``[...]``: mean ± t(F-1) sd(ddof=1) / sqrt(F)."""
    values = np.asarray(per_fold, np.float64)
    defined = np.isfinite(values)
    count = defined.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(defined, values, 0.0).sum(-1) / count
        squares = np.where(defined, (values - mean[..., None]) ** 2, 0.0).sum(-1)
        se = np.sqrt(squares / (count - 1) / count)
        df = np.maximum(count - 1, 1)
        half = scipy_stats.t.ppf(0.5 + confidence / 2, df) * se
        t = np.where(se > 0, np.abs(mean) / np.where(se > 0, se, 1.0), np.where(mean == 0, 0.0, np.inf))
        p = 2 * scipy_stats.t.sf(t, df)
    bad = count < 2
    return tuple(np.where(bad, np.nan, x) for x in (mean - half, mean + half, p))


def hierarchical_counts(group_fold: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[B, F, G]``: a two-stage bootstrap (a candidate of the calibration): F folds drawn with replacement,
    then within each drawn fold as many of its speaker groups as it has, with replacement. Slot j of resample
    b holds the counts of the groups of the fold drawn for it."""
    folds = int(group_fold.max()) + 1
    chosen = rng.integers(0, folds, size=(resamples, folds))
    weights = np.zeros((resamples, folds, len(group_fold)))
    for fold in range(folds):
        members = np.flatnonzero(group_fold == fold)
        draws = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=(resamples, folds))
        weights[:, :, members] += draws * (chosen == fold)[..., None]
    return weights


def slot_sums(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``values`` [S, G, D, 6] and ``hierarchical_counts`` [B, F, G] -> fold sums ``[B, S, F, D, 6]``."""
    return np.einsum("bjg,sgdm->bsjdm", weights, values, optimize=True)


def rescaled_interval(point: np.ndarray, low: np.ndarray, high: np.ndarray, groups_per_fold: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A percentile interval widened about the point by sqrt(g / (g - 1)) (a candidate of the calibration: the
    bootstrap's variance of a mean of g clusters is (g - 1) / g of the unbiased one)."""
    factor = np.sqrt(groups_per_fold / (groups_per_fold - 1)) if groups_per_fold > 1 else np.nan
    return point - (point - low) * factor, point + (high - point) * factor


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: family-wise error control across the comparisons of one metric. Undefined
    p-values (NaN) stay undefined and do not count in the family."""
    values = np.asarray(p_values, dtype=float)
    defined = np.flatnonzero(np.isfinite(values))
    order = defined[np.argsort(values[defined])]
    adjusted = np.full(len(values), np.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def reading(low: float, high: float, p_holm: float, alpha: float, smaller_is_better: bool = False) -> str:
    """Words for a difference: "better"/"worse" only when the interval excludes 0 and the adjusted p is
    below alpha; otherwise "not distinguishable"."""
    if not (np.isfinite(low) and np.isfinite(high)) or (low <= 0 <= high) or not p_holm < alpha:
        return "not distinguishable"
    higher = low > 0
    return "better" if higher != smaller_is_better else "worse"
