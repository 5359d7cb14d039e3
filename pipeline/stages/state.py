"""The dialogue-state stage: per fold, cross-fitted Mamba + EMA context vectors for every utterance.

No label of fold k's test session reaches any state stored for fold k:

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
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
import torch

from cache.parts import UnitResult
from cache.reader import CacheReader
from cache.schema import Failure
from core.errors import InputError
from core.metrics import ccc_loss
from core.provenance import package_versions
from core.standardise import zscore
from pipeline.features.layers import check_layer_choice, select_layer
from pipeline.models.mamba import kernel_available
from pipeline.models.state_model import DialogueStateUpdater, StateModelConfig
from pipeline.stages.runner import Stage, StagePlan, run_stage

log = logging.getLogger(__name__)
GROUPINGS = ("dialog", "speaker", "utterance")


@dataclass(frozen=True)
class StateConfig:
    """Settings of the state stage (stored with the cache)."""

    model: StateModelConfig = field(default_factory=StateModelConfig)
    grouping: str = "dialog"  # sequences: dialog_id | speaker | each utterance alone
    speech_layer: str = "mean"  # z's speech part: mean | last | N (pipeline.features.layers)
    epochs: int = 20  # each epoch visits every training sequence once, as a random crop
    window: int = 32  # crop length (utterances) for training; inference runs whole sequences
    burn_in: int = 4  # crop positions (after a cold start) left out of the loss
    batch_size: int = 32  # crops per step
    lr: float = 2e-3
    seed: int = 0


@dataclass
class StateInputs:
    """What the stage reads: ``z`` features, labels, folds and the sequences (rows in time order)."""

    z: np.ndarray  # [N, d_z] float32, raw (standardised per updater)
    targets: np.ndarray  # [N, 2] valence, arousal
    folds: np.ndarray  # [N] int
    usable: np.ndarray  # [N] bool: speech and prosody both ok
    sequences: list[np.ndarray]  # row indices, each within one fold, in time order


def build_sequences(manifest: pl.DataFrame, usable: np.ndarray, grouping: str) -> list[np.ndarray]:
    """Rows of each sequence in time order (manifest order is ``dialog_id, start_s``), split by fold."""
    if grouping not in GROUPINGS:
        raise InputError(f"state grouping must be one of {', '.join(GROUPINGS)}, not '{grouping}'")
    rows = np.flatnonzero(usable)
    if grouping == "utterance":
        return [np.array([r]) for r in rows]
    key = manifest[grouping if grouping == "speaker" else "dialog_id"].to_numpy()
    folds = manifest["fold"].to_numpy()
    order = manifest.with_row_index("row").sort([grouping if grouping == "speaker" else "dialog_id", "start_s"])
    sequences: dict[tuple, list[int]] = {}
    for row in order["row"].to_list():
        if usable[row]:
            sequences.setdefault((key[row], folds[row]), []).append(row)  # never across folds
    return [np.array(v) for v in sequences.values()]


def load_state_inputs(reader: CacheReader, config: StateConfig, targets: np.ndarray | None = None) -> StateInputs:
    for stage in ("speech", "prosody"):
        if stage not in reader.stages:
            raise InputError(f"{reader.path}: the state stage needs the '{stage}' stage first (--stages speech,prosody,state)")
    usable = reader.ok(["speech", "prosody"])
    speech = select_layer(reader.read("speech", "pooled"), check_layer_choice(config.speech_layer, allow_weighted=False))
    z = np.concatenate([speech, reader.read("prosody", "values")], axis=1)
    m = reader.manifest
    return StateInputs(
        z=z, targets=m.select("valence", "arousal").to_numpy().astype(np.float64) if targets is None else targets,
        folds=m["fold"].to_numpy(), usable=usable, sequences=build_sequences(m, usable, config.grouping))


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


def train_updater(inputs: StateInputs, excluded: tuple[int, ...], config: StateConfig, device: torch.device
                  ) -> tuple[DialogueStateUpdater, np.ndarray, dict]:
    """Train ``U(not excluded)`` on the sequences of the other folds. Returns it, its z, and a summary."""
    train_mask = inputs.usable & ~np.isin(inputs.folds, excluded)
    z = np.nan_to_num(zscore(inputs.z, inputs.z[train_mask])[0], nan=0.0).astype(np.float32)  # NaN: the mean
    mean, std = inputs.targets[train_mask].mean(0), inputs.targets[train_mask].std(0) + 1e-8
    y = ((inputs.targets - mean) / std).astype(np.float32)
    train_seqs = [s for s in inputs.sequences if train_mask[s[0]]]
    seed = config.seed  # one initialisation for all updaters keeps their state spaces comparable
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DialogueStateUpdater(z.shape[1], config.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-2)
    started = time.perf_counter()
    loss = torch.tensor(float("nan"))
    for _epoch in range(config.epochs):
        model.train()
        rng.shuffle(train_seqs)
        for start in range(0, len(train_seqs), config.batch_size):
            crops, skip = [], []
            for seq in train_seqs[start : start + config.batch_size]:
                offset = int(rng.integers(0, max(1, len(seq) - config.window + 1)))
                crops.append(seq[offset : offset + config.window])
                skip.append(0 if offset == 0 else config.burn_in)  # a mid-sequence crop starts cold
            zb, mask = _pad(z, crops)
            for i, k in enumerate(skip):
                mask[i, :k] = False
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
    model.eval()
    summary = {"excluded_folds": list(excluded), "train_sequences": len(train_seqs),
               "train_utterances": int(train_mask.sum()), "seconds": time.perf_counter() - started,
               "ema": float(model.ema()), "last_loss": float(loss.detach())}
    return model, z, summary


@torch.no_grad()
def states_of(model: DialogueStateUpdater, z: np.ndarray, sequences: list[np.ndarray], device: torch.device,
              batch: int = 64) -> dict[int, np.ndarray]:
    """Row -> c_t [d_state] for every row of ``sequences`` (whole sequences, causal)."""
    out: dict[int, np.ndarray] = {}
    ordered = sorted(sequences, key=len)  # similar lengths per batch: less padding
    for start in range(0, len(ordered), batch):
        chunk = ordered[start : start + batch]
        zb, _ = _pad(z, chunk)
        c, _ = model(zb.to(device))
        c = c.float().cpu().numpy()
        for i, seq in enumerate(chunk):
            for t, row in enumerate(seq):
                out[int(row)] = c[i, t]
    return out


def assignments(excluded: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(fold of the experiment, fold whose rows get states)`` pairs an updater serves."""
    if len(excluded) == 1:
        return [(excluded[0], excluded[0])]  # fold k's test rows
    j, k = excluded
    return [(k, j), (j, k)]  # fold k's training rows in fold j, and the other way round


def compute_updater_unit(inputs: StateInputs, excluded: tuple[int, ...], config: StateConfig,
                         device: torch.device) -> tuple[dict[str, np.ndarray], dict]:
    """Train one updater and compute the states it is responsible for (as named arrays)."""
    model, z, summary = train_updater(inputs, excluded, config, device)
    arrays: dict[str, np.ndarray] = {}
    for experiment_fold, rows_fold in assignments(excluded):
        seqs = [s for s in inputs.sequences if inputs.folds[s[0]] == rows_fold]
        states = states_of(model, z, seqs, device)
        rows = np.array(sorted(states), dtype=np.int64)
        arrays[f"fold{experiment_fold}_rows"] = rows
        arrays[f"fold{experiment_fold}_states"] = np.stack([states[r] for r in rows]) if len(rows) else \
            np.zeros((0, config.model.d_state), np.float32)
    return arrays, summary


def compute_fold_states(inputs: StateInputs, config: StateConfig, device: torch.device) -> dict[int, np.ndarray]:
    """All folds' states in memory (no cache): ``fold -> [N, d_state]``, zeros for unusable rows."""
    folds = sorted(set(inputs.folds.tolist()))
    out = {k: np.zeros((len(inputs.z), config.model.d_state), np.float32) for k in folds}
    for excluded in updater_plan(folds):
        arrays, _ = compute_updater_unit(inputs, excluded, config, device)
        _merge(out, arrays)
    return out


def _merge(out: dict[int, np.ndarray], arrays: dict[str, np.ndarray]) -> None:
    for name, rows in arrays.items():
        if name.endswith("_rows"):
            fold = int(name[len("fold"):-len("_rows")])
            out[fold][rows] = arrays[f"fold{fold}_states"]


def state_stage(reader: CacheReader, config: StateConfig, device: torch.device) -> Stage:
    """The stage contract of ``/state/fold_<k>``: one unit per cross-fitted updater (resumable per updater)."""
    inputs = load_state_inputs(reader, config)
    folds = sorted(set(inputs.folds.tolist()))
    plan = updater_plan(folds)
    fingerprint = {"config": asdict(config), "speech": reader.provenance("speech").get("model", {}),
                   "prosody": reader.provenance("prosody").get("feature_set_version")}
    provenance = {**fingerprint, "folds": folds, "updaters": [list(e) for e in plan],
                  "backend": "mamba-ssm CUDA kernel" if kernel_available(device) else "PyTorch reference scan",
                  "device_type": device.type, "packages": package_versions()}

    def compute(pending: list[tuple[int, list[int]]]) -> Iterator[tuple[int, UnitResult]]:
        for unit, _ in pending:
            arrays, summary = compute_updater_unit(inputs, plan[unit], config, device)
            log.info("state: updater without fold(s) %s trained in %.1f s", plan[unit], summary["seconds"])
            yield unit, UnitResult(rows=np.zeros(0, np.int64), arrays=arrays, failures=[], summary=summary)

    def assemble(units: Iterable[UnitResult], num_rows: int) -> tuple[dict[str, np.ndarray], list[Failure], dict]:
        out = {k: np.zeros((num_rows, config.model.d_state), np.float32) for k in folds}
        summaries = []
        for result in units:
            _merge(out, result.arrays)
            summaries.append(result.summary)  # kept with each unit, so provenance is whole after a resume
        datasets = {f"fold_{k}": v for k, v in out.items()}
        datasets["ok"] = inputs.usable.copy()
        return datasets, [], {"updater_summaries": summaries}

    stage_bytes = len(folds) * reader.manifest.height * config.model.d_state * 4  # float32 per fold
    return Stage(StagePlan("state", [[] for _ in plan], fingerprint, stage_bytes=stage_bytes), compute, provenance,
                 assemble)


def run_state_stage(cache_path: str, config: StateConfig, device: torch.device) -> None:
    """Compute and store ``/state/fold_<k>`` for every fold (resumable per updater)."""
    reader = CacheReader(cache_path)
    run_stage(cache_path, reader.manifest, state_stage(reader, config, device))
