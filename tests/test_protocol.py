"""The evaluation protocol: leave-one-fold-out, validation by whole held-out speakers, never the test fold."""

import numpy as np
import pytest

from core.errors import InputError
from core.protocol import fold_split, speaker_disjoint_validation

SPEAKERS = np.repeat([f"spk{s}" for s in range(10)], 6)  # 10 speakers x 6 utterances
FOLDS = np.repeat(np.arange(10) // 2 + 1, 6)  # 5 folds of 2 speakers


def test_a_fold_split_never_mixes_the_test_fold_into_train_or_validation():
    usable = np.ones(len(FOLDS), bool)
    for fold in range(1, 6):
        split = fold_split(FOLDS, SPEAKERS, usable, fold, val_fraction=0.1)
        assert set(FOLDS[split.test]) == {fold}
        assert fold not in set(FOLDS[split.train]) | set(FOLDS[split.validation])
        assert len(set(split.train) | set(split.validation) | set(split.test)) == len(FOLDS)
        assert not set(SPEAKERS[split.train]) & set(SPEAKERS[split.validation])  # speaker-disjoint
        assert len(split.validation) >= 0.1 * (len(split.train) + len(split.validation))


def test_rows_a_stage_failed_are_left_out_of_every_split():
    usable = np.ones(len(FOLDS), bool)
    usable[[0, 7, 30]] = False
    for fold in range(1, 6):
        split = fold_split(FOLDS, SPEAKERS, usable, fold, val_fraction=0.1)
        used = np.concatenate([split.train, split.validation, split.test])
        assert not set(used.tolist()) & {0, 7, 30}


def test_validation_holds_out_whole_speakers_until_the_fraction_is_reached():
    train, validation = speaker_disjoint_validation(SPEAKERS, np.arange(len(SPEAKERS)), fraction=0.25)
    held = set(SPEAKERS[validation])
    assert len(held) == 3 and not held & set(SPEAKERS[train])  # 2 speakers = 20 % < 25 %, 3 = 30 %


def test_an_unknown_fold_is_a_clear_error():
    with pytest.raises(InputError, match="no fold 9"):
        fold_split(FOLDS, SPEAKERS, np.ones(len(FOLDS), bool), 9, val_fraction=0.1)
