"""The evaluation protocol: leave-one-fold-out; validation by whole dialogue groups (never a speaker whose
dialogues continue in training), never the test fold; folds and partitions checked for shared speakers and
dialogues."""

import numpy as np
import polars as pl
import pytest

from core.errors import InputError
from core.metrics import ccc
from core.protocol import (
    disjoint_validation,
    experiment_places,
    fold_split,
    shared_groups,
    speaker_disjoint_validation,
)

SPEAKERS = np.repeat([f"spk{s}" for s in range(10)], 6)  # 10 speakers x 6 utterances
FOLDS = np.repeat(np.arange(10) // 2 + 1, 6)  # 5 folds of 2 speakers
DIALOGS = np.array([f"d{u}" for u in range(len(SPEAKERS))])  # no dialogues: each utterance its own


def _dialogue_corpus(seed: int = 0, folds: int = 5, dialogs_per_fold: int = 4, turns: int = 10):
    """IEMOCAP-shaped: each fold one session of 2 speakers talking in ``dialogs_per_fold`` dialogues. The label
    is the dialogue's emotion plus noise; the feature is a fingerprint of the dialogue (as a context state is)
    plus noise, and carries nothing else."""
    rng = np.random.default_rng(seed)
    speakers, dialogs, fold_of, labels, features = [], [], [], [], []
    for fold in range(1, folds + 1):
        for d in range(dialogs_per_fold):
            fingerprint, emotion = rng.normal(0, 1, 8), rng.normal(0, 1)
            for t in range(turns):
                speakers.append(f"s{fold}{'ab'[t % 2]}")
                dialogs.append(f"f{fold}d{d}")
                fold_of.append(fold)
                labels.append(emotion + rng.normal(0, 0.3))
                features.append(fingerprint + rng.normal(0, 0.1, 8))
    return (np.array(speakers), np.array(dialogs), np.array(fold_of), np.array(labels), np.array(features))


def _nearest_neighbour_ccc(features, labels, train, rows):
    """CCC on ``rows`` of a 1-nearest-neighbour regressor fitted on ``train`` (it memorises dialogues)."""
    distances = ((features[rows, None, :] - features[None, train, :]) ** 2).sum(-1)
    return ccc(labels[train][distances.argmin(1)], labels[rows])


def test_validation_with_dialogue_groups_is_as_pessimistic_as_the_test_fold_and_the_old_rule_was_not():
    speakers, dialogs, folds, labels, features = _dialogue_corpus()
    usable = np.ones(len(folds), bool)
    new_validation, old_validation, test = [], [], []
    for fold in range(1, 6):
        split = fold_split(folds, speakers, dialogs, usable, fold, val_fraction=0.2)
        new_validation.append(_nearest_neighbour_ccc(features, labels, split.train, split.validation))
        test.append(_nearest_neighbour_ccc(features, labels, np.concatenate([split.train, split.validation]),
                                           split.test))
        old_train, old_val = speaker_disjoint_validation(speakers, np.flatnonzero(folds != fold), 0.2)
        old_validation.append(_nearest_neighbour_ccc(features, labels, old_train, old_val))
    # The partner's turns of the same dialogues train: the old rule's validation looks excellent.
    assert np.mean(old_validation) > np.mean(test) + 0.6
    # Dialogue groups: validation knows no more about its dialogues than the test fold does.
    assert abs(np.mean(new_validation) - np.mean(test)) < 0.25


def test_validation_holds_out_whole_sessions_never_a_speaker_whose_partner_trains():
    speakers, dialogs, folds, _, _ = _dialogue_corpus()
    for fold in range(1, 6):
        split = fold_split(folds, speakers, dialogs, np.ones(len(folds), bool), fold, val_fraction=0.2)
        assert split.validation_rule == "dialogue groups" and split.warning is None
        assert not set(speakers[split.validation]) & set(speakers[split.train])
        assert not set(dialogs[split.validation]) & set(dialogs[split.train])
        assert set(folds[split.validation]).isdisjoint(folds[split.train])  # here a group is a session


def test_a_fold_split_never_mixes_the_test_fold_into_train_or_validation():
    usable = np.ones(len(FOLDS), bool)
    for fold in range(1, 6):
        split = fold_split(FOLDS, SPEAKERS, DIALOGS, usable, fold, val_fraction=0.1)
        assert set(FOLDS[split.test]) == {fold}
        assert fold not in set(FOLDS[split.train]) | set(FOLDS[split.validation])
        assert len(set(split.train) | set(split.validation) | set(split.test)) == len(FOLDS)
        assert not set(SPEAKERS[split.train]) & set(SPEAKERS[split.validation])  # speaker-disjoint
        assert len(split.validation) >= 0.1 * (len(split.train) + len(split.validation))


def test_rows_a_stage_failed_are_left_out_of_every_split():
    usable = np.ones(len(FOLDS), bool)
    usable[[0, 7, 30]] = False
    for fold in range(1, 6):
        split = fold_split(FOLDS, SPEAKERS, DIALOGS, usable, fold, val_fraction=0.1)
        used = np.concatenate([split.train, split.validation, split.test])
        assert not set(used.tolist()) & {0, 7, 30}


def test_without_dialogues_validation_holds_out_whole_speakers_until_the_fraction_is_reached():
    split = disjoint_validation(SPEAKERS, DIALOGS, np.arange(len(SPEAKERS)), fraction=0.25)
    held = set(SPEAKERS[split.validation])
    assert len(held) == 3 and not held & set(SPEAKERS[split.train])  # 2 speakers = 20 % < 25 %, 3 = 30 %


def test_one_linked_group_falls_back_to_whole_dialogues_with_a_warning():
    # A therapist in every session links every client to every other: one group only.
    speakers = np.array(["therapist", "c1"] * 5 + ["therapist", "c2"] * 5 + ["therapist", "c3"] * 5)
    dialogs = np.repeat(["d1", "d2", "d3"], 10)
    split = disjoint_validation(speakers, dialogs, np.arange(30), fraction=0.2)
    assert split.validation_rule == "whole dialogues" and "one group" in split.warning
    assert len(set(dialogs[split.validation])) == 1 and not set(dialogs[split.validation]) & set(dialogs[split.train])


def test_one_dialogue_falls_back_to_whole_speakers_with_a_warning():
    speakers, dialogs = np.array(["a", "b", "c"] * 4), np.array(["d"] * 12)
    split = disjoint_validation(speakers, dialogs, np.arange(12), fraction=0.2)
    assert split.validation_rule == "whole speakers" and "one dialogue" in split.warning


def test_an_unknown_fold_is_a_clear_error():
    with pytest.raises(InputError, match="no fold 9"):
        fold_split(FOLDS, SPEAKERS, DIALOGS, np.ones(len(FOLDS), bool), 9, val_fraction=0.1)


def test_speakers_and_dialogues_in_two_folds_are_found_with_their_row_counts():
    speakers = np.array(["a", "a", "a", "b", "b", "c"])
    dialogs = np.array(["d1", "d1", "d2", "d2", "d3", "d4"])
    folds = np.array([1, 1, 2, 2, 2, 3])
    found = shared_groups(speakers, dialogs, experiment_places(folds, None))
    assert [(g.kind, g.name, g.places, g.rows) for g in found] == [
        ("speaker", "a", ("fold 1", "fold 2"), 3)]  # d2 lies in fold 2 only; b and c in one fold each
    partitions = np.array(["train", "train", "Test1", "dev", "Test1", "Test1"])
    found = shared_groups(speakers, dialogs, experiment_places(folds, partitions))
    assert [(g.kind, g.name, g.places) for g in found] == [
        ("speaker", "a", ("Test1", "train")), ("speaker", "b", ("Test1", "dev")), ("dialogue", "d2", ("Test1", "dev"))]


def test_a_manifest_with_a_speaker_in_two_folds_is_refused_unless_accepted():
    from pipeline.corpora import check_disjoint

    manifest = pl.DataFrame({"speaker": ["a", "a", "b"], "dialog_id": ["x", "y", "z"], "fold": [1, 2, 2],
                             "split": pl.Series([None, None, None], dtype=pl.String)})
    with pytest.raises(InputError, match=r"1 speaker\(s\) and 0 dialogue\(s\).*speaker a in fold 1, fold 2 \(2 rows\)"
                                         r".*--allow-shared-speakers"):
        check_disjoint(manifest)
    assert [g.name for g in check_disjoint(manifest, allow_shared=True)] == ["a"]
