"""The learned (``mamba``) state's updaters: their training with early stopping, the states a trained updater
gives, and its export for a model folder. The network is ``pipeline.models.state_model``.

Each updater is a unit of work of the state stage (``pipeline.stages.state``), cross-fitted so that no label of
fold k's test session reaches any state stored for fold k:

* test rows of fold k get states from an updater trained on all other folds, ``U(not k)``;
* training rows in fold j != k get states from ``U(not {j, k})``, trained without j and without k, so the
  heads of fold k train on states of the same kind (made without their own labels) as they are tested on.

All updaters start from one initialisation (one seed): a head trains on states from four updaters and is tested
on states from a fifth, so their coordinates must agree. With a different seed per updater the states land in
unrelated coordinate systems and the heads get worse (measured on the sticky-dialogue test corpus: mean CCC 0.43
with the state vs 0.73 without it).

``U(not {j, k})`` serves fold j too, so 5 folds need 5 + 10 = 15 updaters. With predefined partitions dev and
test rows get states from ``U(train)``, trained on the train partition only, and train rows of cross-fitting
group g (``StateInputs.groups``) from ``U(train minus g)``: at most 1 + 5 updaters.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import numpy as np
import torch

from core.errors import InputError
from core.metrics import ccc_loss
from core.protocol import TRAIN_SPLIT, disjoint_validation
from core.standardise import standardise, zscore
from pipeline.features.context import StateInputs, Unit
from pipeline.models.state_model import DialogueStateUpdater, StateConfig


def updater_plan(folds: list[int]) -> list[tuple[int, ...]]:
    """The excluded-fold sets of all updaters: every single fold, then every pair."""
    if len(folds) < 3:
        raise InputError(f"cross-fitted states need at least 3 folds (the cache has {len(folds)})")
    return [(k,) for k in folds] + list(itertools.combinations(folds, 2))


def updater_units(inputs: StateInputs) -> list[Unit]:
    """The learned kind's units of work, one per updater: ``updater_plan`` of the folds, or with partitions
    ``("train",)`` and ``("train", g)`` for every cross-fitting group g."""
    if inputs.splits is not None:
        groups = sorted(set(inputs.groups.tolist()) - {0})
        return [(TRAIN_SPLIT,)] + [(TRAIN_SPLIT, g) for g in groups]
    return updater_plan(inputs.experiments())


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
