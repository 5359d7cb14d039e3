"""A run folder is whole or absent, replaced only when asked, and eval refuses what does not form a table."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from cache import CacheReader
from core.errors import InputError
from heads.evaluation.evaluate import evaluate_runs
from heads.training.experiment import train_fold
from heads.training.features import load_corpus_arrays
from heads.training.runs import new_run_dir, read_run
from heads.training.train import TrainConfig
from tests.conftest import REPO
from tests.synth_cache import planted_cache
from tests.test_cli import run_cli

FAST = TrainConfig(epochs=4)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return planted_cache(tmp_path_factory.mktemp("runs") / "c.h5", n_per_speaker=20)


@pytest.fixture(scope="module")
def arrays(cache):
    return load_corpus_arrays(CacheReader(cache))


def test_an_existing_run_is_refused_unless_overwrite_and_then_replaced_whole(arrays, tmp_path):
    train_fold(arrays, 1, FAST, [0, 1, 2], tmp_path / "run")
    with pytest.raises(InputError, match="a run is already there; pass --overwrite"):
        train_fold(arrays, 1, FAST, [0], tmp_path / "run")
    train_fold(arrays, 1, FAST, [5], tmp_path / "run", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["head_seed5.safetensors", "history.csv",
                                                                     "predictions.csv", "run.json"]  # no stale seeds
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folders left


def test_an_interrupted_write_leaves_no_run_folder(tmp_path):
    with pytest.raises(KeyboardInterrupt), new_run_dir(tmp_path / "run") as tmp:
        (tmp / "run.json").write_text("{}")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_run_files_are_as_readable_as_other_files(arrays, tmp_path):
    train_fold(arrays, 2, FAST, [0], tmp_path / "run")
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "run").iterdir()} == {oct(0o666 & ~umask)}


def test_a_kill_during_an_overwrite_leaves_the_old_run_or_the_new_one_whole(cache, tmp_path):
    out = tmp_path / "run"
    assert run_cli("train-heads", "--cache", str(cache), "--fold", "3", "--out", str(out), "--epochs", "3").returncode == 0
    for delay in (1.5, 3.0, 4.5):
        proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "train-heads", "--cache", str(cache), "--fold",
                                 "3", "--out", str(out), "--seeds", "3", "--overwrite"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        record, predictions = read_run(out)  # complete: checked against its record
        assert record["seeds"] in ([0], [0, 1, 2])


def test_eval_refuses_a_truncated_predictions_file(arrays, tmp_path):
    train_fold(arrays, 1, FAST, [0, 1], tmp_path / "run")
    lines = (tmp_path / "run" / "predictions.csv").read_text().splitlines()
    (tmp_path / "run" / "predictions.csv").write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    with pytest.raises(InputError, match="does not match run.json"):
        evaluate_runs([tmp_path / "run"])


def test_eval_refuses_labels_that_do_not_cover_the_same_folds(arrays, tmp_path):
    for fold in (1, 2):
        train_fold(arrays, fold, FAST, [0], tmp_path / "separate-attn" / f"fold{fold}")
    train_fold(arrays, 1, replace(FAST, variant="shared"), [0], tmp_path / "shared" / "fold1")
    with pytest.raises(InputError, match=r"'shared\+epochs=4' lacks fold\(s\) \[2\]"):
        evaluate_runs([tmp_path / "separate-attn" / "fold1", tmp_path / "separate-attn" / "fold2",
                       tmp_path / "shared" / "fold1"])


def test_eval_refuses_one_label_trained_with_different_settings(arrays, tmp_path):
    train_fold(arrays, 1, FAST, [0], tmp_path / "a", label="mine")
    train_fold(arrays, 2, TrainConfig(epochs=5), [0], tmp_path / "b", label="mine")
    with pytest.raises(InputError, match="runs labelled 'mine' differ in config"):
        evaluate_runs([tmp_path / "a", tmp_path / "b"])
