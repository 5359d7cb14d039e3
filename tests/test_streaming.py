"""A learned layer mix over a speech block too large for memory is read from the cache in blocks: the same
standardised inputs as in memory, a block-shuffled epoch, bounded buffers, and a head as good as in memory."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cache import CacheReader
from core.metrics import dimension_metrics
from heads.training.experiment import train_fold
from heads.training.features import FeatureConfig, load_corpus_arrays, prepare_fold, split_rows
from heads.training.streaming import StreamedSpeech, read_rows
from heads.training.train import TrainConfig, predict, train_head
from pipeline.stages.state import read_speech_summary
from tests.synth_cache import planted_cache

WEIGHTED = FeatureConfig(layer="weighted")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_cache(tmp_path_factory.mktemp("streamed") / "c.h5", layers=4, dim=16)


def _folds(path):
    reader = CacheReader(path)
    in_memory = load_corpus_arrays(reader, "weighted")
    streamed = load_corpus_arrays(reader, "weighted", stream_above_bytes=0)
    split = split_rows(in_memory, 1, 0.1)
    return prepare_fold(in_memory, split, WEIGHTED), prepare_fold(streamed, split, WEIGHTED), streamed


def test_only_a_block_over_the_limit_is_left_on_disk(planted):
    reader = CacheReader(planted)
    assert load_corpus_arrays(reader, "weighted").speech is not None
    assert load_corpus_arrays(reader, "weighted", stream_above_bytes=0).speech is None
    assert load_corpus_arrays(reader, "last", stream_above_bytes=0).speech is not None  # one layer always fits


def test_streamed_batches_equal_the_standardised_block_in_memory(planted):
    in_memory, streamed, _ = _folds(planted)
    speech = replace(streamed.train.speech, block_rows=50, window_blocks=2)
    order = speech.epoch_order(torch.Generator().manual_seed(0))
    for start in range(0, len(order), 64):
        idx = order[start : start + 64]
        assert torch.allclose(speech[idx], in_memory.train.speech[idx], atol=1e-5)
    for positions, block in speech.blocks():
        assert torch.allclose(block, in_memory.train.speech[torch.from_numpy(positions)], atol=1e-5)


def test_an_epoch_visits_every_row_once_holding_at_most_two_windows():
    reader = CacheReader.__new__(CacheReader)  # rows are never read: blocks are stubbed below
    speech = StreamedSpeech(reader, np.arange(1000), np.zeros((2, 3)), np.ones((2, 3)), block_rows=40, window_blocks=3)
    speech._read_block = lambda b: np.zeros((min(40, 1000 - 40 * b), 2, 3), np.float16)
    order = speech.epoch_order(torch.Generator().manual_seed(1))
    assert sorted(order.tolist()) == list(range(1000))
    most = 0
    for start in range(0, 1000, 64):
        speech[order[start : start + 64]]
        most = max(most, len(speech._loaded))
    assert most <= 2 * speech.window_blocks
    windows = [set((order[i : i + 120] // 40).tolist()) for i in range(0, 1000 - 120, 120)]
    assert all(len(w) <= 3 for w in windows)  # a window's rows come from its 3 blocks only


def test_a_streamed_head_predicts_like_the_same_weights_on_the_block_in_memory(planted):
    in_memory, streamed, _ = _folds(planted)
    head = train_head(streamed, TrainConfig(variant="separate-attn", features=WEIGHTED, epochs=3), seed=0)
    from_disk, attention = predict(head.model, replace(streamed.test, speech=replace(streamed.test.speech, block_rows=30)))
    in_ram, attention_ram = predict(head.model, in_memory.test)
    assert torch.allclose(from_disk, in_ram, atol=1e-4)
    assert torch.allclose(attention["valence"], attention_ram["valence"], atol=1e-5)


def test_training_streamed_learns_the_planted_layer_as_well_as_in_memory(planted, tmp_path):
    reader = CacheReader(planted)
    config = TrainConfig(variant="separate", features=WEIGHTED, epochs=15)
    scores = {}
    for name, threshold in (("memory", 1 << 40), ("streamed", 0)):
        arrays = load_corpus_arrays(reader, "weighted", stream_above_bytes=threshold)
        scores[name] = dimension_metrics(train_fold(arrays, 1, config, [0], tmp_path / name))
        record = json.loads((tmp_path / name / "run.json").read_text())
        assert record["speech_streamed"] == (name == "streamed")
        weights = record["metrics_per_seed"]["0"]["layer_weights"]
        assert np.argmax(weights) == 3  # arousal is planted in the last layer
    assert abs(scores["streamed"]["ccc_a"] - scores["memory"]["ccc_a"]) < 0.1, scores


def test_the_state_stage_reads_the_layer_mean_in_blocks_exactly(planted):
    reader = CacheReader(planted)
    whole = reader.read("speech", "pooled").astype(np.float32).mean(1)
    assert np.array_equal(read_speech_summary(reader, "mean", block_rows=7), whole)


def test_ablate_refuses_mixed_layer_choices_over_a_block_too_large_for_memory(planted, tmp_path, monkeypatch):
    import heads.studies.ablation as ablation
    from core.errors import InputError

    monkeypatch.setattr("heads.training.streaming.available_memory_bytes", lambda: 0)  # a machine with no memory to spare
    configs = [TrainConfig(features=FeatureConfig(layer="last")), TrainConfig(features=FeatureConfig(layer="2"))]
    with pytest.raises(InputError, match="one ablate per layer choice"):
        ablation.run_ablation(planted, configs, [1], [0], tmp_path / "out")
    assert ablation._reader_and_layer(planted, configs[:1])[1] == "last"  # one choice: only that layer is read


def test_scattered_rows_are_read_as_the_same_values_in_contiguous_spans(planted):
    reader = CacheReader(planted)
    whole = reader.read("speech", "pooled")
    rows = np.sort(np.random.default_rng(0).choice(len(whole), 77, replace=False))
    assert np.array_equal(read_rows(reader, rows, span_rows=16), whole[rows])


def test_a_resident_validation_split_gives_the_rows_it_would_stream(planted):
    _, streamed, _ = _folds(planted)
    speech = replace(streamed.validation.speech, block_rows=20)
    resident = speech.make_resident()
    assert resident.resident is not None and resident.resident.dtype == np.float16
    for (p1, a), (p2, b) in zip(speech.blocks(), resident.blocks()):
        assert np.array_equal(p1, p2) and torch.equal(a, b)


def test_a_final_model_trains_with_a_streamed_block_and_no_test_rows(planted, tmp_path):
    from core.protocol import ALL_FOLDS

    arrays = load_corpus_arrays(CacheReader(planted), "weighted", stream_above_bytes=0)
    predictions = train_fold(arrays, ALL_FOLDS, TrainConfig(features=WEIGHTED, epochs=2), [0], tmp_path / "final")
    assert predictions.height == 0 and json.loads((tmp_path / "final" / "run.json").read_text())["speech_streamed"]


def test_the_speech_block_is_held_or_streamed_by_the_memory_available_and_the_reason_is_logged(planted, caplog):
    import logging

    from heads.training.streaming import PEAK_PER_FLOAT32, RESIDENT_SHARE, float32_bytes, resident_decision

    shape = CacheReader(planted).dataset_shapes("speech")["pooled"]
    peak = PEAK_PER_FLOAT32 * float32_bytes(shape)
    assert resident_decision(shape, available=int(peak / RESIDENT_SHARE) + 1)[0]
    held_not, why = resident_decision(shape, available=int(peak / RESIDENT_SHARE) - 1)
    assert not held_not and "streamed from the cache" in why and "GiB available" in why
    with caplog.at_level(logging.INFO, logger="heads.training.features"):
        arrays = load_corpus_arrays(CacheReader(planted), "weighted")
    assert arrays.speech is not None and "held in memory" in caplog.text  # a tiny cache on any machine
