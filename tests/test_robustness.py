"""Plain user mistakes, full disks, Ctrl-C and odd corners end in one ``error:`` line or the right value,
never a traceback or silently wrong data (docs/reliability.md lists every case)."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile

from cache import CacheReader, add_stage, create_cache
from cache.writer import interrupts_deferred
from core.errors import InputError
from core.metrics import ccc, pearson
from pipeline.corpora import build_manifest
from pipeline.corpora.generic import read_generic_manifest
from pipeline.corpora.manifest import normalise_manifest
from pipeline.extract import ExtractConfig, extract
from pipeline.features.audio import AudioError, load_audio
from pipeline.stages.prosody import ProsodyConfig
from pipeline.stages.speech import SpeechConfig
from tests.conftest import REPO
from tests.synth import speechlike, write_emodb_tree, write_wav
from tests.synth_cache import planted_cache
from tests.test_cli import run_cli


def _corpus(root: Path, rows: list[str], header: str = "utt_id,path,speaker,fold,valence,arousal") -> Path:
    for i in range(6):
        write_wav(root / f"u{i}.wav", speechlike(i, 0.3))
    (root / "m.csv").write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return root / "m.csv"


# --- manifests ----------------------------------------------------------------------------------------

def test_a_fold_that_is_not_a_positive_integer_is_a_reported_row(tmp_path):
    df, problems = read_generic_manifest(_corpus(tmp_path, ["u0,u0.wav,s0,1,3,3", "u1,u1.wav,s1,-1,3,3",
                                                            "u2,u2.wav,s2,0,3,3"]))
    assert df["utt_id"].to_list() == ["u0"]
    assert [(p.line, p.reason) for p in problems] == [
        (3, "fold must be a positive integer (1, 2, ...), not -1"), (4, "fold must be a positive integer (1, 2, ...), not 0")]


def test_an_empty_speaker_is_a_reported_row_not_a_speaker_named_none(tmp_path):
    df, problems = read_generic_manifest(_corpus(tmp_path, ["u0,u0.wav,s0,1,3,3", "u1,u1.wav,,2,3,3"]))
    assert df["speaker"].to_list() == ["s0"] and problems[0].reason == "empty speaker"


def test_integer_nulls_are_stored_with_a_mask_not_a_sentinel(tmp_path):
    rows = [dict(utt_id=f"u{i}", path=f"/a/u{i}.wav", duration_s=1.0, sample_rate=None if i == 1 else -1,
                 speaker="s", dialog_id="d", start_s=float(i), fold=1, valence=3.0, arousal=3.0) for i in range(3)]
    manifest = normalise_manifest(pl.DataFrame(rows))
    create_cache(tmp_path / "c.h5", manifest, {})
    assert CacheReader(tmp_path / "c.h5").manifest["sample_rate"].to_list() == [-1, None, -1]  # -1 stays -1


@pytest.mark.parametrize("content,message", [
    ("", "the file is empty"),
    ("utt_id,path,speaker,fold,valence,arousal\n", "no usable utterances"),
    ("utt_id;path;speaker;fold;valence;arousal\nu0;u0.wav;s0;1;3;3\n", "columns must be separated by commas"),
    ("utt_id,path,speaker,fold,valence,arousal\nu0,u0.wav,s0,1,3,3,9,9\n", "cannot be read as a comma-separated"),
])
def test_a_broken_manifest_file_is_one_error_line(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    result = run_cli("manifest", "--corpus", "manifest", "--manifest", str(tmp_path / "m.csv"),
                     "--out", str(tmp_path / "out.csv"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'm.csv'}") and message in result.stderr


def test_a_wrong_root_is_an_error_and_writes_no_cache(tmp_path):
    result = run_cli("extract", "--corpus", "emodb", "--root", str(tmp_path / "not_emodb"), "--cache",
                     str(tmp_path / "c.h5"), "--device", "cpu")
    assert result.returncode == 2 and "no usable utterances" in result.stderr and "not an EmoDB tree" in result.stderr
    assert not (tmp_path / "c.h5").exists()


def test_fewer_than_three_folds_are_refused_for_a_cross_fitted_state_before_any_audio_is_read(tmp_path, monkeypatch):
    import pipeline.stages.speech as speech_stage
    from pipeline.stages.state import StateConfig

    df, _ = read_generic_manifest(_corpus(tmp_path, ["u0,u0.wav,s0,1,3,3", "u1,u1.wav,s1,2,3,3"]))
    monkeypatch.setattr(speech_stage, "run_speech_stage", lambda *a, **k: pytest.fail("speech stage ran"))
    for kind in ("ema-predictions", "mamba"):
        with pytest.raises(InputError, match=f"--state-kind {kind} .* at least 3 folds"):
            extract(tmp_path / "c.h5", df, ["speech", "prosody", "state"], ExtractConfig(state=StateConfig(kind=kind)),
                    device="cpu")
    assert not (tmp_path / "c.h5").exists()


# --- audio --------------------------------------------------------------------------------------------

def test_float_samples_far_outside_plus_minus_one_are_refused_not_embedded_as_silence(tmp_path):
    wave = speechlike(1, 0.5) / np.abs(speechlike(1, 0.5)).max()  # peak 1
    soundfile.write(tmp_path / "loud.wav", wave * 1e30, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"samples reach 1e\+30"):
        load_audio(str(tmp_path / "loud.wav"), 16000)
    soundfile.write(tmp_path / "over.wav", wave * 1.5, 16000, subtype="FLOAT")
    assert np.abs(load_audio(str(tmp_path / "over.wav"), 16000)).max() == pytest.approx(1.5, rel=1e-3)  # kept


# --- metrics ------------------------------------------------------------------------------------------

def test_ccc_and_pearson_of_one_utterance_are_undefined_not_zero():
    assert np.isnan(ccc(np.array([3.0]), np.array([2.0]))) and np.isnan(pearson(np.array([3.0]), np.array([2.0])))


# --- disks --------------------------------------------------------------------------------------------

def test_a_stage_that_would_not_fit_on_the_disk_is_refused_before_it_starts(tmp_path, monkeypatch, tiny_wavlm):
    import shutil

    from pipeline.stages import runner

    df, _ = read_generic_manifest(_corpus(tmp_path, [f"u{i},u{i}.wav,s{i},{i % 3 + 1},3,3" for i in range(6)]))
    monkeypatch.setattr(runner.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(InputError, match=rf"{tmp_path}: 1 kB free, but the speech stage of c.h5 needs about \d+ kB"):
        extract(tmp_path / "c.h5", df, ["speech"], ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm))),
                device="cpu")


def test_a_complete_cache_needs_no_lock(tmp_path, monkeypatch, tiny_wavlm):
    from pipeline import extract as extract_module

    df, _ = read_generic_manifest(_corpus(tmp_path, [f"u{i},u{i}.wav,s{i},{i % 3 + 1},3,3" for i in range(6)]))
    config = ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm)), prosody=ProsodyConfig(workers=1))
    extract(tmp_path / "c.h5", df, ["prosody"], config, device="cpu")

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", str(tmp_path / "c.h5.lock"))

    monkeypatch.setattr(extract_module.CacheLock, "__enter__", read_only)
    assert extract(tmp_path / "c.h5", df, ["prosody"], config, device="cpu") == {}  # nothing to do, nothing written
    with pytest.raises(PermissionError):
        extract(tmp_path / "c.h5", df, ["prosody", "speech"], config, device="cpu")  # work to do: needs the lock


def test_no_space_left_is_one_error_line(tmp_path, monkeypatch, capsys):
    import cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "c.h5"))

    monkeypatch.setattr("pipeline.launch.launch_extract", full)
    monkeypatch.setattr(sys, "argv", ["cli.py", "extract", "--corpus", "manifest", "--manifest",
                                      str(_corpus(tmp_path, ["u0,u0.wav,s0,1,3,3"])), "--cache", str(tmp_path / "c.h5"),
                                      "--stages", "prosody"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'c.h5'}: No space left on device")


# --- labels -------------------------------------------------------------------------------------------

def test_a_variant_whose_block_is_missing_is_labelled_by_what_it_used(tmp_path):
    from heads.evaluation.stats import StatsConfig
    from heads.studies.ablation import run_ablation
    from heads.training.train import TrainConfig
    from heads.training.variants import parse_variant

    cache = planted_cache(tmp_path / "c.h5", n_per_speaker=10)  # speech and prosody, no state
    configs = [parse_variant(s, TrainConfig(epochs=2)) for s in ("shared", "shared+state")]
    with pytest.raises(InputError, match=r"'shared\+epochs=2' and 'shared\+state\+epochs=2' are the same"):
        run_ablation(cache, configs, [1, 2, 3, 4, 5], [0], tmp_path / "out")
    markdown, _, _ = run_ablation(cache, configs[1:], [1, 2, 3, 4, 5], [0], tmp_path / "out",
                                  stats=StatsConfig(resamples=0))
    assert "| shared+epochs=2 | 5 |" in markdown  # asked with the state, trained without: the cache has none


# --- Ctrl-C -------------------------------------------------------------------------------------------

def test_an_interrupt_during_an_atomic_write_is_delivered_after_it():
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            finished.append(True)
    assert finished == [True]


def test_ctrl_c_during_prosody_stops_at_once_with_a_message(tmp_path):
    """160 utterances: enough prosody work left when the first chunk commits, even on a loaded machine."""
    lines = ["utt_id,path,speaker,fold,valence,arousal"]
    for i in range(160):
        write_wav(tmp_path / f"u{i}.wav", speechlike(i, 2.0))
        lines.append(f"u{i},u{i}.wav,s{i % 6},{i % 3 + 1},3,3")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "extract", "--corpus", "manifest", "--manifest",
                             str(tmp_path / "m.csv"), "--cache", str(tmp_path / "c.h5"), "--stages", "prosody",
                             "--workers", "2"], cwd=REPO, stderr=subprocess.PIPE, text=True,
                            # as in a terminal: a test run started in the background (`cmd &`) inherits SIGINT
                            # ignored, and a process that starts with SIGINT ignored never sees Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    parts = Path(f"{tmp_path / 'c.h5'}.parts") / "prosody"
    deadline = time.monotonic() + 120
    while not list(parts.glob("unit-*.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - started < 5
    assert "interrupted: committed work is kept" in stderr and "Traceback" not in stderr
    assert list(parts.glob("unit-*.npz"))  # the committed chunks are still there for the next run


def test_stage_data_written_before_an_interrupt_is_whole(tmp_path):
    planted_cache(tmp_path / "c.h5", n_per_speaker=5)
    n = len(CacheReader(tmp_path / "c.h5"))
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        add_stage(tmp_path / "c.h5", "state", {"fold_1": np.zeros((n, 2), np.float32), "ok": np.ones(n, bool)}, {}, [])
    assert "state" in CacheReader(tmp_path / "c.h5").stages


def test_build_manifest_refuses_an_empty_corpus(tmp_path):
    write_emodb_tree(tmp_path / "emodb")
    for wav in (tmp_path / "emodb" / "wav").iterdir():
        wav.rename(wav.with_name("x" + wav.name))  # names no longer EmoDB's
    with pytest.raises(InputError, match="no usable utterances"):
        build_manifest("emodb", root=str(tmp_path / "emodb"))


# --- round 3: every bad argument, bad file or full disk is one error line -------------------------------

@pytest.fixture(scope="module")
def heads_cache(tmp_path_factory):
    return planted_cache(tmp_path_factory.mktemp("round3") / "c.h5", n_per_speaker=10)


def _one_error_line(*args: str) -> str:
    from tests.test_cli_heads import cli_in_process

    result = cli_in_process(*args)  # a traceback would raise here, in the test
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("extra,expected", [
    (("--epochs", "0"), "epochs 0: must be at least 1"),
    (("--lr", "nan"), "lr nan: must be a positive number"),
    (("--lr", "-1"), "lr -1.0: must be a positive number"),
    (("--batch-size", "-5"), "batch-size -5: must be 0 (automatic)"),
    (("--device", "tpu9"), "--device tpu9: not a device"),
])
def test_a_training_setting_no_training_can_use_is_one_error_line(heads_cache, tmp_path, extra, expected):
    line = _one_error_line("train-heads", "--cache", str(heads_cache), "--fold", "1", "--out", str(tmp_path / "r"),
                           *extra)
    assert expected in line and not (tmp_path / "r").exists()


def test_a_run_folder_that_is_a_file_and_an_empty_fold_range_are_one_error_line(heads_cache, tmp_path):
    (tmp_path / "afile").write_text("mine")
    assert "a file, not a folder" in _one_error_line("train-heads", "--cache", str(heads_cache), "--fold", "1",
                                                     "--out", str(tmp_path / "afile"))
    assert "names no fold" in _one_error_line("train-heads", "--cache", str(heads_cache), "--folds", "5-1",
                                              "--out", str(tmp_path / "g"))


def test_a_full_disk_while_saving_heads_is_one_error_line_naming_the_file(heads_cache, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr("heads.training.runs.save_file", full)
    line = _one_error_line("train-heads", "--cache", str(heads_cache), "--fold", "1", "--out", str(tmp_path / "r"),
                           "--epochs", "1")
    assert "head_seed0.safetensors" in line and "No space left on device" in line
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.*"))  # no half-written run


def test_a_full_disk_under_polars_is_one_error_line_and_leaves_no_empty_file(tmp_path, monkeypatch):
    df_path = _corpus(tmp_path, ["u0,u0.wav,s0,1,3,3", "u1,u1.wav,s1,2,3,3", "u2,u2.wav,s2,3,3,3"])

    def full(self, path, *args, **kwargs):
        Path(path).write_text("")  # polars opened the file, then the disk filled up
        raise OSError("failed to write: No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_csv", full)
    line = _one_error_line("manifest", "--corpus", "manifest", "--manifest", str(df_path), "--out",
                           str(tmp_path / "out.csv"))
    assert "No space left on device" in line and not (tmp_path / "out.csv").exists()


def test_a_window_of_zero_seconds_is_one_error_line(tmp_path, tiny_wavlm):
    df_path = _corpus(tmp_path, ["u0,u0.wav,s0,1,3,3"])
    line = _one_error_line("extract", "--corpus", "manifest", "--manifest", str(df_path), "--cache",
                           str(tmp_path / "c.h5"), "--speech-model", str(tiny_wavlm), "--window-s", "0")
    assert "--window-s 0.0: must be at least 0.1 seconds" in line and not (tmp_path / "c.h5").exists()


def test_a_truncated_speech_model_is_one_error_line(tmp_path, tiny_wavlm):
    import shutil

    broken = tmp_path / "broken_wavlm"
    shutil.copytree(tiny_wavlm, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    df_path = _corpus(tmp_path, ["u0,u0.wav,s0,1,3,3"])
    line = _one_error_line("extract", "--corpus", "manifest", "--manifest", str(df_path), "--cache",
                           str(tmp_path / "c.h5"), "--speech-model", str(broken), "--stages", "speech")
    assert f"{broken}: not a loadable speech model folder" in line


def test_a_test_set_named_dot_dot_is_a_reported_row_not_a_folder(tmp_path):
    df, problems = read_generic_manifest(_corpus(tmp_path, ["u0,u0.wav,s0,train,3,3", "u1,u1.wav,s1,..,3,3",
                                                            "u2,u2.wav,s2,Test1,3,3"],
                                                 header="utt_id,path,speaker,split,valence,arousal"))
    assert df["utt_id"].to_list() == ["u0", "u2"] and "not a usable test-set name" in problems[0].reason


def test_an_absurd_label_is_a_reported_row(tmp_path):
    df, problems = read_generic_manifest(_corpus(tmp_path, ["u0,u0.wav,s0,1,3,3", "u1,u1.wav,s1,2,1e308,3"]))
    assert df.height == 1 and "valence 1e+308 is not a rating" in problems[0].reason


def test_split_all_on_a_corpus_without_test_sets_is_one_error_line():
    from heads.training.variants import parse_experiments

    with pytest.raises(InputError, match="no test set"):
        parse_experiments(None, "all", [], [])


def test_eval_never_reads_the_temporary_folder_of_a_killed_run(heads_cache, tmp_path):
    import shutil

    from heads.training.experiment import train_fold
    from heads.training.features import load_corpus_arrays
    from heads.training.runs import expand_runs
    from heads.training.train import TrainConfig

    arrays = load_corpus_arrays(CacheReader(heads_cache))
    for fold in (1, 2):
        train_fold(arrays, fold, TrainConfig(epochs=1), [0], tmp_path / "g" / f"fold{fold}")
    shutil.copytree(tmp_path / "g" / "fold2", tmp_path / "g" / ".fold3.tmp-999999")  # a writer killed mid-run
    assert [p.name for p in expand_runs([tmp_path / "g"])] == ["fold1", "fold2"]
    assert "temporary folder" in _one_error_line("eval", "--runs", str(tmp_path / "g" / ".fold3.tmp-999999"))


def test_training_refuses_an_experiment_with_no_usable_rows_to_test_on_naming_it(heads_cache, tmp_path):
    from dataclasses import replace

    from heads.training.experiment import train_fold
    from heads.training.features import load_corpus_arrays
    from heads.training.train import TrainConfig

    arrays = load_corpus_arrays(CacheReader(heads_cache))
    arrays = replace(arrays, usable=arrays.usable & (arrays.folds != 2))  # every row of fold 2 failed a stage
    with pytest.raises(InputError, match="fold 2 has no usable labelled rows"):
        train_fold(arrays, 2, TrainConfig(epochs=1), [0], tmp_path / "fold2")
    assert not (tmp_path / "fold2").exists()  # nothing half-written
