"""The dialogue-state stage: per fold, a context vector for every utterance from its dialogue's earlier turns.

Three kinds (``StateConfig.kind``):

* ``ema-features``: no training. A causal exponentially weighted mean of the previous turns' features (the
  speech block's leading principal components and the whole z-scored prosody block;
  ``pipeline.features.context``), fitted on each fold's training rows (no labels). The current turn is not
  included: the heads see it already. One unit of work per fold.
* ``ema-features-speaker``: the same, with separate means over the speaker's own previous turns and over the
  other speakers' previous turns.
* ``mamba``: the research note's learned updater (``pipeline.models.state_model``): a causal Mamba over the
  dialogue's utterances, then an EMA (``c_t`` includes turn t), trained to predict valence and arousal,
  early-stopped on held-out speakers of its own training folds. Cross-fitted as below.

For ``mamba``, no label of fold k's test session reaches any state stored for fold k:

* test rows of fold k get states from an updater trained on all other folds, ``U(not k)``;
* training rows in fold j != k get states from ``U(not {j, k})``, trained without j and without k, so the
  heads of fold k train on states of the same kind (made without their own labels) as they are tested on.

All updaters start from one initialisation (one seed): a head trains on
states from four updaters and is tested on states from a fifth, so their coordinates must agree. With a
different seed per updater the states land in unrelated coordinate systems and the heads get worse
(measured on the sticky-dialogue test corpus: mean CCC 0.43 with the state vs 0.73 without it).

``U(not {j, k})`` serves fold j too, so 5 folds need 5 + 10 = 15 updaters. Each is a unit of work of the
stage contract (``pipeline.stages.runner``), committed on its own: an interrupted stage resumes with the
updaters still missing.

With predefined partitions (``core.protocol``: train / dev / test sets) every experiment shares one set of
states, stored once per test set (``/state/fold_<k>``, k = the test set's number):

* the untrained kinds fit their projection on the ``train`` rows;
* ``mamba``: dev and test rows get states from ``U(train)``, trained on the train partition only; train rows
  are cross-fitted over ``CROSS_FIT_GROUPS`` speaker groups of the train partition: a train row of group g gets
  its state from ``U(train minus g)``. With dialogue sequences a group holds whole sets of speakers linked by
  shared dialogues (``core.protocol.linked_speakers``), so no label of a row's dialogue, own speaker or
  co-speakers reaches its state, as for test rows. No dev or test label reaches any state. At most 1 + 5
  updaters.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import polars as pl
import torch

from cache.parts import UnitResult
from cache.reader import CacheReader
from cache.schema import Failure
from core.columns import manifest_splits
from core.errors import InputError
from core.linear import ridge_gcv
from core.metrics import ccc_loss
from core.protocol import (
    ALL_FOLDS,
    TRAIN_SPLIT,
    disjoint_validation,
    experiment_numbers,
    linked_speakers,
    speaker_groups,
)
from core.provenance import package_versions, table_fingerprint
from core.standardise import standardise, zscore
from pipeline.features.context import context_states, fit_block_projection, project_block
from pipeline.features.layers import check_layer_choice, select_layer
from pipeline.models.mamba import kernel_available
from pipeline.models.state_model import DialogueStateUpdater, StateModelConfig
from pipeline.stages.runner import Stage, StagePlan, run_stage

log = logging.getLogger(__name__)
GROUPINGS = ("dialog", "speaker", "utterance")
CROSS_FIT_GROUPS = 5  # speaker groups of a train partition (the learned kind's cross-fitting)
Unit = tuple  # a unit of work: excluded folds ``(k,)``/``(j, k)``, or ``("train",)``/``("train", g)`` (partitions)
KINDS = ("ema-features", "ema-features-speaker", "ema-predictions", "mamba")
CROSS_FITTED = ("ema-predictions", "mamba")  # kinds that use labels, and so cross-fit


@dataclass(frozen=True)
class StateConfig:
    """Settings of the state stage (stored with the cache)."""

    # ema-predictions | ema-features | ema-features-speaker | mamba (module docstring); ema-predictions measured best
    # (README, "The dialogue state"); it is cross-fitted, so it needs 3 folds or partitions (``default_kind``)
    kind: str = "ema-predictions"
    model: StateModelConfig = field(default_factory=StateModelConfig)  # its ``ema`` serves every kind
    grouping: str = "dialog"  # sequences: dialog_id | speaker | each utterance alone
    speech_layer: str = "mean"  # z's speech part: mean | last | N (pipeline.features.layers)
    context_components: int = 16  # ema kinds: principal components kept of the speech block
    context_decay: float = 0.5  # ema kinds: weight a of a turn one step further back (bench_context.py)
    epochs: int = 20  # mamba: at most this many epochs, each visiting every training sequence as a random crop
    window: int = 32  # crop length (utterances) for training; inference runs whole sequences
    burn_in: int = 4  # crop positions (after a cold start) left out of the loss
    batch_size: int = 32  # crops per step
    lr: float = 2e-3
    weight_decay: float = 1e-2
    val_fraction: float = 0.2  # share of each updater's training rows held out (whole dialogue groups) to stop early
    patience: int = 3  # epochs without a better validation CCC before an updater stops (with val_fraction)
    seed: int = 0


def default_kind(manifest: pl.DataFrame) -> str:
    """The state kind ``extract`` uses unless told: ``ema-predictions`` where it can be cross-fitted (predefined
    partitions, or 3 folds or more), else ``ema-features`` (no labels, any number of folds)."""
    if manifest_splits(manifest) is not None or manifest["fold"].n_unique() >= 3:
        return "ema-predictions"
    return "ema-features"


# The manifest columns the states depend on: the protocol and the dialogue order, and for the kinds that learn
# from labels the labels (``pipeline.extract`` refuses a changed manifest that touches them; parts of an interrupted
# state stage are reused only for the same values).
STATE_COLUMNS = ("fold", "split", "speaker", "dialog_id", "start_s")
LABEL_COLUMNS = ("valence", "arousal")


def state_columns(kind: str) -> tuple[str, ...]:
    return STATE_COLUMNS + (LABEL_COLUMNS if kind in CROSS_FITTED else ())


def manifest_digest(manifest: pl.DataFrame, kind: str) -> str:
    """A digest of the manifest columns states of ``kind`` depend on (``state_columns``)."""
    return table_fingerprint(manifest.select("utt_id", *state_columns(kind)).rows())


def state_config_from_dict(stored: dict) -> StateConfig:
    """The ``StateConfig`` stored with a cache (``asdict`` form) back as a config; unknown keys are ignored."""
    names = {f.name for f in fields(StateConfig)}
    model = StateModelConfig(**{k: v for k, v in stored.get("model", {}).items()
                                if k in {f.name for f in fields(StateModelConfig)}})
    return StateConfig(**{k: v for k, v in stored.items() if k in names and k != "model"}, model=model)


def state_width(config: StateConfig, prosody_width: int) -> int:
    """Width of the stored state vectors (the untrained kinds keep every prosody feature)."""
    if config.kind == "mamba":
        return config.model.d_state
    if config.kind == "ema-predictions":
        return (len(PREDICTED) + 1) * 2  # own and other speakers' previous turns, each with its history mass
    return (config.context_components + prosody_width + 1) * (2 if config.kind == "ema-features-speaker" else 1)


@dataclass
class StateInputs:
    """What the stage reads: ``z`` features, labels, folds and the sequences (rows in time order)."""

    z: np.ndarray  # [N, d_z] float32, raw (standardised per updater): speech summary, then prosody
    targets: np.ndarray  # [N, 2] valence, arousal
    folds: np.ndarray  # [N] int
    usable: np.ndarray  # [N] bool: speech and prosody both ok
    sequences: list[np.ndarray]  # row indices, each within one fold (or partition), in time order
    speakers: np.ndarray  # [N] str
    dialogs: np.ndarray | None = None  # [N] str dialog_id (an updater's validation holds out whole dialogue groups)
    speech_width: int = 0  # z[:, :speech_width] is the speech summary
    splits: np.ndarray | None = None  # [N] str partition of each row (core.protocol); None: k folds
    groups: np.ndarray | None = None  # [N] int cross-fitting group (1..CROSS_FIT_GROUPS) of train rows, 0 elsewhere;
    # only for the learned kind

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


def read_speech_summary(reader: CacheReader, choice: str, block_rows: int = 4096) -> np.ndarray:
    """``[N, D]`` float32: one hidden state, or their ``mean``, of every row, read ``block_rows`` rows at a time
    (memory: the result and one block; the whole ``[N, L+1, D]`` block is 14 GB at MSP-Podcast scale)."""
    rows = reader.dataset_shapes("speech")["pooled"][0]
    return np.concatenate([select_layer(reader.read("speech", "pooled", np.s_[start : start + block_rows]), choice)
                           for start in range(0, rows, block_rows)]) if rows else \
        select_layer(reader.read("speech", "pooled"), choice)


def load_state_inputs(reader: CacheReader, config: StateConfig, targets: np.ndarray | None = None) -> StateInputs:
    for stage in ("speech", "prosody"):
        if stage not in reader.stages:
            raise InputError(f"{reader.path}: the state stage needs the '{stage}' stage first (--stages speech,prosody,state)")
    usable = reader.ok(["speech", "prosody"])
    speech = read_speech_summary(reader, check_layer_choice(config.speech_layer, allow_weighted=False))
    z = np.concatenate([speech, reader.read("prosody", "values")], axis=1)
    m = reader.manifest
    splits = manifest_splits(m)
    speakers = m["speaker"].to_numpy()
    groups = None
    if splits is not None and config.kind in CROSS_FITTED:  # only the kinds that use labels cross-fit
        train = np.flatnonzero(usable & (splits == TRAIN_SPLIT))
        units = speakers
        if config.grouping == "dialog":  # whole dialogues per group: a row's dialogue never fits its own first pass
            linked = linked_speakers(speakers, m["dialog_id"].to_numpy(), train)
            # one linked group (say a host in every episode): whole dialogues are the units, never single speakers
            units = linked if len(set(linked[train])) >= 2 else m["dialog_id"].to_numpy().astype(object)
        groups = speaker_groups(units, train, CROSS_FIT_GROUPS, seed=config.seed)
    return StateInputs(
        z=z, targets=m.select("valence", "arousal").to_numpy().astype(np.float64) if targets is None else targets,
        folds=m["fold"].to_numpy(), usable=usable, sequences=build_sequences(m, usable, config.grouping),
        speakers=speakers, dialogs=m["dialog_id"].to_numpy(), speech_width=speech.shape[1], splits=splits,
        groups=groups)


def updater_plan(folds: list[int]) -> list[tuple[int, ...]]:
    """The excluded-fold sets of all updaters: every single fold, then every pair."""
    if len(folds) < 3:
        raise InputError(f"cross-fitted states need at least 3 folds (the cache has {len(folds)})")
    return [(k,) for k in folds] + list(itertools.combinations(folds, 2))


def _pad(z: np.ndarray, sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """[n_seq, T_max, d] zero-padded at the end (causal models never look right), and a [n_seq, T_max] mask."""
    steps = max(len(s) for s in sequences)
    out = np.zeros((len(sequences), steps, z.shape[1]), dtype=np.float32)
    mask = np.zeros((len(sequences), steps), dtype=bool)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = z[seq]
        mask[i, : len(seq)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def updater_training_rows(inputs: StateInputs, unit: Unit) -> np.ndarray:
    """``[N] bool``: the rows whose labels train the updater of ``unit`` (the other folds; the train partition,
    less one speaker group for ``("train", g)``)."""
    if inputs.splits is None:
        return inputs.usable & ~np.isin(inputs.folds, unit)
    train = inputs.train_partition()
    return train if len(unit) == 1 else train & (inputs.groups != unit[1])


def train_updater(inputs: StateInputs, excluded: Unit, config: StateConfig, device: torch.device
                  ) -> tuple[DialogueStateUpdater, np.ndarray, dict]:
    """Train the updater of unit ``excluded`` on the sequences holding its training rows
    (``updater_training_rows``); other rows of those sequences are context only. Returns it, its z, a summary.

    With ``config.val_fraction > 0`` whole dialogue groups of those folds are held out of the loss (their turns still
    feed the sequences as context) and the updater keeps the epoch with the best validation CCC on them,
    stopping after ``config.patience`` epochs without improvement: small corpora overfit an updater quickly.
    """
    train_mask = updater_training_rows(inputs, excluded)
    z = np.nan_to_num(zscore(inputs.z, inputs.z[train_mask])[0], nan=0.0).astype(np.float32)  # NaN: the mean
    mean, std = inputs.targets[train_mask].mean(0), inputs.targets[train_mask].std(0) + 1e-8
    y = ((inputs.targets - mean) / std).astype(np.float32)
    train_seqs = [s for s in inputs.sequences if train_mask[s].any()]
    loss_mask, val_rows = train_mask.copy(), np.zeros(0, np.int64)
    if config.val_fraction > 0:
        dialogs = inputs.dialogs if inputs.dialogs is not None else inputs.speakers
        val_rows = disjoint_validation(inputs.speakers, dialogs, np.flatnonzero(train_mask), config.val_fraction,
                                       seed=config.seed).validation
        loss_mask[val_rows] = False
    seed = config.seed  # one initialisation for all updaters keeps their state spaces comparable
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DialogueStateUpdater(z.shape[1], config.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    started = time.perf_counter()
    loss = torch.tensor(float("nan"))
    best_ccc, best_epoch, best_weights, epochs_run = -np.inf, 0, None, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        rng.shuffle(train_seqs)
        for start in range(0, len(train_seqs), config.batch_size):
            crops, skip = [], []
            for seq in train_seqs[start : start + config.batch_size]:
                offset = int(rng.integers(0, max(1, len(seq) - config.window + 1)))
                crops.append(seq[offset : offset + config.window])
                skip.append(0 if offset == 0 else config.burn_in)  # a mid-sequence crop starts cold
            zb, mask = _pad(z, crops)
            for i, (crop, k) in enumerate(zip(crops, skip)):
                mask[i, :k] = False
                mask[i, : len(crop)] &= torch.from_numpy(loss_mask[crop])  # held-out speakers: context only
            if not mask.any():
                continue
            yb, _ = _pad(y, crops)
            _, aux = model(zb.to(device))
            mask = mask.to(device)
            loss = ccc_loss(aux[mask], yb.to(device)[mask]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        epochs_run = epoch
        if len(val_rows):
            score = _validation_ccc(model, z, y, train_seqs, val_rows, device)
            if score > best_ccc:
                best_ccc, best_epoch = score, epoch
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= config.patience:
                break
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    summary = {"unit": list(excluded), "train_sequences": len(train_seqs),
               "train_utterances": int(loss_mask.sum()), "validation_utterances": int(len(val_rows)),
               "epochs_trained": epochs_run, "best_epoch": best_epoch or epochs_run,
               "validation_ccc": None if best_weights is None else float(best_ccc),
               "seconds": time.perf_counter() - started, "ema": float(model.ema()),
               "last_loss": float(loss.detach())}
    return model, z, summary


def _sequence_outputs(model: DialogueStateUpdater, z: np.ndarray, sequences: list[np.ndarray], device: torch.device,
                      batch: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(rows, c [T, d_state], aux [T, 2])`` of each whole sequence (causal), run in padded batches of
    similar length (less padding)."""
    ordered = sorted(sequences, key=len)
    for start in range(0, len(ordered), batch):
        chunk = ordered[start : start + batch]
        zb, _ = _pad(z, chunk)
        c, aux = (x.float().cpu().numpy() for x in model(zb.to(device)))
        for i, seq in enumerate(chunk):
            yield seq, c[i, : len(seq)], aux[i, : len(seq)]


@torch.no_grad()
def _validation_ccc(model: DialogueStateUpdater, z: np.ndarray, y: np.ndarray, sequences: list[np.ndarray],
                    rows: np.ndarray, device: torch.device) -> float:
    """Mean CCC (valence, arousal) of the updater's auxiliary predictions on ``rows``, whole sequences run."""
    model.eval()
    wanted = np.zeros(len(z), bool)
    wanted[rows] = True
    predicted, truth = [], []
    for seq, _, aux in _sequence_outputs(model, z, [s for s in sequences if wanted[s].any()], device):
        predicted.append(aux[wanted[seq]])
        truth.append(y[seq][wanted[seq]])
    if sum(len(p) for p in predicted) < 2:
        return -np.inf
    return float(1 - ccc_loss(torch.from_numpy(np.concatenate(predicted)), torch.from_numpy(np.concatenate(truth))).mean())


@torch.no_grad()
def states_of(model: DialogueStateUpdater, z: np.ndarray, sequences: list[np.ndarray], device: torch.device
              ) -> dict[int, np.ndarray]:
    """Row -> c_t [d_state] for every row of ``sequences`` (whole sequences, causal)."""
    out: dict[int, np.ndarray] = {}
    for seq, c, _ in _sequence_outputs(model, z, sequences, device):
        out.update(zip(seq.tolist(), c))
    return out


def assignments(inputs: StateInputs, unit: Unit) -> list[tuple[int, np.ndarray]]:
    """``(experiment, [N] bool rows that get their states from this unit's updater)`` pairs an updater serves."""
    if inputs.splits is not None:
        train = inputs.train_partition()
        rows = inputs.usable & ~train if len(unit) == 1 else train & (inputs.groups == unit[1])
        return [(k, rows) for k in inputs.experiments()]  # every test set shares the partition's states
    if len(unit) == 1:
        return [(unit[0], inputs.folds == unit[0])]  # fold k's test rows
    j, k = unit
    return [(k, inputs.folds == j), (j, inputs.folds == k)]  # fold k's training rows in fold j, and back


def compute_updater_unit(inputs: StateInputs, unit: Unit, config: StateConfig,
                         device: torch.device) -> tuple[dict[str, np.ndarray], dict]:
    """Train one updater and compute the states it is responsible for (as named arrays)."""
    model, z, summary = train_updater(inputs, unit, config, device)
    arrays: dict[str, np.ndarray] = {}
    for experiment, wanted in assignments(inputs, unit):
        states = states_of(model, z, [s for s in inputs.sequences if wanted[s].any()], device)
        rows = np.array(sorted(r for r in states if wanted[r]), dtype=np.int64)
        arrays[f"fold{experiment}_rows"] = rows
        arrays[f"fold{experiment}_states"] = np.stack([states[r] for r in rows]) if len(rows) else \
            np.zeros((0, config.model.d_state), np.float32)
    return arrays, summary


def fit_context_projection(inputs: StateInputs, train_rows: np.ndarray, config: StateConfig) -> dict[str, np.ndarray]:
    """The untrained kinds' per-turn summary, fitted on ``train_rows`` (no labels): the speech block's leading
    principal components (``speech_mean/std/axes``) and the prosody block's z-scoring (``prosody_mean/std``)."""
    speech, prosody = inputs.z[:, : inputs.speech_width], inputs.z[:, inputs.speech_width :]
    mean, std, axes = fit_block_projection(speech, train_rows, config.context_components)
    _, prosody_mean, prosody_std = zscore(prosody, prosody[train_rows])
    return {"speech_mean": mean, "speech_std": std, "speech_axes": axes, "prosody_mean": prosody_mean,
            "prosody_std": prosody_std}


def turn_summaries(speech: np.ndarray, prosody: np.ndarray, projection: dict[str, np.ndarray]) -> np.ndarray:
    """``[N, components + F]`` float32 summaries ``u`` of turns: ``speech`` [N, D] (the state's speech layer),
    ``prosody`` [N, F] with NaN for undefined values (-> the training mean)."""
    z = standardise(prosody, projection["prosody_mean"], projection["prosody_std"])
    u_speech = project_block(speech, projection["speech_mean"], projection["speech_std"], projection["speech_axes"])
    return np.concatenate([u_speech, np.nan_to_num(z, nan=0.0)], axis=1).astype(np.float32)


def projection_rows(inputs: StateInputs, fold: int) -> np.ndarray:
    """Rows the untrained context's projection is fitted on for experiment ``fold``: the other folds' usable rows
    (all of them for ``ALL_FOLDS``), or the train partition's."""
    if inputs.splits is not None:
        return np.flatnonzero(inputs.train_partition())
    return np.flatnonzero(inputs.usable & (inputs.folds != fold))


def compute_context_unit(inputs: StateInputs, fold: int, config: StateConfig) -> tuple[dict[str, np.ndarray], dict]:
    """The untrained context of every usable row for the experiment of ``fold`` (with partitions: of every test
    set at once): each turn summarised with a projection fitted on ``projection_rows`` (no labels), then causal
    averages over each sequence's previous turns."""
    started = time.perf_counter()
    train_rows = projection_rows(inputs, fold)
    projection = fit_context_projection(inputs, train_rows, config)
    u = turn_summaries(inputs.z[:, : inputs.speech_width], inputs.z[:, inputs.speech_width :], projection)
    states = context_states(u, inputs.sequences, inputs.speakers, config.context_decay,
                            speaker_aware=config.kind == "ema-features-speaker")
    rows = np.flatnonzero(inputs.usable)
    summary = {"fold": fold, "projection_rows": len(train_rows), "seconds": time.perf_counter() - started}
    served = [fold] if inputs.splits is None or fold == ALL_FOLDS else inputs.experiments()
    arrays = {}
    for k in served:
        arrays[f"fold{k}_rows"], arrays[f"fold{k}_states"] = rows, states[rows]
    return arrays, summary


def context_fold_states(inputs: StateInputs, fold: int, config: StateConfig) -> np.ndarray:
    """``[N, width]`` context of an ``ema-*`` kind for the experiment of ``fold`` (0 for unusable rows); with
    ``fold = core.protocol.ALL_FOLDS`` the projection is fitted on every usable row (a final model), and the
    first pass of ``ema-predictions`` predicts each fold from the others."""
    arrays, _ = (compute_prediction_unit if config.kind == "ema-predictions" else compute_context_unit)(
        inputs, fold, config)
    out = {fold: np.zeros((len(inputs.z), state_width(config, inputs.z.shape[1] - inputs.speech_width)), np.float32)}
    _merge(out, arrays)
    return out[fold]


PREDICTED = ("valence", "arousal")  # what the first pass of ``ema-predictions`` predicts for every turn


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


def predicted_context(predictions: np.ndarray, inputs: StateInputs, config: StateConfig) -> np.ndarray:
    """``[N, 6]``: the causal averages of the previous turns' predicted valence and arousal, over the speaker's
    own turns and over the other speakers' turns, each with its history mass (``context_states``)."""
    return context_states(predictions, inputs.sequences, inputs.speakers, config.context_decay, speaker_aware=True)


def compute_prediction_unit(inputs: StateInputs, fold: int, config: StateConfig) -> tuple[dict[str, np.ndarray], dict]:
    """``ema-predictions`` for the experiment of ``fold`` (partitions: of every test set at once): turn summaries
    with the projection fitted on ``projection_rows`` (no labels), first-pass predictions out of fold
    (``first_pass_plan``), then the causal averages of the previous turns' predictions (``predicted_context``)."""
    started = time.perf_counter()
    projection = fit_context_projection(inputs, projection_rows(inputs, fold), config)
    u = turn_summaries(inputs.z[:, : inputs.speech_width], inputs.z[:, inputs.speech_width :], projection)
    predictions = np.zeros((len(u), len(PREDICTED)), np.float32)
    for target, fit in first_pass_plan(inputs, fold):
        if target.any():
            if fit.sum() < 2:
                raise InputError("ema-predictions needs labelled rows outside every fold to predict it out of fold")
            predictions[target] = first_pass_predictions(u[target], fit_first_pass(u[fit], inputs.targets[fit]))
    states = predicted_context(predictions, inputs, config)
    rows = np.flatnonzero(inputs.usable)
    summary = {"fold": fold, "first_pass_models": len(first_pass_plan(inputs, fold)),
               "seconds": time.perf_counter() - started}
    served = [fold] if inputs.splits is None or fold == ALL_FOLDS else inputs.experiments()
    arrays = {}
    for k in served:
        arrays[f"fold{k}_rows"], arrays[f"fold{k}_states"] = rows, states[rows]
    return arrays, summary


def context_model(inputs: StateInputs, fold: int, config: StateConfig) -> dict[str, np.ndarray]:
    """What a model folder needs to give new audio the context experiment ``fold``'s test rows got: the turn
    projection, and for ``ema-predictions`` the first-pass predictor fitted on every labelled row outside the
    fold (``ALL_FOLDS``: on every row; partitions: on the train partition)."""
    rows = projection_rows(inputs, fold)
    projection = fit_context_projection(inputs, rows, config)
    if config.kind != "ema-predictions":
        return projection
    u = turn_summaries(inputs.z[rows, : inputs.speech_width], inputs.z[rows, inputs.speech_width :], projection)
    return {**projection, **fit_first_pass(u, inputs.targets[rows])}


def exported_updater(inputs: StateInputs, fold: int, config: StateConfig) -> dict[str, np.ndarray]:
    """What a model folder needs to give new audio the learned (``mamba``) state experiment ``fold``'s test rows
    got: the updater that made those states, ``U(not fold)`` (``U(train)`` with partitions), trained again exactly
    as the stage trained it (same rows, seed and early stopping; on the CPU), its input statistics (``z_mean``,
    ``z_std``) and weights (``updater.<name>``). Check it with ``learned_states`` against the cached states."""
    unit: Unit = (TRAIN_SPLIT,) if inputs.splits is not None else (fold,)
    model, _, _ = train_updater(inputs, unit, config, torch.device("cpu"))
    _, mean, std = zscore(inputs.z[:1], inputs.z[updater_training_rows(inputs, unit)])
    return {"z_mean": mean, "z_std": std,
            **{f"updater.{name}": v.detach().cpu().numpy() for name, v in model.state_dict().items()}}


def learned_states(updater: dict[str, np.ndarray], config: StateConfig, z: np.ndarray, sequences: list[np.ndarray]
                   ) -> np.ndarray:
    """``[N, d_state]`` states of the rows of ``sequences`` (zeros elsewhere) from an ``exported_updater``: ``z``
    ``[N, d_z]`` raw turn features (the state's speech layer, then prosody), standardised as in training."""
    x = np.nan_to_num(standardise(z, updater["z_mean"], updater["z_std"]), nan=0.0).astype(np.float32)
    model = DialogueStateUpdater(x.shape[1], config.model)
    model.load_state_dict({name[len("updater."):]: torch.from_numpy(np.array(v)) for name, v in updater.items()
                           if name.startswith("updater.")})
    model.eval()
    out = np.zeros((len(x), config.model.d_state), np.float32)
    for row, c in states_of(model, x, sequences, torch.device("cpu")).items():
        out[row] = c
    return out


def state_units(inputs: StateInputs, config: StateConfig) -> list[Unit]:
    """The units of work: one per fold for the untrained kinds, one per cross-fitted updater for ``mamba``;
    with partitions, one unit for the untrained kinds and 1 + ``CROSS_FIT_GROUPS`` updaters for ``mamba``."""
    if config.kind not in KINDS:
        raise InputError(f"state kind must be one of {', '.join(KINDS)}, not '{config.kind}'")
    if inputs.splits is not None:
        if config.kind != "mamba":  # one unit serves every test set
            return [(inputs.experiments()[0],)] if inputs.experiments() else []
        groups = sorted(set(inputs.groups.tolist()) - {0})
        return [(TRAIN_SPLIT,)] + [(TRAIN_SPLIT, g) for g in groups]
    folds = inputs.experiments()
    return updater_plan(folds) if config.kind == "mamba" else [(k,) for k in folds]


def compute_unit(inputs: StateInputs, unit: Unit, config: StateConfig, device: torch.device
                 ) -> tuple[dict[str, np.ndarray], dict]:
    if config.kind == "mamba":
        return compute_updater_unit(inputs, unit, config, device)
    if config.kind == "ema-predictions":
        return compute_prediction_unit(inputs, unit[0], config)
    return compute_context_unit(inputs, unit[0], config)


def compute_fold_states(inputs: StateInputs, config: StateConfig, device: torch.device) -> dict[int, np.ndarray]:
    """All experiments' states in memory (no cache): ``fold -> [N, width]``, zeros for unusable rows."""
    folds = inputs.experiments()
    width = state_width(config, inputs.z.shape[1] - inputs.speech_width)
    out = {k: np.zeros((len(inputs.z), width), np.float32) for k in folds}
    for unit in state_units(inputs, config):
        arrays, _ = compute_unit(inputs, unit, config, device)
        _merge(out, arrays)
    return out


def _merge(out: dict[int, np.ndarray], arrays: dict[str, np.ndarray]) -> None:
    for name, rows in arrays.items():
        if name.endswith("_rows"):
            fold = int(name[len("fold"):-len("_rows")])
            out[fold][rows] = arrays[f"fold{fold}_states"]


def context_row_count(sequences: list[np.ndarray]) -> int:
    """How many rows have at least one previous turn in their sequence (0: the corpus has no dialogue context)."""
    return int(sum(max(len(seq) - 1, 0) for seq in sequences))


def state_stage(reader: CacheReader, config: StateConfig, device: torch.device) -> Stage:
    """The stage contract of ``/state/fold_<k>``: one unit per fold or per cross-fitted updater (resumable)."""
    inputs = load_state_inputs(reader, config)
    folds = inputs.experiments()
    plan = state_units(inputs, config)
    width = state_width(config, inputs.z.shape[1] - inputs.speech_width)
    fingerprint = {"config": asdict(config), "speech": reader.provenance("speech").get("model", {}),
                   "manifest": manifest_digest(reader.manifest, config.kind),
                   "prosody": reader.provenance("prosody").get("feature_set_version")}
    backend = ("cross-fitted ridge, then causal averages (numpy)" if config.kind == "ema-predictions" else
               "untrained causal average (numpy)" if config.kind != "mamba" else
               "mamba-ssm CUDA kernel" if kernel_available(device) else "PyTorch reference scan")
    context_rows = context_row_count(inputs.sequences)
    if context_rows == 0:
        log.warning("state: no dialogue context in this corpus (every %s has a single utterance); the states are "
                    "stored, and the heads leave them out", "speaker" if config.grouping == "speaker" else "dialogue")
    provenance = {**fingerprint, "folds": folds, "partitions": inputs.splits is not None, "kind": config.kind, "width": width,
                  "context_rows": context_rows, "context": context_rows > 0,
                  "includes_current_turn": config.kind == "mamba",
                  "units": [list(e) for e in plan], "backend": backend, "device_type": device.type,
                  "packages": package_versions()}

    def compute(pending: list[tuple[int, list[int]]]) -> Iterator[tuple[int, UnitResult]]:
        for unit, _ in pending:
            arrays, summary = compute_unit(inputs, plan[unit], config, device)
            log.info("state: unit %s (%s) done in %.1f s", plan[unit], config.kind, summary["seconds"])
            yield unit, UnitResult(rows=np.zeros(0, np.int64), arrays=arrays, failures=[], summary=summary)

    def assemble(units: Iterable[UnitResult], num_rows: int) -> tuple[dict[str, np.ndarray], list[Failure], dict]:
        out = {k: np.zeros((num_rows, width), np.float32) for k in folds}
        summaries = []
        for result in units:
            _merge(out, result.arrays)
            summaries.append(result.summary)  # kept with each unit, so provenance is whole after a resume
        datasets = {f"fold_{k}": v for k, v in out.items()}
        datasets["ok"] = inputs.usable.copy()
        return datasets, [], {"unit_summaries": summaries}

    stage_bytes = len(folds) * reader.manifest.height * width * 4  # float32 per fold
    return Stage(StagePlan("state", [[] for _ in plan], fingerprint, stage_bytes=stage_bytes), compute, provenance,
                 assemble)


def run_state_stage(cache_path: str, config: StateConfig, device: torch.device) -> None:
    """Compute and store ``/state/fold_<k>`` for every fold (resumable per updater)."""
    reader = CacheReader(cache_path)
    run_stage(cache_path, reader.manifest, state_stage(reader, config, device))
