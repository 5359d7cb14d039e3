"""The evaluation protocol: which rows train, validate and test one experiment.

Two protocols, one record format (an experiment is named by an int ``fold`` everywhere):

* leave-one-fold-out: the test fold's rows are the test set; validation (early stopping, the state gate, the
  ridge penalty) is whole dialogue groups held out of the other folds, never the test fold (``fold_split``,
  ``disjoint_validation``);
* predefined partitions (MSP-Podcast's Train / Development / Test1 ...): train on ``train``, stop early on
  ``dev``, test on one named test set; ``fold`` is that test set's number (``partition_folds``).

Every caller (``train-heads``, ``ablate``, the state stage, benchmarks) goes through ``experiment_split``
with the same settings, so their splits agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from core.errors import InputError

VALIDATION_SEED = 0  # which speakers are held out does not depend on the head's seed


@dataclass(frozen=True)
class FoldSplit:
    """Row indices (into the cache) of one fold's train / validation / test utterances, disjoint.

    ``validation_rule`` says how validation was held out (``VALIDATION_RULES``); ``warning`` is set when the
    rule had to fall back to one that shares speakers or dialogues with training (run records and reports
    carry it)."""

    fold: int
    train: np.ndarray  # [n_train] int64
    validation: np.ndarray  # [n_val] int64
    test: np.ndarray  # [n_test] int64
    validation_rule: str = "dialogue groups"
    warning: str | None = None


# How validation rows are held out of the training rows, best first (``disjoint_validation``):
VALIDATION_RULES = {
    "dialogue groups": "whole connected groups of speakers and dialogues: no validation speaker and no validation "
                       "dialogue has a row in training",
    "dev partition": "the corpus's own development partition",
    "whole dialogues": "whole dialogues; their speakers also speak in training dialogues",
    "whole speakers": "whole speakers; their dialogues continue in training with other speakers",
}


def linked_speakers(speakers: np.ndarray, dialogs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``[N]`` str: for each of ``rows``, a name for its set of speakers linked by shared dialogues (connected
    components of the speaker-dialogue graph; "" on other rows). For IEMOCAP a session (two speakers, all their
    dialogues); for a corpus without dialogues (each utterance its own) a single speaker. Holding out, or
    cross-fitting over, these units rather than single speakers keeps every dialogue on one side: a model then
    never learns from the labels of a dialogue whose other turns it is judged on (test rows never share a
    dialogue with training rows either: ``shared_groups`` checks it)."""
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


def _hold_out_units(units: np.ndarray, train_rows: np.ndarray, fraction: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Move whole units (``units[train_rows]``) to validation in a seeded order until it holds >= ``fraction``
    of the rows; at least one unit is held out and one kept."""
    names = np.unique(units[train_rows].astype(str))
    order = np.random.default_rng(seed).permutation(names)
    of_rows = units[train_rows].astype(str)
    held: list[str] = []
    for name in order[:-1]:
        held.append(name)
        if np.isin(of_rows, held).mean() >= fraction:
            break
    is_val = np.isin(of_rows, held)
    return train_rows[~is_val], train_rows[is_val]


def disjoint_validation(speakers: np.ndarray, dialogs: np.ndarray, train_rows: np.ndarray, fraction: float,
                        seed: int = VALIDATION_SEED) -> FoldSplit:
    """Hold out >= ``fraction`` of ``train_rows`` for validation (early stopping, the state gate, the ridge
    penalty: everything chosen on held-out rows), as whole *dialogue groups* (``linked_speakers``): no
    validation speaker speaks in a training row and no validation dialogue continues in training. A context
    state identifies its dialogue, so a validation speaker whose partner's rows train would score well for the
    wrong reason.

    With a single group in ``train_rows`` (every speaker linked to every other) that is impossible; the rule
    falls back to whole dialogues, then to whole speakers, and the returned split carries a ``warning``.
    Returns a ``FoldSplit`` with ``fold = -1`` and no test rows (callers fill those in)."""
    groups = linked_speakers(speakers, dialogs, train_rows)
    candidates = [("dialogue groups", groups, None)]
    candidates.append(("whole dialogues", dialogs, "the training rows form one group of speakers linked by shared "
                       "dialogues, so validation holds out whole dialogues whose speakers also speak in training "
                       "(validation scores are optimistic for speaker-specific cues)"))
    candidates.append(("whole speakers", speakers, "the training rows form one dialogue, so validation holds out "
                       "whole speakers whose dialogue continues in training (validation scores are optimistic, "
                       "most of all with a dialogue state)"))
    for rule, units, warning in candidates:
        if len(np.unique(units[train_rows].astype(str))) >= 2:
            train, validation = _hold_out_units(units, train_rows, fraction, seed)
            return FoldSplit(-1, train, validation, train_rows[:0], rule, warning)
    raise InputError("validation needs at least 2 speakers or 2 dialogues in the training rows")


def speaker_disjoint_validation(
    speakers: np.ndarray, train_rows: np.ndarray, fraction: float, seed: int = VALIDATION_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Move whole speakers from ``train_rows`` to validation until it holds >= ``fraction`` of them (the rule
    before dialogue groups; kept for measuring what it leaked, see tests/test_protocol.py).

    At least one speaker is held out and at least one kept. Returns ``(train, validation)`` rows.
    """
    if len(np.unique(speakers[train_rows])) < 2:
        raise InputError("speaker-disjoint validation needs at least 2 speakers in the training folds")
    return _hold_out_units(speakers, train_rows, fraction, seed)


ALL_FOLDS = 0  # the "fold" of a final model: every labelled row trains (or validates), none is a test row


def fold_split(folds: np.ndarray, speakers: np.ndarray, dialogs: np.ndarray, usable: np.ndarray, fold: int,
               val_fraction: float) -> FoldSplit:
    """Leave-fold-out split of rows: test = ``fold``; validation = whole dialogue groups of the other folds
    (``disjoint_validation``). ``fold == ALL_FOLDS``: no test rows; the final model trains on every usable row
    but the validation groups.

    ``folds`` [N] int, ``speakers`` [N] str, ``dialogs`` [N] str, ``usable`` [N] bool (rows every needed stage
    processed); unusable rows are left out of all three sets.
    """
    if fold != ALL_FOLDS and fold not in set(folds.tolist()):
        raise InputError(f"no fold {fold} (folds: {sorted(set(folds.tolist()))})")
    rows = np.arange(len(folds))
    test = rows[(folds == fold) & usable]
    held = disjoint_validation(speakers, dialogs, rows[(folds != fold) & usable], val_fraction)
    return replace(held, fold=fold, test=test)


TRAIN_SPLIT, DEV_SPLIT = "train", "dev"
_SPLIT_ALIASES = {"train": TRAIN_SPLIT, "training": TRAIN_SPLIT, "dev": DEV_SPLIT, "development": DEV_SPLIT,
                  "validation": DEV_SPLIT, "valid": DEV_SPLIT, "val": DEV_SPLIT}


def canonical_split(name: str) -> str:
    """``Train``/``training`` -> ``train``, ``Development``/``validation``/``val`` -> ``dev``; any other name is a
    test set and is kept as written (``Test1``)."""
    name = name.strip()
    return _SPLIT_ALIASES.get(name.lower(), name)


def unusable_test_set_name(name: str) -> str | None:
    """Why ``name`` cannot name a test set (it becomes a run folder's name), or None when it can."""
    if not any(c.isalnum() for c in name) or name.startswith(".") or any(c in name for c in "/\\"):
        return (f"split {name!r} is not a usable test-set name (it names a folder of runs: use letters and digits, "
                "e.g. Test1)")
    return None


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


def partition_split(splits: np.ndarray, folds: np.ndarray, speakers: np.ndarray, dialogs: np.ndarray,
                    usable: np.ndarray, fold: int, val_fraction: float) -> FoldSplit:
    """Predefined partitions: train = ``train`` rows, validation = ``dev`` rows (without any: whole dialogue
    groups held out of ``train``, as ``fold_split`` does), test = the rows of test set number ``fold``
    (``partition_folds``); ``fold == ALL_FOLDS``: no test rows (a final model)."""
    names = test_set_names(splits)
    if fold != ALL_FOLDS and not 1 <= fold <= len(names):
        raise InputError(f"no test set number {fold} (test sets: {', '.join(names) or 'none'})")
    rows = np.arange(len(splits))
    train = rows[(splits == TRAIN_SPLIT) & usable]
    validation = rows[(splits == DEV_SPLIT) & usable]
    if len(train) == 0:
        raise InputError("the partitions have no usable 'train' rows")
    test = rows[(folds == fold) & (splits != TRAIN_SPLIT) & (splits != DEV_SPLIT) & usable] if fold != ALL_FOLDS \
        else rows[:0]
    if len(validation) == 0:
        return replace(disjoint_validation(speakers, dialogs, train, val_fraction), fold=fold, test=test)
    return FoldSplit(fold=fold, train=train, validation=validation, test=test, validation_rule="dev partition")


def experiment_split(folds: np.ndarray, splits: np.ndarray | None, speakers: np.ndarray, dialogs: np.ndarray,
                     usable: np.ndarray, fold: int, val_fraction: float) -> FoldSplit:
    """The split of experiment ``fold``: ``partition_split`` when the corpus has partitions (``splits`` not
    None), else ``fold_split``."""
    if splits is not None:
        return partition_split(splits, folds, speakers, dialogs, usable, fold, val_fraction)
    return fold_split(folds, speakers, dialogs, usable, fold, val_fraction)


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


@dataclass(frozen=True)
class SharedGroup:
    """A speaker or a dialogue with rows in more than one fold or partition (a leak between them)."""

    kind: str  # "speaker" | "dialogue"
    name: str
    places: tuple[str, ...]  # the folds or partitions it appears in
    rows: int


def experiment_places(folds: np.ndarray, splits: np.ndarray | None) -> np.ndarray:
    """``[N]`` str: the fold (``fold 3``) or partition (``train``, ``dev``, ``Test1``) of every row."""
    if splits is not None:
        return np.asarray(splits).astype(str)
    return np.array([f"fold {f}" for f in np.asarray(folds).tolist()], dtype=object)


def shared_groups(speakers: np.ndarray, dialogs: np.ndarray, places: np.ndarray) -> list[SharedGroup]:
    """Speakers, then dialogues, that have rows in more than one of ``places`` ([N] str, ``experiment_places``),
    most rows first. Leave-one-fold-out and predefined partitions both assume there are none: a test speaker
    or dialogue that also trains makes a test score optimistic."""
    out: list[SharedGroup] = []
    for kind, keys in (("speaker", speakers), ("dialogue", dialogs)):
        keys = np.asarray(keys).astype(str)
        found: dict[str, set[str]] = {}
        for key, place in zip(keys, np.asarray(places).astype(str)):
            found.setdefault(key, set()).add(place)
        shared = [k for k, p in found.items() if len(p) > 1]
        counts = {k: int(n) for k, n in zip(*np.unique(keys[np.isin(keys, shared)], return_counts=True))}
        out += sorted((SharedGroup(kind, str(k), tuple(sorted(found[k], key=_natural_key)), counts[k]) for k in shared),
                      key=lambda g: (-g.rows, g.name))
    return out


def describe_shared(groups: list[SharedGroup], limit: int = 3) -> str:
    """One line naming the first ``limit`` speakers and dialogues of ``shared_groups`` and the counts."""
    speakers = [g for g in groups if g.kind == "speaker"]
    dialogues = [g for g in groups if g.kind == "dialogue"]
    parts = [f"{g.kind} {g.name} in {', '.join(g.places)} ({g.rows} rows)"
             for g in (speakers[:limit] + dialogues[:limit])]
    return (f"{len(speakers)} speaker(s) and {len(dialogues)} dialogue(s) appear in more than one fold or partition: "
            + "; ".join(parts) + ("; ..." if len(speakers) > limit or len(dialogues) > limit else ""))
