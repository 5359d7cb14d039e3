"""The evaluation protocol: which rows train, validate and test one fold.

Leave-one-fold-out: the test fold's rows are the test set; validation (for early stopping) is whole
speakers held out of the other folds, never the test fold. Every caller (``train-heads``, ``ablate``,
benchmarks) goes through ``fold_split`` with the same settings, so their splits agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import InputError

VALIDATION_SEED = 0  # which speakers are held out does not depend on the head's seed


@dataclass(frozen=True)
class FoldSplit:
    """Row indices (into the cache) of one fold's train / validation / test utterances, disjoint."""

    fold: int
    train: np.ndarray  # [n_train] int64
    validation: np.ndarray  # [n_val] int64
    test: np.ndarray  # [n_test] int64


def speaker_disjoint_validation(
    speakers: np.ndarray, train_rows: np.ndarray, fraction: float, seed: int = VALIDATION_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Move whole speakers from ``train_rows`` to validation until it holds >= ``fraction`` of them.

    At least one speaker is held out and at least one kept. Returns ``(train, validation)`` rows.
    """
    train_speakers = np.unique(speakers[train_rows])
    if len(train_speakers) < 2:
        raise InputError("speaker-disjoint validation needs at least 2 speakers in the training folds")
    order = np.random.default_rng(seed).permutation(train_speakers)
    held: list[str] = []
    for speaker in order[:-1]:
        held.append(speaker)
        if np.isin(speakers[train_rows], held).mean() >= fraction:
            break
    is_val = np.isin(speakers[train_rows], held)
    return train_rows[~is_val], train_rows[is_val]


ALL_FOLDS = 0  # the "fold" of a final model: every labelled row trains (or validates), none is a test row


def fold_split(folds: np.ndarray, speakers: np.ndarray, usable: np.ndarray, fold: int,
               val_fraction: float) -> FoldSplit:
    """Leave-fold-out split of rows: test = ``fold``; validation = whole speakers of the other folds.
    ``fold == ALL_FOLDS``: no test rows; the final model trains on every usable row but the validation speakers.

    ``folds`` [N] int, ``speakers`` [N] str, ``usable`` [N] bool (rows every needed stage processed);
    unusable rows are left out of all three sets.
    """
    if fold != ALL_FOLDS and fold not in set(folds.tolist()):
        raise InputError(f"no fold {fold} (folds: {sorted(set(folds.tolist()))})")
    rows = np.arange(len(folds))
    test = rows[(folds == fold) & usable]
    train, validation = speaker_disjoint_validation(speakers, rows[(folds != fold) & usable], val_fraction)
    return FoldSplit(fold=fold, train=train, validation=validation, test=test)
