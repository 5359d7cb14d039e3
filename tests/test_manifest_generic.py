"""A user's CSV/Parquet manifest is validated row by row; problems name the file and line."""

import polars as pl
import pytest

from core.errors import InputError
from pipeline.corpora.generic import read_generic_manifest
from pipeline.corpora.manifest import read_manifest, write_manifest
from tests.synth import speechlike, write_wav


def _corpus(tmp_path, rows: list[str]) -> str:
    for name in ("a", "b", "c", "d"):
        write_wav(tmp_path / "audio" / f"{name}.wav", speechlike(ord(name), 0.4))
    path = tmp_path / "corpus.csv"
    path.write_text("utt_id,path,speaker,fold,valence,arousal,dialog_id,start_s\n" + "\n".join(rows) + "\n")
    return str(path)


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path):
    df, problems = read_generic_manifest(_corpus(tmp_path, ["u1,audio/a.wav,s1,1,3.0,2.0,d1,0.0",
                                                            "u2,audio/b.wav,s2,2,4.5,1.0,d1,1.5"]))
    assert problems == []
    assert df["path"].to_list() == [str(tmp_path / "audio" / "a.wav"), str(tmp_path / "audio" / "b.wav")]
    assert df["valence"].to_list() == [3.0, 4.5] and df["fold"].to_list() == [1, 2]
    assert df["duration_s"].to_list() == pytest.approx([0.4, 0.4])


def test_bad_rows_are_skipped_with_their_line_numbers(tmp_path):
    df, problems = read_generic_manifest(_corpus(tmp_path, [
        "u1,audio/a.wav,s1,1,3.0,2.0,d1,0.0",
        "u2,audio/b.wav,s1,1,high,2.0,d1,1.0",   # line 3: not a number
        "u1,audio/c.wav,s1,1,3.0,2.0,d1,2.0",    # line 4: duplicate id
        "u4,audio/zz.wav,s1,1,3.0,2.0,d1,3.0",   # line 5: missing file
        "u5,audio/d.wav,s1,one,3.0,2.0,d1,4.0",  # line 6: fold not an integer
    ]))
    assert df["utt_id"].to_list() == ["u1"]
    by_line = {p.line: p.reason for p in problems}
    assert by_line[3].startswith("label not a number") and "duplicate" in by_line[4]
    assert by_line[5].startswith("missing audio file") and "fold" in by_line[6]


def test_missing_required_columns_fail_naming_them(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("utt_id,path\nu1,a.wav\n")
    with pytest.raises(InputError, match=r"speaker, fold \(or split\), valence, arousal"):
        read_generic_manifest(path)


def test_without_dialog_ids_each_utterance_is_its_own_dialogue(tmp_path):
    write_wav(tmp_path / "a.wav", speechlike(1, 0.3))
    path = tmp_path / "m.parquet"
    pl.DataFrame({"utt_id": ["x", "y"], "path": ["a.wav", "a.wav"], "speaker": ["s", "s"], "fold": [1, 2],
                  "valence": [1.0, 2.0], "arousal": [3.0, 4.0]}).write_parquet(path)
    df, problems = read_generic_manifest(path)
    assert problems == [] and df["dialog_id"].to_list() == ["x", "y"]


def test_written_manifests_read_back_identically(tmp_path):
    df, _ = read_generic_manifest(_corpus(tmp_path, ["u1,audio/a.wav,s1,1,3.0,2.0,d1,0.0"]))
    for name in ("m.csv", "m.parquet"):
        write_manifest(df, tmp_path / name)
        assert read_manifest(tmp_path / name).equals(df)


def test_a_split_column_gives_partitions_with_test_sets_numbered_by_name(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_wav(tmp_path / "audio" / f"{name}.wav", speechlike(ord(name), 0.3))
    path = tmp_path / "parts.csv"
    path.write_text("utt_id,path,speaker,split,valence,arousal\n"
                    "u1,audio/a.wav,s1,Train,3,2\nu2,audio/b.wav,s2,validation,3,2\n"
                    "u3,audio/c.wav,s3,eval-b,3,2\nu4,audio/d.wav,s4,eval-a,3,2\nu5,audio/d.wav,s4,,3,2\n")
    df, problems = read_generic_manifest(path)
    rows = {r["utt_id"]: (r["split"], r["fold"]) for r in df.iter_rows(named=True)}
    assert rows == {"u1": ("train", 0), "u2": ("dev", 0), "u3": ("eval-b", 2), "u4": ("eval-a", 1)}
    assert [(p.line, p.reason.split(" (")[0]) for p in problems] == [(6, "empty split")]


def test_a_written_manifest_reads_back_as_a_user_manifest_with_folds_or_partitions(tmp_path):
    for name in ("a", "b"):
        write_wav(tmp_path / "audio" / f"{name}.wav", speechlike(ord(name), 0.3))
    folds, _ = read_generic_manifest(_corpus(tmp_path, ["u1,audio/a.wav,s1,1,3.0,2.0,d1,0.0",
                                                        "u2,audio/b.wav,s2,2,4.5,1.0,d1,1.5"]))
    parts = folds.with_columns(split=pl.Series(["train", "Test1"]), fold=pl.Series([7, 7]))  # fold: derived
    for table, name in ((folds, "folds.csv"), (parts, "parts.parquet")):
        write_manifest(table, tmp_path / name)  # as `cli.py manifest --out` writes it: every column, split empty
        again, problems = read_generic_manifest(tmp_path / name)
        expected = table if name == "folds.csv" else table.with_columns(fold=pl.Series([0, 1]))
        assert problems == [] and again.equals(expected), name
