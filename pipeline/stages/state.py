"""The dialogue-state stage: per fold, a context vector for every utterance from its dialogue's earlier turns.

This module reads the cache (``load_state_inputs``), plans the units of work and writes ``/state/fold_<k>``
through the stage contract (``pipeline.stages.runner``). What a kind computes is its own
(``pipeline.models.state_kinds``: ``ema-features``, ``ema-features-speaker``, ``ema-predictions``, ``mamba``):
the untrained context and the first-pass predictions are pure maths over arrays (``pipeline.features.context``),
the learned updaters train in ``pipeline.models.state_updater``.

The kinds that learn from labels are cross-fitted: no label of fold k's test session reaches any state stored for
fold k. ``ema-predictions`` has one unit per fold; ``mamba`` one per updater, ``U(not k)`` for fold k's test rows
and ``U(not {j, k})`` for its training rows in fold j (5 folds: 5 + 10 = 15 updaters). Each unit is committed on
its own: an interrupted stage resumes with the units still missing.

With predefined partitions (``core.protocol``: train / dev / test sets) every experiment shares one set of
states, stored once per test set (``/state/fold_<k>``, k = the test set's number):

* the untrained kinds fit their projection on the ``train`` rows;
* the kinds that learn from labels make the dev and test rows' states from the train partition only; train rows
  are cross-fitted over ``CROSS_FIT_GROUPS`` speaker groups of the train partition: a train row of group g gets
  its state from a model of the train partition minus g. With dialogue sequences a group holds whole sets of
  speakers linked by shared dialogues (``core.protocol.linked_speakers``), so no label of a row's dialogue, own
  speaker or co-speakers reaches its state, as for test rows. No dev or test label reaches any state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict

import numpy as np
import polars as pl
import torch

from cache.parts import UnitResult
from cache.reader import CacheReader
from cache.schema import Failure
from core.columns import manifest_splits
from core.errors import InputError
from core.protocol import TRAIN_SPLIT, linked_speakers, speaker_groups
from core.provenance import package_versions, table_fingerprint
from pipeline.features.context import StateInputs, build_sequences, merge_unit_states
from pipeline.features.layers import check_layer_choice, select_layer

# Re-exported: ``pipeline.extract``, ``pipeline.stages.registry``, ``cli.py`` and ``heads.training.features`` import these
# from here (their homes: ``pipeline.models.state_model`` and ``pipeline.models.state_kinds``).
from pipeline.models.state_kinds import CROSS_FITTED as CROSS_FITTED
from pipeline.models.state_kinds import StateKind, state_kind
from pipeline.models.state_kinds import default_kind as default_kind
from pipeline.models.state_kinds import state_columns as state_columns
from pipeline.models.state_model import StateConfig as StateConfig
from pipeline.models.state_model import state_config_from_dict as state_config_from_dict
from pipeline.stages.runner import Stage, StagePlan, run_stage

log = logging.getLogger(__name__)
CROSS_FIT_GROUPS = 5  # speaker groups of a train partition (the cross-fitting of the kinds that learn from labels)


def manifest_digest(manifest: pl.DataFrame, kind: StateKind) -> str:
    """A digest of the manifest columns states of ``kind`` depend on (``StateKind.columns``)."""
    return table_fingerprint(manifest.select("utt_id", *kind.columns).rows())


def read_speech_summary(reader: CacheReader, choice: str, block_rows: int = 4096, extra_columns: int = 0
                        ) -> np.ndarray:
    """``[N, D + extra_columns]`` float32: one hidden state, or their ``mean``, of every row in the first D columns
    (the rest left for the caller to fill), read ``block_rows`` rows at a time (memory: the result and one block; the
    whole ``[N, L+1, D]`` block is 14 GB at MSP-Podcast scale)."""
    rows = reader.dataset_shapes("speech")["pooled"][0]
    out = None
    for start in range(0, max(rows, 1), block_rows):
        block = select_layer(reader.read("speech", "pooled", np.s_[start : start + block_rows]), choice)
        if out is None:
            out = np.empty((rows, block.shape[1] + extra_columns), np.float32)
        out[start : start + len(block), : block.shape[1]] = block
    return out


def load_state_inputs(reader: CacheReader, config: StateConfig, targets: np.ndarray | None = None) -> StateInputs:
    for stage in ("speech", "prosody"):
        if stage not in reader.stages:
            raise InputError(f"{reader.path}: the state stage needs the '{stage}' stage first (--stages speech,prosody,state)")
    usable = reader.ok(["speech", "prosody"])
    prosody = reader.read("prosody", "values")
    # [speech | prosody] filled in one array: at MSP-Podcast scale each copy of the speech part is 1.1 GB
    z = read_speech_summary(reader, check_layer_choice(config.speech_layer, allow_weighted=False),
                            extra_columns=prosody.shape[1])
    speech_width = z.shape[1] - prosody.shape[1]
    z[:, speech_width:] = prosody
    del prosody
    m = reader.manifest
    splits = manifest_splits(m)
    speakers = m["speaker"].to_numpy()
    groups = None
    if splits is not None and state_kind(config).cross_fitted:  # only the kinds that use labels cross-fit
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
        speakers=speakers, dialogs=m["dialog_id"].to_numpy(), speech_width=speech_width, splits=splits,
        groups=groups)


def compute_fold_states(inputs: StateInputs, config: StateConfig, device: torch.device) -> dict[int, np.ndarray]:
    """All experiments' states in memory (no cache): ``fold -> [N, width]``, zeros for unusable rows."""
    kind = state_kind(config)
    width = kind.width(config, inputs.prosody_width)
    out = {k: np.zeros((len(inputs.z), width), np.float32) for k in inputs.experiments()}
    for unit in kind.units(inputs):
        arrays, _ = kind.compute_unit(inputs, unit, config, device)
        merge_unit_states(out, arrays)
    return out


def context_row_count(sequences: list[np.ndarray]) -> int:
    """How many rows have at least one previous turn in their sequence (0: the corpus has no dialogue context)."""
    return int(sum(max(len(seq) - 1, 0) for seq in sequences))


def state_stage(reader: CacheReader, config: StateConfig, device: torch.device) -> Stage:
    """The stage contract of ``/state/fold_<k>``: one unit per fold or per cross-fitted updater (resumable)."""
    inputs = load_state_inputs(reader, config)
    kind = state_kind(config)
    folds = inputs.experiments()
    plan = kind.units(inputs)
    width = kind.width(config, inputs.prosody_width)
    fingerprint = {"config": asdict(config), "speech": reader.provenance("speech").get("model", {}),
                   "manifest": manifest_digest(reader.manifest, kind),
                   "prosody": reader.provenance("prosody").get("feature_set_version")}
    context_rows = context_row_count(inputs.sequences)
    if context_rows == 0:
        log.warning("state: no dialogue context in this corpus (every %s has a single utterance); the states are "
                    "stored, and the heads leave them out", "speaker" if config.grouping == "speaker" else "dialogue")
    provenance = {**fingerprint, "folds": folds, "partitions": inputs.splits is not None, "kind": kind.name, "width": width,
                  "context_rows": context_rows, "context": context_rows > 0,
                  "includes_current_turn": kind.includes_current_turn,
                  "units": [list(e) for e in plan], "backend": kind.backend(device), "device_type": device.type,
                  "packages": package_versions()}

    def compute(pending: list[tuple[int, list[int]]]) -> Iterator[tuple[int, UnitResult]]:
        for unit, _ in pending:
            arrays, summary = kind.compute_unit(inputs, plan[unit], config, device)
            log.info("state: unit %s (%s) done in %.1f s", plan[unit], kind.name, summary["seconds"])
            yield unit, UnitResult(rows=np.zeros(0, np.int64), arrays=arrays, failures=[], summary=summary)

    def assemble(units: Iterable[UnitResult], num_rows: int) -> tuple[dict[str, np.ndarray], list[Failure], dict]:
        out = {k: np.zeros((num_rows, width), np.float32) for k in folds}
        summaries = []
        for result in units:
            merge_unit_states(out, result.arrays)
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
