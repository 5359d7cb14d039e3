"""Dialogue context that needs no network: the turns' sequences and causal averages of the previous turns.

For each utterance t of a dialogue (its rows in time order), the context is the exponentially weighted mean
of the *previous* turns' summaries, never the turn itself (the heads already see it)::

    c_t = sum_{s<t} a^(t-1-s) u_s / sum_{s<t} a^(t-1-s)        (c_1 = 0: no previous turn)
    m_t = 1 - a^(t-1)                                           how much history there is, in [0, 1)

and the state is ``[c_t, m_t]``. The speaker-aware variant keeps two such averages: over the same speaker's
previous turns and over the other speakers' previous turns, ``[c_self, m_self, c_other, m_other]``.

The summary ``u`` of an utterance (``turn_summaries``) is built from its cached features: the leading principal
components of the speech block and the whole z-scored prosody block; the projection is fitted on the training
rows of each fold only and uses no labels, so no cross-fitting is needed (``ema-features``,
``ema-features-speaker``). ``ema-predictions`` averages instead each previous turn's valence and arousal as
predicted out of fold by a ridge on ``u`` (``first_pass_plan``): that one learns from labels and is cross-fitted.

Everything here is a pure function of arrays (and of a manifest's columns, for the sequences): the state stage
(``pipeline.stages.state``) reads the cache, ``pipeline.models.state_kinds`` says which kind uses what, and
``heads.deployment.predict`` replays the same maths on new audio.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.signal import lfilter

from core.columns import manifest_splits
from core.errors import InputError
from core.linear import ridge_gcv
from core.protocol import ALL_FOLDS, TRAIN_SPLIT, experiment_numbers
from core.standardise import standardise, zscore

GROUPINGS = ("dialog", "speaker", "utterance")
Unit = tuple  # a unit of work: excluded folds ``(k,)``/``(j, k)``, or ``("train",)``/``("train", g)`` (partitions)
PREDICTED = ("valence", "arousal")  # what the first pass of ``ema-predictions`` predicts for every turn


@dataclass
class StateInputs:
    """What the state stage reads: ``z`` features, labels, folds and the sequences (rows in time order)."""

    z: np.ndarray  # [N, d_z] float32, raw (standardised per updater): speech summary, then prosody
    targets: np.ndarray  # [N, 2] valence, arousal
    folds: np.ndarray  # [N] int
    usable: np.ndarray  # [N] bool: speech and prosody both ok
    sequences: list[np.ndarray]  # row indices, each within one fold (or partition), in time order
    speakers: np.ndarray  # [N] str
    dialogs: np.ndarray | None = None  # [N] str dialog_id (an updater's validation holds out whole dialogue groups)
    speech_width: int = 0  # z[:, :speech_width] is the speech summary
    splits: np.ndarray | None = None  # [N] str partition of each row (core.protocol); None: k folds
    groups: np.ndarray | None = None  # [N] int cross-fitting group (1..G) of train rows, 0 elsewhere; only for the
    # kinds that learn from labels

    @property
    def prosody_width(self) -> int:
        """z[:, speech_width:] is the prosody block."""
        return self.z.shape[1] - self.speech_width

    def experiments(self) -> list[int]:
        """The experiments that get states: every fold, or every test set's number (partitions)."""
        return experiment_numbers(self.folds, self.usable, self.splits is not None)

    def train_partition(self) -> np.ndarray:
        """``[N] bool``: the usable rows of the ``train`` partition."""
        return self.usable & (self.splits == TRAIN_SPLIT)


def build_sequences(manifest: pl.DataFrame, usable: np.ndarray, grouping: str) -> list[np.ndarray]:
    """Rows of each sequence in time order, split by fold (by partition when the corpus has partitions).

    ``dialog``: a dialogue's turns by ``start_s`` (ties keep the manifest's order). ``speaker``: a speaker's
    utterances by ``start_s`` alone, which must then be given and distinct for each speaker: no order is
    invented (a tie broken by file names can hand the context the label, as EmoDB's names would)."""
    if grouping not in GROUPINGS:
        raise InputError(f"state grouping must be one of {', '.join(GROUPINGS)}, not '{grouping}'")
    rows = np.flatnonzero(usable)
    if grouping == "utterance":
        return [np.array([r]) for r in rows]
    column = "speaker" if grouping == "speaker" else "dialog_id"
    if grouping == "speaker":
        check_speaker_order(manifest.filter(pl.Series(usable)))
    key = manifest[column].to_numpy()
    splits = manifest_splits(manifest)
    folds = manifest["fold"].to_numpy() if splits is None else splits
    order = manifest.with_row_index("row").sort([column, "start_s"], maintain_order=True)
    sequences: dict[tuple, list[int]] = {}
    for row in order["row"].to_list():
        if usable[row]:
            sequences.setdefault((key[row], folds[row]), []).append(row)  # never across folds
    return [np.array(v) for v in sequences.values()]


def check_speaker_order(manifest: pl.DataFrame) -> None:
    """``--state-grouping speaker`` orders a speaker's utterances by ``start_s`` alone: refuse missing or tied
    values, naming the first speaker concerned."""
    missing = manifest.filter(pl.col("start_s").is_null())
    if missing.height:
        raise InputError(f"--state-grouping speaker orders each speaker's utterances by start_s, and {missing.height} "
                         f"utterance(s) have none (first: {missing['utt_id'][0]}); give start_s on one clock per "
                         "speaker, or use --state-grouping dialog")
    ties = manifest.group_by("speaker", "start_s", maintain_order=True).agg(pl.len().alias("n"), pl.col("utt_id").first()) \
        .filter(pl.col("n") > 1).sort("n", descending=True, maintain_order=True)
    if ties.height:
        first = ties.row(0, named=True)
        raise InputError(f"--state-grouping speaker orders each speaker's utterances by start_s alone, and speaker "
                         f"{first['speaker']} has {first['n']} utterances at start_s = {first['start_s']} (e.g. "
                         f"{first['utt_id']}; {ties.height} tie(s) in all); give each utterance of a speaker its own "
                         "time: an order taken from file names can leak the label")


def fit_block_projection(x: np.ndarray, train_rows: np.ndarray, components: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal axes of one block on ``train_rows``: ``(mean [d], std [d], axes [d, components])`` with each axis
    scaled so that the projected training rows have unit variance (columns beyond the block's rank are 0). ``x`` [N, d] float, NaN = missing (-> the mean)."""
    fitted = x[train_rows]
    train, mean, std = zscore(fitted, fitted)  # only the training rows are z-scored: they alone are used
    del fitted
    train = np.nan_to_num(train, nan=0.0, copy=False).astype(np.float32, copy=False)  # float32 products: half the time
    k = max(1, min(components, train.shape[1], len(train_rows) - 1))
    covariance = (train.T @ train).astype(np.float64) / max(1, len(train_rows) - 1)
    values, vectors = np.linalg.eigh(covariance)  # ascending
    values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
    axes = np.zeros((train.shape[1], components))  # always ``components`` wide: unused axes stay 0
    axes[:, :k] = vectors / np.sqrt(np.maximum(values, 1e-12))
    return mean, std, axes


PROJECT_ROWS = 65536  # rows projected at a time: the float64 product of all rows would be 2.2 GB at MSP-Podcast scale


def project_block(x: np.ndarray, mean: np.ndarray, std: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """``[N, d] -> [N, k]`` float32 with a block's fitted projection (NaN = the training mean), ``PROJECT_ROWS`` rows
    at a time (each row's projection is its own)."""
    out = np.empty((len(x), axes.shape[1]), np.float32)
    for start in range(0, len(x), PROJECT_ROWS):
        z = np.nan_to_num(standardise(x[start : start + PROJECT_ROWS], mean, std), nan=0.0, copy=False)
        out[start : start + PROJECT_ROWS] = z @ axes
    return out


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


# --- the untrained kinds' turn summaries, and ema-predictions' first pass ---------------------------------------

def fold_units(inputs: StateInputs) -> list[Unit]:
    """The units of work of the kinds without a network: one per experiment, or with partitions one that serves
    every test set."""
    if inputs.splits is not None:
        return [(inputs.experiments()[0],)] if inputs.experiments() else []
    return [(k,) for k in inputs.experiments()]


def projection_rows(inputs: StateInputs, fold: int) -> np.ndarray:
    """Rows the untrained context's projection is fitted on for experiment ``fold``: the other folds' usable rows
    (all of them for ``ALL_FOLDS``), or the train partition's."""
    if inputs.splits is not None:
        return np.flatnonzero(inputs.train_partition())
    return np.flatnonzero(inputs.usable & (inputs.folds != fold))


def fit_context_projection(inputs: StateInputs, train_rows: np.ndarray, components: int) -> dict[str, np.ndarray]:
    """The untrained kinds' per-turn summary, fitted on ``train_rows`` (no labels): the speech block's leading
    ``components`` principal components (``speech_mean/std/axes``) and the prosody block's z-scoring
    (``prosody_mean/std``)."""
    speech, prosody = inputs.z[:, : inputs.speech_width], inputs.z[:, inputs.speech_width :]
    mean, std, axes = fit_block_projection(speech, train_rows, components)
    _, prosody_mean, prosody_std = zscore(prosody, prosody[train_rows])
    return {"speech_mean": mean, "speech_std": std, "speech_axes": axes, "prosody_mean": prosody_mean,
            "prosody_std": prosody_std}


def turn_summaries(speech: np.ndarray, prosody: np.ndarray, projection: dict[str, np.ndarray]) -> np.ndarray:
    """``[N, components + F]`` float32 summaries ``u`` of turns: ``speech`` [N, D] (the state's speech layer),
    ``prosody`` [N, F] with NaN for undefined values (-> the training mean)."""
    z = standardise(prosody, projection["prosody_mean"], projection["prosody_std"])
    u_speech = project_block(speech, projection["speech_mean"], projection["speech_std"], projection["speech_axes"])
    return np.concatenate([u_speech, np.nan_to_num(z, nan=0.0)], axis=1).astype(np.float32)


def input_summaries(inputs: StateInputs, projection: dict[str, np.ndarray]) -> np.ndarray:
    """``turn_summaries`` of every row of ``inputs``."""
    return turn_summaries(inputs.z[:, : inputs.speech_width], inputs.z[:, inputs.speech_width :], projection)


def _served(inputs: StateInputs, fold: int, states: np.ndarray) -> dict[str, np.ndarray]:
    """A fold unit's arrays: the usable rows' states for experiment ``fold`` (with partitions: every test set)."""
    rows = np.flatnonzero(inputs.usable)
    served = [fold] if inputs.splits is None or fold == ALL_FOLDS else inputs.experiments()
    arrays = {}
    for k in served:
        arrays[f"fold{k}_rows"], arrays[f"fold{k}_states"] = rows, states[rows]
    return arrays


def compute_context_unit(inputs: StateInputs, fold: int, components: int, decay: float, speaker_aware: bool
                         ) -> tuple[dict[str, np.ndarray], dict]:
    """The untrained context of every usable row for the experiment of ``fold`` (with partitions: of every test
    set at once): each turn summarised with a projection fitted on ``projection_rows`` (no labels), then causal
    averages (weight ``decay``) over each sequence's previous turns."""
    started = time.perf_counter()
    train_rows = projection_rows(inputs, fold)
    u = input_summaries(inputs, fit_context_projection(inputs, train_rows, components))
    states = context_states(u, inputs.sequences, inputs.speakers, decay, speaker_aware=speaker_aware)
    summary = {"fold": fold, "projection_rows": len(train_rows), "seconds": time.perf_counter() - started}
    return _served(inputs, fold, states), summary


def first_pass_plan(inputs: StateInputs, fold: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(rows to predict, rows whose labels fit the predictor)]`` of experiment ``fold`` for ``ema-predictions``:
    no row is predicted by a model that saw its own fold's (so its own dialogue's) labels, and no model of
    experiment k sees fold k's labels.

    * folds: fold k's rows from the other folds; the rows of each training fold j from the folds other than j
      and k (``ALL_FOLDS``: fold j's rows from every other fold);
    * partitions: dev and test rows from the train partition; train rows of cross-fitting group g (whole
      dialogue groups) from the train partition less g.
    """
    usable = inputs.usable
    if inputs.splits is not None:
        train = inputs.train_partition()
        plan = [(usable & ~train, train)]
        for g in sorted(set(inputs.groups[train].tolist())):
            plan.append((train & (inputs.groups == g), train & (inputs.groups != g)))
        return plan
    folds = sorted(set(inputs.folds[usable].tolist()))
    plan = [] if fold == ALL_FOLDS else [(usable & (inputs.folds == fold), usable & (inputs.folds != fold))]
    for j in folds:
        if j != fold:
            plan.append((usable & (inputs.folds == j), usable & ~np.isin(inputs.folds, [j, fold])))
    return plan


def fit_first_pass(u: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """The first-pass predictor of ``ema-predictions``: a ridge from turn summaries ``u`` [n, d] to
    ``targets`` [n, 2], one penalty per target chosen by GCV on these rows alone (``core.linear``)."""
    weights, x_mean, y_mean, penalties = ridge_gcv(u, targets)
    return {"first_pass_weights": weights, "first_pass_x_mean": x_mean, "first_pass_y_mean": y_mean,
            "first_pass_penalties": penalties}


def first_pass_predictions(u: np.ndarray, model: dict[str, np.ndarray]) -> np.ndarray:
    """``[n, 2]`` valence/arousal of turns ``u`` [n, d] by a ``fit_first_pass`` model."""
    return ((u - model["first_pass_x_mean"]) @ model["first_pass_weights"] + model["first_pass_y_mean"]).astype(np.float32)


def predicted_context(predictions: np.ndarray, sequences: list[np.ndarray], speakers: np.ndarray, decay: float
                      ) -> np.ndarray:
    """``[N, 6]``: the causal averages of the previous turns' predicted valence and arousal, over the speaker's
    own turns and over the other speakers' turns, each with its history mass (``context_states``)."""
    return context_states(predictions, sequences, speakers, decay, speaker_aware=True)


def compute_prediction_unit(inputs: StateInputs, fold: int, components: int, decay: float
                            ) -> tuple[dict[str, np.ndarray], dict]:
    """``ema-predictions`` for the experiment of ``fold`` (partitions: of every test set at once): turn summaries
    with the projection fitted on ``projection_rows`` (no labels), first-pass predictions out of fold
    (``first_pass_plan``), then the causal averages of the previous turns' predictions (``predicted_context``)."""
    started = time.perf_counter()
    u = input_summaries(inputs, fit_context_projection(inputs, projection_rows(inputs, fold), components))
    predictions = np.zeros((len(u), len(PREDICTED)), np.float32)
    plan = first_pass_plan(inputs, fold)
    for target, fit in plan:
        if target.any():
            if fit.sum() < 2:
                raise InputError("ema-predictions needs labelled rows outside every fold to predict it out of fold")
            predictions[target] = first_pass_predictions(u[target], fit_first_pass(u[fit], inputs.targets[fit]))
    states = predicted_context(predictions, inputs.sequences, inputs.speakers, decay)
    summary = {"fold": fold, "first_pass_models": len(plan), "seconds": time.perf_counter() - started}
    return _served(inputs, fold, states), summary


def context_model(inputs: StateInputs, fold: int, components: int) -> dict[str, np.ndarray]:
    """What a model folder needs to give new audio the untrained context experiment ``fold``'s test rows got: the
    turn projection fitted on ``projection_rows`` (``ALL_FOLDS``: every row; partitions: the train partition)."""
    return fit_context_projection(inputs, projection_rows(inputs, fold), components)


def prediction_model(inputs: StateInputs, fold: int, components: int) -> dict[str, np.ndarray]:
    """``context_model`` and, for ``ema-predictions``, the first-pass predictor fitted on the same rows (every
    labelled row outside the fold)."""
    rows = projection_rows(inputs, fold)
    projection = fit_context_projection(inputs, rows, components)
    u = turn_summaries(inputs.z[rows, : inputs.speech_width], inputs.z[rows, inputs.speech_width :], projection)
    return {**projection, **fit_first_pass(u, inputs.targets[rows])}


def merge_unit_states(out: dict[int, np.ndarray], arrays: dict[str, np.ndarray]) -> None:
    """Write a unit's ``fold<k>_rows`` / ``fold<k>_states`` arrays into ``out[k]`` (``[N, width]`` per experiment)."""
    for name, rows in arrays.items():
        if name.endswith("_rows"):
            fold = int(name[len("fold"):-len("_rows")])
            out[fold][rows] = arrays[f"fold{fold}_states"]
