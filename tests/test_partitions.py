"""Predefined partitions (train / dev / named test sets) as an alternative to folds: the split, the states,
the CLI and the evaluation per test set."""

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from cache import CacheReader
from core.errors import InputError
from core.protocol import ALL_FOLDS, partition_split, speaker_groups
from pipeline.corpora import build_manifest
from pipeline.extract import ExtractConfig, extract
from pipeline.stages.prosody import ProsodyConfig
from pipeline.stages.speech import SpeechConfig
from pipeline.stages.state import StateConfig, compute_fold_states, load_state_inputs, run_state_stage
from tests.synth import write_msp_tree
from tests.synth_cache import sticky_dialogue_cache
from tests.test_cli_heads import cli_in_process
from tests.test_state import SMALL

SPLITS = np.array(["train"] * 6 + ["dev"] * 2 + ["Test1"] * 2 + ["Test2"] * 2)
FOLDS = np.array([0] * 8 + [1, 1, 2, 2])
SPEAKERS = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "f", "f"])
DIALOGS = np.array([f"u{i}" for i in range(12)])  # each utterance its own dialogue


def test_a_partition_split_trains_on_train_stops_on_dev_and_tests_the_named_set():
    usable = np.ones(12, bool)
    split = partition_split(SPLITS, FOLDS, SPEAKERS, DIALOGS, usable, 2, val_fraction=0.1)
    assert split.train.tolist() == [0, 1, 2, 3, 4, 5] and split.validation.tolist() == [6, 7]
    assert split.test.tolist() == [10, 11]  # Test2 only: Test1 is not used by this experiment
    final = partition_split(SPLITS, FOLDS, SPEAKERS, DIALOGS, usable, ALL_FOLDS, val_fraction=0.1)
    assert len(final.test) == 0 and final.validation.tolist() == [6, 7]


def test_without_dev_rows_validation_is_whole_dialogue_groups_held_out_of_train():
    no_dev = np.where(SPLITS == "dev", "train", SPLITS)
    split = partition_split(no_dev, FOLDS, SPEAKERS, DIALOGS, np.ones(12, bool), 1, val_fraction=0.2)
    assert set(SPEAKERS[split.validation]).isdisjoint(SPEAKERS[split.train]) and len(split.validation) >= 2
    assert sorted(np.concatenate([split.train, split.validation]).tolist()) == list(range(8))


def test_speaker_groups_keep_each_speaker_in_one_group_of_similar_size():
    speakers = np.repeat([f"s{i}" for i in range(12)], np.arange(1, 13))  # 1..12 rows per speaker: 78 rows
    rows = np.arange(len(speakers) - 12)  # the largest speaker is outside the partition
    groups = speaker_groups(speakers, rows, 5)
    assert (groups[len(rows):] == 0).all() and set(groups[rows]) == {1, 2, 3, 4, 5}
    for speaker in np.unique(speakers[rows]):
        assert len(set(groups[rows][speakers[rows] == speaker])) == 1
    sizes = np.bincount(groups[rows])[1:]
    assert sizes.max() - sizes.min() <= 11  # the largest speaker in the partition bounds the imbalance


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory):
    path = sticky_dialogue_cache(tmp_path_factory.mktemp("partitioned") / "c.h5", dialogs_per_fold=4, turns=30,
                                 partitions=True)
    run_state_stage(str(path), StateConfig(), torch.device("cpu"))
    return path


FAST = replace(SMALL, model=replace(SMALL.model, d_model=16, d_state=8, ssm_state=4), epochs=2)


def test_no_dev_or_test_label_and_no_train_rows_own_group_label_reaches_a_learned_state(partitioned):
    """Scramble the dev and test labels: no state moves. Scramble one speaker group of train: that group's
    states stay bit for bit the same (cross-fitted), the other train rows' states move (the labels do train)."""
    inputs = load_state_inputs(CacheReader(partitioned), FAST)
    train = inputs.splits == "train"
    assert FAST.kind == "mamba" and sorted(set(inputs.groups[train].tolist())) == [1, 2, 3]  # one per linked set
    for dialog in np.unique(CacheReader(partitioned).manifest["dialog_id"].to_numpy()[train]):
        assert len(set(inputs.groups[CacheReader(partitioned).manifest["dialog_id"].to_numpy() == dialog])) == 1
    base = compute_fold_states(inputs, FAST, torch.device("cpu"))
    assert sorted(base) == [1, 2] and np.array_equal(base[1], base[2])  # one set of states for every test set
    held = inputs.splits != "train"
    scrambled = inputs.targets.copy()
    scrambled[held] = np.random.default_rng(0).uniform(1, 5, (held.sum(), 2))
    moved = compute_fold_states(replace(inputs, targets=scrambled), FAST, torch.device("cpu"))
    assert np.array_equal(base[1], moved[1])
    group = inputs.groups == 2
    scrambled = inputs.targets.copy()
    scrambled[group] = np.random.default_rng(1).uniform(1, 5, (group.sum(), 2))
    moved = compute_fold_states(replace(inputs, targets=scrambled), FAST, torch.device("cpu"))
    assert np.array_equal(base[1][group], moved[1][group])
    assert not np.array_equal(base[1][~group & ~held], moved[1][~group & ~held])


def test_untrained_states_of_train_rows_ignore_the_dev_and_test_audio(partitioned):
    """The projection is fitted on train rows and sequences never cross partitions."""
    inputs = load_state_inputs(CacheReader(partitioned), StateConfig())
    base = compute_fold_states(inputs, StateConfig(), torch.device("cpu"))
    z = inputs.z.copy()
    z[inputs.splits != "train"] *= 3.0
    moved = compute_fold_states(replace(inputs, z=z), StateConfig(), torch.device("cpu"))
    train = inputs.splits == "train"
    assert np.allclose(base[1][train], moved[1][train]) and not np.allclose(base[1][~train], moved[1][~train])


def test_train_heads_split_tests_only_the_named_set_and_eval_reports_each_test_set(partitioned, tmp_path):
    for name in ("Test1", "Test2"):
        result = cli_in_process("train-heads", "--cache", str(partitioned), "--split", name, "--out",
                                str(tmp_path / name), "--epochs", "5")
        assert result.returncode == 0, result.stderr
        record = json.loads((tmp_path / name / "run.json").read_text())
        assert (record["test_set"], record["protocol"]) == (name, "partitions")
        assert record["split_sizes"] == {"train": 360, "validation": 120, "test": 60}
        assert set(pl.read_csv(tmp_path / name / "predictions.csv")["utt_id"].str.slice(0, 4)) == (
            {"f5d0", "f5d1"} if name == "Test1" else {"f5d2", "f5d3"})
    result = cli_in_process("eval", "--runs", str(tmp_path / "Test1"), "--runs", str(tmp_path / "Test2"),
                            "--out", str(tmp_path / "eval"), "--bootstrap", "50")
    assert result.returncode == 0, result.stderr
    assert "Per test set" in result.stdout and "| Test1 | 60 |" in result.stdout and "| Test2 | 60 |" in result.stdout
    assert pl.read_csv(tmp_path / "eval" / "per_fold.csv")["test_set"].to_list() == ["Test1", "Test2"]


def test_folds_and_partitions_each_refuse_the_other_option_with_a_hint(partitioned, tmp_path):
    result = cli_in_process("train-heads", "--cache", str(partitioned), "--fold", "1", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "predefined partitions" in result.stderr and "Test1, Test2" in result.stderr
    result = cli_in_process("train-heads", "--cache", str(partitioned), "--split", "dev", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "no test set dev" in result.stderr


def test_ablate_runs_every_test_set_into_folders_named_after_them(partitioned, tmp_path):
    result = cli_in_process("ablate", "--cache", str(partitioned), "--variants", "linear,shared", "--out",
                            str(tmp_path / "ab"), "--epochs", "3", "--bootstrap", "0")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "ab" / "linear+epochs=3").iterdir()) == ["Test1", "Test2"]
    assert "| shared+epochs=3 | Test2 | 60 |" in (tmp_path / "ab" / "results.md").read_text()


def test_an_msp_podcast_tree_extracts_with_partitions_and_states(tmp_path, tiny_wavlm):
    df, problems = build_manifest("msp-podcast", root=str(write_msp_tree(tmp_path / "msp")))
    assert problems == [] and set(df["split"]) == {"train", "dev", "Test1", "Test2"}
    config = ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm)), prosody=ProsodyConfig(workers=1))
    extract(tmp_path / "c.h5", df, ["speech", "prosody", "state"], config, device="cpu")
    reader = CacheReader(tmp_path / "c.h5")
    assert reader.manifest["split"].to_list() == df["split"].to_list()
    assert sorted(reader.dataset_shapes("state")) == ["fold_1", "fold_2", "ok"]
    assert reader.provenance("state")["partitions"] is True


def test_speakers_sharing_a_dialogue_are_one_cross_fitting_unit():
    from core.protocol import linked_speakers

    speakers = np.array(["a", "b", "b", "c", "d", "e", "x"])
    dialogs = np.array(["d1", "d1", "d2", "d2", "d3", "d3", "d9"])
    units = linked_speakers(speakers, dialogs, np.arange(6))  # row 6 is outside the partition
    assert len({units[0], units[1], units[2], units[3]}) == 1 and units[4] == units[5] != units[0]
    assert units[6] == ""


def test_extract_refuses_a_manifest_whose_folds_contradict_its_partitions():
    from pipeline.extract import check_request

    manifest = pl.DataFrame({"split": ["train", "Test1", "Test2"], "fold": [1, 2, 3]})  # folds of a k-fold corpus
    with pytest.raises(InputError, match="fold column does not follow its split column"):
        check_request(["prosody"], "skip", manifest)
    check_request(["prosody"], "skip", manifest.with_columns(fold=pl.Series([0, 1, 2])))  # derived: accepted
