"""How well each interval and test holds its level at the corpus shapes users have.

Three parts: ``simulate`` draws one experiment of a given shape and scenario (two variants' test predictions,
or two ridge models trained leave-one-fold-out); ``measure`` applies every candidate interval and the
permutation test to it; ``measured_at`` looks up the table those measurements produced
(``heads/evaluation/calibration.csv``, written by ``benchmarks/bench_stats.py --calibration --write``) for the shape of a
user's evaluation, so every table can say how often its interval covered the truth at that shape.

The world of the simulation (one dimension; the other is analogous): truth ``t = u_speaker + e`` (sd 0.5 and
1); both variants share a prediction ``0.7 t + b_speaker + eps`` (sd 0.3 and 0.5: heads on the same features
make the same mistakes); each variant adds its own noise, and each seed adds training noise (sd 0.25 per
utterance). Scenarios:

* ``null``: both variants add utterance noise of sd 0.4: equally good and exchangeable per speaker;
* ``null-heterogeneous``: variant a adds utterance noise (sd 0.4), b a speaker-level error whose sd is matched
  so that the expected difference is 0 (``matched_speaker_noise``): equally good, not exchangeable;
* ``effect``: b adds utterance noise of sd 0.26 only (ΔCCC about +0.03 at this noise level): power;
* ``trained-null``: ten noisy features of the truth with speaker effects; variant a is a ridge on five of them,
  b on the other five, each trained on the other folds (leave one fold out, as the heads are): equally good by
  symmetry, with the dependence between folds that shared training data brings.

A quantity's truth (for coverage) is the mean of its estimate over many experiments of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from heads.evaluation.stats import (
    Moments,
    aggregate,
    bootstrap_counts,
    fold_sums,
    fold_t_interval,
    hierarchical_counts,
    interval,
    moments_from_arrays,
    permutation_p_value,
    rescaled_interval,
    slot_sums,
    swap_masks,
)

TABLE = Path(__file__).with_name("calibration.csv")
SCENARIOS = ("null", "null-heterogeneous", "effect", "trained-null")
DIFFERENCE_METHODS = ("percentile-bootstrap", "rescaled-bootstrap", "hierarchical-bootstrap", "fold-t")
MEAN_METHODS = ("percentile-bootstrap", "hierarchical-bootstrap", "fold-t")
SEED_NOISE = 0.25


@dataclass(frozen=True)
class Shape:
    """An evaluation design: F folds (1 = one test set) of G test speakers, S seeds."""

    folds: int
    speakers_per_fold: int
    seeds: int
    utterances_per_speaker: int = 60

    def __str__(self) -> str:
        where = f"{self.folds} folds" if self.folds > 1 else "1 test set"
        return f"{where} x {self.speakers_per_fold} speakers, {self.seeds} seed(s)"


@dataclass(frozen=True)
class Experiment:
    """Two variants' test predictions ``pred_a``/``pred_b`` [S, n], the truth [n], folds [n], speakers [n]."""

    pred_a: np.ndarray
    pred_b: np.ndarray
    true: np.ndarray
    folds: np.ndarray
    speakers: np.ndarray


def _corpus(rng: np.random.Generator, shape: Shape) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Speakers with 50-150 % of the nominal utterances each: ``(true, folds, speakers, speaker index)``."""
    groups = shape.folds * shape.speakers_per_fold
    counts = rng.integers(shape.utterances_per_speaker // 2, shape.utterances_per_speaker * 3 // 2 + 1, groups)
    speaker = np.repeat(np.arange(groups), counts)
    true = rng.normal(0, 0.5, groups)[speaker] + rng.normal(0, 1, len(speaker))
    return true, speaker // shape.speakers_per_fold + 1, np.array([f"s{k}" for k in speaker]), speaker


def simulate(rng: np.random.Generator, shape: Shape, scenario: str, speaker_noise: float = 0.4) -> Experiment:
    """One experiment of ``shape`` (see the module docstring); ``speaker_noise`` is b's speaker-level error sd in
    ``null-heterogeneous``."""
    true, folds, speakers, speaker = _corpus(rng, shape)
    n, groups = len(true), speaker.max() + 1
    if scenario == "trained-null":
        return _trained(rng, shape, true, folds, speakers, speaker)
    base = 0.7 * true + rng.normal(0, 0.3, groups)[speaker] + rng.normal(0, 0.5, n)
    a = base + rng.normal(0, 0.4, n)
    if scenario == "null":
        b = base + rng.normal(0, 0.4, n)
    elif scenario == "null-heterogeneous":
        b = base + rng.normal(0, speaker_noise, groups)[speaker]
    elif scenario == "effect":
        b = base + rng.normal(0, 0.26, n)
    else:
        raise ValueError(f"unknown scenario {scenario}")
    seeds = shape.seeds
    return Experiment(a + rng.normal(0, SEED_NOISE, (seeds, n)), b + rng.normal(0, SEED_NOISE, (seeds, n)), true,
                      folds, speakers)


def _trained(rng: np.random.Generator, shape: Shape, true: np.ndarray, folds: np.ndarray, speakers: np.ndarray,
             speaker: np.ndarray) -> Experiment:
    """Variant a: ridge on features 0-4, b: on features 5-9; each fold predicted by models fitted on the others."""
    groups = speaker.max() + 1
    features = true[:, None] + rng.normal(0, 0.5, (groups, 10))[speaker] + rng.normal(0, 1.5, (len(true), 10))
    pred = np.zeros((2, len(true)))
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        if not train.any():  # one test set: fit on an independent training corpus of the same kind
            y_train, _, _, o_speaker = _corpus(rng, Shape(5, max(shape.speakers_per_fold, 4), 1,
                                                          shape.utterances_per_speaker))
            x_train = (y_train[:, None] + rng.normal(0, 0.5, (o_speaker.max() + 1, 10))[o_speaker]
                       + rng.normal(0, 1.5, (len(y_train), 10)))
        else:
            x_train, y_train = features[train], true[train]
        for v, columns in enumerate((slice(0, 5), slice(5, 10))):
            x = x_train[:, columns]
            mean_x, mean_y = x.mean(0), y_train.mean()
            xc = x - mean_x
            weights = np.linalg.solve(xc.T @ xc + len(x) * np.eye(5), xc.T @ (y_train - mean_y))
            pred[v, test] = (features[test][:, columns] - mean_x) @ weights + mean_y
    return Experiment(pred[:1], pred[1:], true, folds, speakers)  # ridge is deterministic: one seed


def _moments(experiment: Experiment) -> tuple[Moments, Moments]:
    seeds = tuple(range(experiment.pred_a.shape[0]))
    return tuple(moments_from_arrays(p[:, :, None], experiment.true[:, None], experiment.folds, experiment.speakers,
                                     seeds) for p in (experiment.pred_a, experiment.pred_b))


def point_estimates(experiment: Experiment) -> tuple[float, float]:
    """``(mean-over-folds CCC of a, of b minus a)``: what the tables print."""
    a, b = _moments(experiment)
    point_a, point_b = (aggregate(fold_sums(m.values, m.group_fold, len(m.folds))) for m in (a, b))
    return float(point_a.mean["ccc"][0]), float(point_b.mean["ccc"][0] - point_a.mean["ccc"][0])


def measure(experiment: Experiment, rng: np.random.Generator, resamples: int = 1000, permutations: int = 2000,
            confidence: float = 0.95) -> dict:
    """Every candidate on one experiment: ``{"mean": {method: (low, high)}, "difference": {method: (low, high)},
    "p_permutation": p, "point_mean": CCC of a, "point_difference": b minus a}`` (mean over folds of CCC)."""
    a, b = _moments(experiment)
    folds = len(a.folds)
    sums_a, sums_b = (fold_sums(m.values, m.group_fold, folds) for m in (a, b))
    point_a, point_b = aggregate(sums_a), aggregate(sums_b)
    mean, difference = float(point_a.mean["ccc"][0]), float(point_b.mean["ccc"][0] - point_a.mean["ccc"][0])
    out: dict = {"point_mean": mean, "point_difference": difference, "mean": {}, "difference": {}}

    counts = bootstrap_counts(a.group_fold, resamples, rng)
    draws_a, draws_b = (aggregate(fold_sums(m.values, m.group_fold, folds, counts)).mean["ccc"][:, 0] for m in (a, b))
    out["mean"]["percentile-bootstrap"] = interval(draws_a, confidence)
    out["difference"]["percentile-bootstrap"] = interval(draws_b - draws_a, confidence)
    groups_per_fold = len(a.groups) / folds
    out["difference"]["rescaled-bootstrap"] = rescaled_interval(difference, *out["difference"]["percentile-bootstrap"],
                                                                groups_per_fold)
    if folds > 1:
        slots = hierarchical_counts(a.group_fold, resamples, rng)
        h_a, h_b = (aggregate(slot_sums(m.values, slots)).mean["ccc"][:, 0] for m in (a, b))
        out["mean"]["hierarchical-bootstrap"] = interval(h_a, confidence)
        out["difference"]["hierarchical-bootstrap"] = interval(h_b - h_a, confidence)
        fold_a, fold_b = point_a.per_fold["ccc"][:, 0], point_b.per_fold["ccc"][:, 0]
        out["mean"]["fold-t"] = fold_t_interval(fold_a, confidence)[:2]
        out["difference"]["fold-t"] = fold_t_interval(fold_b - fold_a, confidence)[:2]

    masks = swap_masks(len(a.groups), permutations, rng)
    shift = fold_sums(b.values - a.values, a.group_fold, folds, masks)
    null = aggregate(sums_b - shift).mean["ccc"][:, 0] - aggregate(sums_a + shift).mean["ccc"][:, 0]
    out["p_permutation"] = float(permutation_p_value(np.array(difference), null, exact=len(masks) == 2 ** len(a.groups)))
    return out


def matched_speaker_noise(shape: Shape, rng_seed: int = 1, experiments: int = 400) -> float:
    """The sd of b's speaker-level error at which ``null-heterogeneous`` has an expected difference of 0 at
    ``shape`` (bisection with common random numbers on the mean point difference)."""
    low, high = 0.05, 1.5
    for _ in range(14):
        middle = (low + high) / 2
        rng = np.random.default_rng(rng_seed)
        mean = np.mean([point_estimates(simulate(rng, shape, "null-heterogeneous", middle))[1]
                        for _ in range(experiments)])
        low, high = (middle, high) if mean > 0 else (low, middle)  # more speaker noise: b worse
    return (low + high) / 2


@lru_cache(maxsize=1)
def _table(path: Path = TABLE) -> pl.DataFrame | None:
    return pl.read_csv(path) if path.is_file() else None


def measured_at(method: str, quantity: str, folds: int, speakers_per_fold: float, seeds: int,
                path: Path = TABLE) -> dict | None:
    """The calibration of ``method`` for ``quantity`` (``mean`` or ``difference``) at the calibrated shape
    nearest the user's: the same number of folds (5, or 1 test set), the nearest speakers per fold (log scale)
    and seeds. Returns ``{"shape", "coverage" (lowest over scenarios), "false_positive" (highest over the null
    scenarios), "power"}`` or None when no calibrated shape has that many folds or the method is not there."""
    table = _table(path)
    if table is None:
        return None
    rows = table.filter((pl.col("method") == method) & (pl.col("quantity") == quantity) & (pl.col("folds") == folds))
    if rows.height == 0:
        return None
    speakers = rows["speakers_per_fold"].unique().to_numpy()
    nearest_speakers = int(speakers[np.argmin(np.abs(np.log(speakers) - np.log(max(speakers_per_fold, 1))))])
    rows = rows.filter(pl.col("speakers_per_fold") == nearest_speakers)
    seed_values = rows["seeds"].unique().to_numpy()
    nearest_seeds = int(seed_values[np.argmin(np.abs(seed_values - seeds))])
    # trained heads were simulated with one seed only (ridge is deterministic): they count at every seed count
    rows = rows.filter((pl.col("seeds") == nearest_seeds) | (pl.col("scenario") == "trained-null"))
    nulls = rows.filter(pl.col("scenario").str.contains("null"))
    effect = rows.filter(pl.col("scenario") == "effect")
    return {"shape": str(Shape(folds, nearest_speakers, nearest_seeds)), "coverage": float(rows["covered"].min()),
            "false_positive": float(nulls["rejected"].max()) if nulls.height else None,
            "power": float(effect["rejected"].max()) if effect.height else None}
