"""The evaluation protocol: which rows train, validate and test one experiment.

Two protocols, one record format (an experiment is named by an int ``fold`` everywhere):

* leave-one-fold-out: the test fold's rows are the test set; validation (for early stopping) is whole
  speakers held out of the other folds, never the test fold (``fold_split``);
* predefined partitions (MSP-Podcast's Train / Development / Test1 ...): train on ``train``, stop early on
  ``dev``, test on one named test set; ``fold`` is that test set's number (``partition_folds``).

Every caller (``train-heads``, ``ablate``, the state stage, benchmarks) goes through ``experiment_split``
with the same settings, so their splits agree.
"""

from __future__ import annotations

import re
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


TRAIN_SPLIT, DEV_SPLIT = "train", "dev"
_SPLIT_ALIASES = {"train": TRAIN_SPLIT, "training": TRAIN_SPLIT, "dev": DEV_SPLIT, "development": DEV_SPLIT,
                  "validation": DEV_SPLIT, "valid": DEV_SPLIT, "val": DEV_SPLIT}


def canonical_split(name: str) -> str:
    """``Train``/``training`` -> ``train``, ``Development``/``validation``/``val`` -> ``dev``; any other name is a
    test set and is kept as written (``Test1``)."""
    name = name.strip()
    return _SPLIT_ALIASES.get(name.lower(), name)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def test_set_names(splits: np.ndarray | list[str]) -> list[str]:
    """The test sets of a partitioned corpus in natural name order (``Test2`` before ``Test10``)."""
    names = {str(s) for s in splits} - {TRAIN_SPLIT, DEV_SPLIT}
    return sorted(names, key=_natural_key)


def experiment_numbers(folds: np.ndarray, usable: np.ndarray, partitioned: bool) -> list[int]:
    """The experiments a corpus holds: its folds, or its test sets' numbers (0 = train / dev is none), among the
    ``usable`` rows."""
    return sorted(set(folds[usable].tolist()) - ({ALL_FOLDS} if partitioned else set()))


def partition_folds(splits: np.ndarray | list[str]) -> np.ndarray:
    """``[N] int``: the number of each row's test set (1 = the first of ``test_set_names``), 0 on train and dev."""
    number = {name: i for i, name in enumerate(test_set_names(splits), start=1)}
    return np.array([number.get(str(s), 0) for s in splits], dtype=np.int64)


def partition_split(splits: np.ndarray, folds: np.ndarray, speakers: np.ndarray, usable: np.ndarray, fold: int,
                    val_fraction: float) -> FoldSplit:
    """Predefined partitions: train = ``train`` rows, validation = ``dev`` rows (without any: whole speakers held
    out of ``train``, as ``fold_split`` does), test = the rows of test set number ``fold`` (``partition_folds``);
    ``fold == ALL_FOLDS``: no test rows (a final model)."""
    names = test_set_names(splits)
    if fold != ALL_FOLDS and not 1 <= fold <= len(names):
        raise InputError(f"no test set number {fold} (test sets: {', '.join(names) or 'none'})")
    rows = np.arange(len(splits))
    train = rows[(splits == TRAIN_SPLIT) & usable]
    validation = rows[(splits == DEV_SPLIT) & usable]
    if len(train) == 0:
        raise InputError("the partitions have no usable 'train' rows")
    if len(validation) == 0:
        train, validation = speaker_disjoint_validation(speakers, train, val_fraction)
    test = rows[(folds == fold) & (splits != TRAIN_SPLIT) & (splits != DEV_SPLIT) & usable] if fold != ALL_FOLDS \
        else rows[:0]
    return FoldSplit(fold=fold, train=train, validation=validation, test=test)


def experiment_split(folds: np.ndarray, splits: np.ndarray | None, speakers: np.ndarray, usable: np.ndarray,
                     fold: int, val_fraction: float) -> FoldSplit:
    """The split of experiment ``fold``: ``partition_split`` when the corpus has partitions (``splits`` not
    None), else ``fold_split``."""
    if splits is not None:
        return partition_split(splits, folds, speakers, usable, fold, val_fraction)
    return fold_split(folds, speakers, usable, fold, val_fraction)


def experiment_name(fold: int, splits: np.ndarray | list[str] | None) -> str:
    """How tables name experiment ``fold``: ``fold 3``, a test set's name (``Test1``), or ``all`` (final model)."""
    if fold == ALL_FOLDS:
        return "all"
    if splits is None:
        return f"fold {fold}"
    names = test_set_names(splits)
    return names[fold - 1] if 1 <= fold <= len(names) else f"test set {fold}"


def speaker_groups(speakers: np.ndarray, rows: np.ndarray, groups: int, seed: int = VALIDATION_SEED) -> np.ndarray:
    """``[N] int``: the speakers of ``rows`` dealt into ``groups`` groups (1..groups) of similar row counts
    (largest speaker first, each to the currently smallest group; ties broken by a seeded order), 0 on other rows.
    For cross-fitting within one partition: each speaker's rows lie in exactly one group."""
    out = np.zeros(len(speakers), dtype=np.int64)
    names, counts = np.unique(speakers[rows], return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]  # largest first, seeded among equals
    sizes = np.zeros(min(groups, len(names)), dtype=np.int64)
    group_of = {}
    for i in order:
        g = int(np.argmin(sizes))
        group_of[names[i]] = g + 1
        sizes[g] += counts[i]
    out[rows] = [group_of[s] for s in speakers[rows]]
    return out


def linked_speakers(speakers: np.ndarray, dialogs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``[N]`` str: for each of ``rows``, a name for its set of speakers linked by shared dialogues (connected
    components of the speaker-dialogue graph; "" on other rows). Cross-fitting over these units, rather than over
    single speakers, keeps every dialogue in one group: an updater then never learns from the labels of a
    dialogue whose other turns it gives states to (test rows never share a dialogue with training rows either)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    first_speaker: dict[str, str] = {}
    for speaker, dialog in zip(speakers[rows], dialogs[rows]):
        other = first_speaker.setdefault(dialog, speaker)
        parent[root(speaker)] = root(other)
    out = np.full(len(speakers), "", dtype=object)
    out[rows] = [root(s) for s in speakers[rows]]
    return out
