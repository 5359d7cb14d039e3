"""EmoDB file names become speakers, speaker-disjoint folds and documented valence/arousal points."""

import numpy as np
import pytest

from pipeline.corpora.emodb import EMOTION_TO_VALENCE_AROUSAL, SPEAKER_FOLD, read_emodb
from pipeline.features.context import build_sequences
from tests.conftest import EMODB, EMODB_MISSING
from tests.synth import EMODB_SPEAKERS, write_emodb_tree

MALE = {"03", "10", "11", "12", "15"}


def test_file_names_give_speaker_emotion_and_mapped_ratings(tmp_path):
    df, problems = read_emodb(write_emodb_tree(tmp_path, emotions="WNF"))
    assert problems == [] and df.height == 30
    row = df.filter(df["utt_id"] == "08a01Fa").row(0, named=True)
    assert (row["speaker"], row["emotion"], row["valence"], row["arousal"]) == ("08", "happiness", 4.5, 4.0)
    assert row["fold"] == SPEAKER_FOLD["08"]
    assert row["sample_rate"] == 22050 and row["duration_s"] == pytest.approx(0.5)


def test_no_dialogue_order_is_invented_from_the_file_names(tmp_path):
    """EmoDB's names encode the emotion (08a01Fa: F = happiness): an order built from them hands the dialogue
    context the previous file's label. Each utterance is its own dialogue, and nothing orders them."""
    df, _ = read_emodb(write_emodb_tree(tmp_path, emotions="WNFTL"))
    assert df["dialog_id"].to_list() == df["utt_id"].to_list() and df["start_s"].unique().to_list() == [0.0]
    sequences = build_sequences(df, np.ones(df.height, bool), "dialog")
    assert len(sequences) == df.height and {len(s) for s in sequences} == {1}


def test_folds_pair_one_male_and_one_female_speaker():
    folds = {}
    for speaker, fold in SPEAKER_FOLD.items():
        folds.setdefault(fold, set()).add(speaker)
    assert sorted(folds) == [1, 2, 3, 4, 5]
    for pair in folds.values():
        assert len(pair) == 2 and len(pair & MALE) == 1
    assert set(SPEAKER_FOLD) == set(EMODB_SPEAKERS)


def test_mapping_puts_anger_high_arousal_low_valence_and_sadness_low_arousal():
    _, v_anger, a_anger = EMOTION_TO_VALENCE_AROUSAL["W"]
    _, v_sad, a_sad = EMOTION_TO_VALENCE_AROUSAL["T"]
    _, v_happy, _ = EMOTION_TO_VALENCE_AROUSAL["F"]
    assert a_anger > 4 and v_anger < 2 and a_sad < 2 and v_happy > 4
    for _, v, a in EMOTION_TO_VALENCE_AROUSAL.values():
        assert 1 <= v <= 5 and 1 <= a <= 5


def test_a_file_with_a_foreign_name_is_a_problem_not_a_row(tmp_path):
    root = write_emodb_tree(tmp_path, emotions="N")
    (root / "wav" / "notes.wav").write_bytes(b"RIFF")
    df, problems = read_emodb(root)
    assert df.height == 10 and "SSTTTEV" in problems[0].reason and problems[0].file.endswith("notes.wav")


@pytest.mark.skipif(not EMODB.is_dir(), reason=EMODB_MISSING)
def test_the_shared_emodb_copy_gives_535_rows_10_speakers_5_folds():
    df, problems = read_emodb(EMODB)
    assert problems == []
    assert (df.height, df["speaker"].n_unique(), df["fold"].n_unique()) == (535, 10, 5)
    counts = dict(df.group_by("emotion").len().iter_rows())
    assert counts == {"anger": 127, "boredom": 81, "neutral": 79, "happiness": 71, "fear": 69, "sadness": 62, "disgust": 46}
