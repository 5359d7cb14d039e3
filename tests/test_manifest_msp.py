"""MSP-Podcast's release layout becomes partitions, per-podcast dialogues and per-podcast unknown speakers."""

import pytest

from core.errors import InputError
from pipeline.corpora import CORPORA, build_manifest
from pipeline.corpora.msp_podcast import read_msp_podcast
from tests.synth import MSP_RECORDS, msp_record, write_msp_tree

FIRST_EXTRA_LINE = len(MSP_RECORDS) + 2  # CSV: the header is line 1, MSP_RECORDS fill lines 2 ...


def test_a_release_tree_gives_one_row_per_labelled_segment_with_its_ratings(tmp_path):
    df, problems = read_msp_podcast(write_msp_tree(tmp_path))
    assert problems == [] and df.height == len(MSP_RECORDS)
    row = df.filter(df["utt_id"] == "MSP-PODCAST_0001_0008").row(0, named=True)
    assert (row["valence"], row["arousal"], row["dominance"]) == (4.0, 2.2, 2.6)
    assert row["emotion"] == "neutral" and row["speaker"] == "127" and row["dialog_id"] == "MSP-PODCAST_0001"
    assert row["path"] == str((tmp_path / "Audios" / "MSP-PODCAST_0001_0008.wav").resolve())
    assert row["sample_rate"] == 16000 and row["duration_s"] == pytest.approx(0.3)


def test_emotion_codes_become_words_and_an_empty_dominance_stays_null(tmp_path):
    df, _ = read_msp_podcast(write_msp_tree(tmp_path))
    emotions = dict(zip(df["utt_id"], df["emotion"]))
    assert emotions["MSP-PODCAST_0002_0002"] == "no agreement" and emotions["MSP-PODCAST_0003_0005"] == "contempt"
    assert emotions["MSP-PODCAST_0002_0004"] == "surprise" and emotions["MSP-PODCAST_0004_0007"] == "other"
    assert df.filter(df["utt_id"] == "MSP-PODCAST_0004_0010")["dominance"].to_list() == [None]


@pytest.mark.parametrize("fmt", ["json", "json-list"])
def test_csv_and_json_labels_give_the_same_manifest(tmp_path, fmt):
    from_csv, _ = read_msp_podcast(write_msp_tree(tmp_path / "csv", "csv"))
    from_json, problems = read_msp_podcast(write_msp_tree(tmp_path / "json", fmt))
    assert problems == []
    assert from_json.drop("path").equals(from_csv.drop("path"))


def test_the_csv_is_read_when_both_label_files_exist(tmp_path):
    root = write_msp_tree(tmp_path, "json")
    (root / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\nMSP-PODCAST_0001_0008.wav,A,7,1,7,9,Male,Train\n")
    df, problems = read_msp_podcast(root)
    assert problems == [] and df["utt_id"].to_list() == ["MSP-PODCAST_0001_0008"] and df["emotion"][0] == "anger"


def test_split_sets_become_partitions_and_test_sets_are_numbered_folds(tmp_path):
    df, _ = read_msp_podcast(write_msp_tree(tmp_path))
    by_split = {s: sorted(set(df.filter(df["split"] == s)["fold"].to_list())) for s in df["split"].unique()}
    assert by_split == {"train": [0], "dev": [0], "Test1": [1], "Test2": [2]}
    assert set(df.filter(df["dialog_id"] == "MSP-PODCAST_0002")["split"]) == {"dev"}


def test_segments_of_a_podcast_are_in_segment_order_including_three_number_names(tmp_path):
    df, _ = read_msp_podcast(write_msp_tree(tmp_path))
    podcast = df.filter(df["dialog_id"] == "MSP-PODCAST_0001")
    assert podcast["utt_id"].to_list() == ["MSP-PODCAST_0001_0003", "MSP-PODCAST_0001_0008",
                                           "MSP-PODCAST_0001_0011_0001", "MSP-PODCAST_0001_0011_0002"]
    assert podcast["start_s"].to_list() == [3.0, 8.0, 11.0001, 11.0002]


def test_unknown_speakers_become_one_pseudo_speaker_per_podcast(tmp_path):
    df, _ = read_msp_podcast(write_msp_tree(tmp_path))
    speakers = dict(zip(df["utt_id"], df["speaker"]))
    assert speakers["MSP-PODCAST_0001_0011_0001"] == speakers["MSP-PODCAST_0001_0011_0002"] == "unknown-0001"
    assert speakers["MSP-PODCAST_0005_0001"] == "unknown-0005" and speakers["MSP-PODCAST_0002_0004"] == "unknown-0002"
    assert speakers["MSP-PODCAST_0005_0002"] == speakers["MSP-PODCAST_0001_0008"] == "127"  # a known id spans podcasts


BAD_RECORDS = (
    (msp_record("podcast_0009_0001.wav"), "is not MSP-PODCAST_<podcast>_<segment>[_<part>].wav"),
    (msp_record("MSP-PODCAST_0001_0008.wav"), "duplicate file name"),
    (msp_record("MSP-PODCAST_0009_0002.wav", EmoAct="high"), "EmoAct is not a number: 'high'"),
    (msp_record("MSP-PODCAST_0009_0003.wav", EmoVal="inf"), "EmoVal is not a finite number"),
    (msp_record("MSP-PODCAST_0009_0004.wav", Split_Set="Test9"), "not one of Train, Development, Test1, Test2, Test3"),
    (msp_record("MSP-PODCAST_0009_0005.wav"), "missing audio file"),
)
NO_AUDIO = ("MSP-PODCAST_0009_0005.wav",)


def test_each_bad_csv_row_is_a_problem_naming_the_file_and_line_and_only_it_is_skipped(tmp_path):
    root = write_msp_tree(tmp_path, "csv", extra=tuple(r for r, _ in BAD_RECORDS), missing_audio=NO_AUDIO)
    df, problems = read_msp_podcast(root)
    assert df.height == len(MSP_RECORDS) and df["emotion"].null_count() == 0
    assert [p.line for p in problems] == list(range(FIRST_EXTRA_LINE, FIRST_EXTRA_LINE + len(BAD_RECORDS)))
    for problem, (_, reason) in zip(problems, BAD_RECORDS):
        assert problem.file == str(root / "Labels" / "labels_consensus.csv") and reason in problem.reason
    assert "(first at line 2)" in problems[1].reason
    assert str(root / "Audios" / "MSP-PODCAST_0009_0005.wav") in problems[-1].reason


def test_each_bad_json_entry_is_a_problem_opening_with_its_file_name(tmp_path):
    root = write_msp_tree(tmp_path, "json", extra=tuple(r for r, _ in BAD_RECORDS), missing_audio=NO_AUDIO)
    df, problems = read_msp_podcast(root)
    assert df.height == len(MSP_RECORDS) and len(problems) == len(BAD_RECORDS)
    for problem, (record, reason) in zip(problems, BAD_RECORDS):
        assert problem.file == str(root / "Labels" / "labels_consensus.json") and problem.line is None
        assert problem.reason.startswith(record["FileName"] + ": ") and reason in problem.reason
    assert "(first at entry 1)" in problems[1].reason


def test_a_label_file_without_a_required_column_is_an_input_error_naming_it(tmp_path):
    root = write_msp_tree(tmp_path)
    (root / "Labels" / "labels_consensus.csv").write_text("FileName,EmoClass,EmoVal\nMSP-PODCAST_0001_0008.wav,N,4\n")
    with pytest.raises(InputError, match=r"labels_consensus\.csv: missing required column\(s\): EmoAct, SpkrID, Split_Set"):
        read_msp_podcast(root)


def test_unreadable_json_is_an_input_error_naming_the_file(tmp_path):
    root = write_msp_tree(tmp_path, "json")
    (root / "Labels" / "labels_consensus.json").write_text('{"MSP-PODCAST_0001_0008.wav": {"EmoAct": ')
    with pytest.raises(InputError, match=r"labels_consensus\.json: cannot be read as JSON"):
        read_msp_podcast(root)


def test_a_folder_without_labels_is_one_problem_and_no_rows(tmp_path):
    df, problems = read_msp_podcast(tmp_path / "nowhere")
    assert df.height == 0 and len(problems) == 1
    assert problems[0].file == str(tmp_path / "nowhere") and "labels_consensus.csv" in problems[0].reason


def test_build_manifest_reads_msp_podcast_from_root(tmp_path):
    assert "msp-podcast" in CORPORA
    df, problems = build_manifest("msp-podcast", root=str(write_msp_tree(tmp_path)))
    assert problems == [] and df.height == len(MSP_RECORDS)


def test_build_manifest_of_an_empty_tree_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no usable utterances in this msp-podcast corpus"):
        build_manifest("msp-podcast", root=str(tmp_path))
