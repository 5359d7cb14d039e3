"""IEMOCAP is read natively from its release tree, quirks included."""

from pathlib import Path

import pytest

from core.errors import InputError, report_problems
from pipeline.corpora.iemocap import parse_summary_line, read_iemocap, speaker_of
from tests.synth import iemocap_dialogs, write_iemocap_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_iemocap_tree(tmp_path_factory.mktemp("iemocap"))


def test_every_summary_line_becomes_one_row_with_its_values(tree):
    df, problems = read_iemocap(tree)
    assert problems == []
    expected = {
        utt: (session, dialog, cat, vad, start)
        for session, dialogs in iemocap_dialogs().items()
        for dialog, turns in dialogs.items()
        for utt, cat, vad, start in turns
    }
    assert sorted(df["utt_id"].to_list()) == sorted(expected)
    for row in df.iter_rows(named=True):
        session, dialog, cat, (v, a, d), start = expected[row["utt_id"]]
        assert row["fold"] == session
        assert row["dialog_id"] == dialog
        assert row["emotion"] == cat
        assert (row["valence"], row["arousal"], row["dominance"]) == pytest.approx((v, a, d), abs=1e-4)
        assert row["start_s"] == pytest.approx(start)
        assert row["speaker"] == row["utt_id"][:5] + row["utt_id"].rsplit("_", 1)[1][0]
        assert Path(row["path"]).is_file() and row["path"].endswith(f"{dialog}/{row['utt_id']}.wav")
        assert row["sample_rate"] == 16000 and row["duration_s"] == pytest.approx(0.6)


def test_rows_are_sorted_by_dialog_then_start_time(tree):
    df, _ = read_iemocap(tree)
    keys = list(zip(df["dialog_id"].to_list(), df["start_s"].to_list()))
    assert keys == sorted(keys)
    first = df.filter(df["dialog_id"] == "Ses01F_impro01")["utt_id"].to_list()
    assert first == ["Ses01F_impro01_M000", "Ses01F_impro01_F000", "Ses01F_impro01_F001"]


def test_dialog_ids_with_suffixes_and_xxx_labels_are_kept(tree):
    df, _ = read_iemocap(tree)
    assert "Ses05M_script01_1b" in df["dialog_id"].to_list()
    xxx = df.filter(df["emotion"] == "xxx")
    assert xxx.height == 5 and xxx["valence"].to_list() == pytest.approx([2.3333] * 5)


def test_speaker_is_session_plus_first_letter_of_last_segment():
    assert speaker_of("Ses01F_impro01_M003") == "Ses01M"
    assert speaker_of("Ses05M_script01_1b_F012") == "Ses05F"


def test_summary_line_parser_reads_the_documented_format():
    line = "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
    assert parse_summary_line(line) == (6.2901, 8.2357, "Ses01F_impro01_F000", "neu", [2.5, 2.5, 2.5])
    assert parse_summary_line("[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[high, 2, 3]").startswith("label not a number")
    assert parse_summary_line("[garbage") == "unreadable label line"


def test_missing_wav_and_bad_lines_are_reported_with_file_and_line(tree, tmp_path):
    import shutil

    copy = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(tree, copy)
    (copy / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F001.wav").unlink()
    label = copy / "Session2/dialog/EmoEvaluation/Ses02F_impro01.txt"
    label.write_text(label.read_text().replace("[2.5000, 2.5000, 2.5000]", "[2.5000, n/a, 2.5000]"))
    df, problems = read_iemocap(copy)
    assert df.height == 25 - 2
    reasons = {(Path(p.file).name, p.line): p.reason for p in problems}
    assert any(r.startswith("missing wav") for (f, _), r in reasons.items() if f == "Ses01F_impro01.txt")
    assert reasons[("Ses02F_impro01.txt", 3)].startswith("label not a number")  # header, blank, first turn
    with pytest.raises(InputError, match="Ses02F_impro01.txt:3"):
        report_problems(problems, strict=True, what="iemocap")


def test_a_folder_without_sessions_is_a_clear_problem(tmp_path):
    df, problems = read_iemocap(tmp_path)
    assert df.height == 0 and "not an IEMOCAP_full_release tree" in problems[0].reason
