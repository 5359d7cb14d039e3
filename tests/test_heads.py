"""Heads train from the cache alone, lean on the right blocks, and reload to the same predictions."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from cache import CacheReader
from core.errors import InputError
from core.metrics import dimension_metrics
from heads.training.experiment import predictions_frame, train_fold
from heads.training.features import FeatureConfig, load_corpus_arrays, prepare_fold, split_rows
from heads.training.models import BlockSizes, build_head
from heads.training.runs import load_head, read_run
from heads.training.train import TrainConfig, block_sizes
from heads.training.variants import parse_variant, run_label
from tests.synth_cache import planted_cache


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    reader = CacheReader(planted_cache(tmp_path_factory.mktemp("planted") / "c.h5"))
    return reader, load_corpus_arrays(reader)


def test_the_attention_design_matches_the_research_note():
    model = build_head("separate-attn", BlockSizes(speech=1024, speech_layers=1, prosody_raw=88, prosody=64, state=64))
    attention = model.valence_attention
    assert [type(m).__name__ for m in attention] == ["Linear", "Tanh", "Linear", "Softmax"]
    assert (attention[0].in_features, attention[0].out_features, attention[2].out_features) == (1152, 256, 2)
    head = [type(m).__name__ for m in model.valence]
    assert head == ["Linear", "LayerNorm", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert (model.valence[0].out_features, model.valence[4].out_features, model.valence[8].out_features) == (256, 128, 1)
    shared = build_head("shared", BlockSizes(1024, 1, 88, 64, 64)).head
    assert (shared[0].in_features, shared[0].out_features, shared[4].out_features, shared[8].out_features) == (1152, 256, 128, 2)


def test_attention_weights_scale_the_blocks_as_specified():
    """The model computes block by block; the research note's formula concatenates first. Same numbers."""
    torch.manual_seed(0)
    model = build_head("separate-attn", BlockSizes(speech=4, speech_layers=1, prosody_raw=3, prosody=2, state=2), 0.0)
    model = model.double().eval()
    speech, prosody, state = (torch.randn(5, d, dtype=torch.float64) for d in (4, 3, 2))
    prediction, attention = model(speech, prosody, state)
    p = model.inputs.prosody_proj(prosody)
    x = torch.cat([speech, p, state], 1)
    wv, wa = model.valence_attention(x), model.arousal_attention(x)
    assert torch.allclose(attention["valence"], wv) and torch.allclose(attention["arousal"], wa)
    assert torch.allclose(wv.sum(1), torch.ones(5, dtype=torch.float64))
    valence = model.valence(torch.cat([speech * wv[:, 1:], p * wv[:, :1], state * wv[:, 1:]], 1))
    arousal = model.arousal(torch.cat([speech * wa[:, :1], p * wa[:, 1:], state * wa[:, 1:]], 1))
    assert torch.allclose(prediction, torch.cat([valence, arousal], 1), atol=1e-12)


def test_the_shared_and_separate_heads_are_mlps_over_the_concatenated_blocks():
    torch.manual_seed(0)
    sizes = BlockSizes(speech=4, speech_layers=1, prosody_raw=3, prosody=2, state=2)
    speech, prosody, state = (torch.randn(5, d, dtype=torch.float64) for d in (4, 3, 2))
    shared = build_head("shared", sizes, 0.0).double().eval()
    x = torch.cat([speech, shared.inputs.prosody_proj(prosody), state], 1)
    assert torch.allclose(shared(speech, prosody, state)[0], shared.head(x), atol=1e-12)
    separate = build_head("separate", sizes, 0.0).double().eval()
    x = torch.cat([speech, separate.inputs.prosody_proj(prosody), state], 1)
    expected = torch.cat([separate.valence(x), separate.arousal(x)], 1)
    assert torch.allclose(separate(speech, prosody, state)[0], expected, atol=1e-12)


@pytest.mark.parametrize("variant", ["shared", "separate", "separate-attn"])
def test_each_variant_learns_the_planted_relations(planted, variant, tmp_path):
    reader, arrays = planted
    preds = train_fold(arrays, 1, TrainConfig(variant=variant), [0], tmp_path)
    m = dimension_metrics(preds)
    assert m["ccc_v"] > 0.6 and m["ccc_a"] > 0.6


def test_attention_leans_on_prosody_for_valence_and_speech_for_arousal(planted, tmp_path):
    reader, arrays = planted
    preds = train_fold(arrays, 2, TrainConfig(variant="separate-attn"), [0, 1], tmp_path)
    assert preds["attn_valence_prosody"].mean() > 0.55
    assert preds["attn_arousal_speech"].mean() > 0.55


def test_attention_follows_the_data_when_the_relations_are_swapped(tmp_path):
    reader = CacheReader(planted_cache(tmp_path / "swapped.h5", swap=True))
    preds = train_fold(load_corpus_arrays(reader), 2, TrainConfig(variant="separate-attn"), [0, 1],
                       tmp_path / "run")
    assert preds["attn_valence_prosody"].mean() < 0.45  # valence now lives in speech: "other" wins
    assert preds["attn_arousal_speech"].mean() < 0.45  # arousal now lives in prosody


def test_a_learned_layer_mix_finds_the_informative_layer(planted, tmp_path):
    reader, arrays = planted
    config = parse_variant("separate+layer=weighted", TrainConfig())
    train_fold(arrays, 3, config, [0], tmp_path)
    record, _ = read_run(tmp_path)
    weights = record["metrics_per_seed"]["0"]["layer_weights"]
    assert int(np.argmax(weights)) == 2 and weights[2] > 0.4


def _reload_and_predict(arrays, fold, config, run_dir, seed):
    """What a user does to reuse a saved run in Python: rebuild the fold's tensors, load the head, predict."""
    tensors = prepare_fold(arrays, split_rows(arrays, fold, config.val_fraction), config.features)
    model, stats = load_head(run_dir / f"head_seed{seed}.safetensors", config.variant, block_sizes(tensors, config),
                             config.dropout)
    assert all(np.array_equal(stats[k], v) for k, v in tensors.stats.items())  # the saved statistics are these
    return predictions_frame(arrays, tensors, model, seed)


def test_a_saved_run_reloads_to_the_same_predictions(planted, tmp_path):
    reader, arrays = planted
    config = TrainConfig(variant="separate-attn")
    saved = train_fold(arrays, 4, config, [3], tmp_path)
    again = _reload_and_predict(arrays, 4, config, tmp_path, seed=3)
    assert np.array_equal(saved["valence_pred"].to_numpy(), again["valence_pred"].to_numpy())
    assert np.array_equal(saved["attn_arousal_speech"].to_numpy(), again["attn_arousal_speech"].to_numpy())


def test_a_checkpoint_for_other_features_or_a_damaged_file_fails_clearly(planted, tmp_path):
    reader, arrays = planted
    config = TrainConfig(variant="separate")
    train_fold(arrays, 5, config, [0], tmp_path)
    other = replace(config, features=FeatureConfig(use_prosody=False))
    with pytest.raises(InputError, match="does not fit"):
        _reload_and_predict(arrays, 5, other, tmp_path, seed=0)
    (tmp_path / "head_seed0.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(InputError, match="not a readable safetensors"):
        _reload_and_predict(arrays, 5, config, tmp_path, seed=0)


def test_switches_remove_blocks_and_the_run_records_them(planted, tmp_path):
    reader, arrays = planted
    config = parse_variant("separate+no-prosody", TrainConfig())
    preds = train_fold(arrays, 1, config, [0], tmp_path)
    record, _ = read_run(tmp_path)
    assert record["label"] == "separate+no-prosody" and record["sizes"]["prosody"] == 0
    assert dimension_metrics(preds)["ccc_v"] < 0.3  # valence lived only in the prosody block


def test_one_builder_gives_options_then_the_specs_switches_which_win():
    from heads.training.variants import config_from_options

    config = config_from_options("separate+prosody=praat/egemaps+lr=0.001", layer="mean", prosody="egemaps", lr=0.01,
                                 epochs=7, no_speech=True)
    assert config.variant == "separate" and config.lr == 0.001 and config.epochs == 7  # the spec won over --lr
    assert config.features.prosody_sets == ("egemaps", "praat") and config.features.layer == "mean"
    assert not config.features.use_speech and run_label(config).startswith("separate+no-speech+layer=mean+prosody=")
    assert parse_variant(run_label(config), TrainConfig()) == config  # labels parse back, feature sets included
    with pytest.raises(InputError, match="name feature sets such as egemaps"):
        config_from_options("separate", prosody="/")


def test_unknown_variants_and_switches_are_clear_errors():
    with pytest.raises(InputError, match="unknown head variant"):
        parse_variant("double", TrainConfig())
    with pytest.raises(InputError, match="unknown switch"):
        parse_variant("shared+no-idea", TrainConfig())


@pytest.mark.parametrize("layer", ["last", "1", "-2"])
def test_reading_only_the_chosen_layer_gives_the_same_fold_tensors(planted, layer):
    reader, every_layer = planted
    one_layer = load_corpus_arrays(reader, layer)
    assert one_layer.speech.shape[1] == 1 and every_layer.speech.shape[1] > 2
    config = FeatureConfig(layer=layer)
    full, single = (prepare_fold(a, split_rows(a, 1, 0.1), config) for a in (every_layer, one_layer))
    assert torch.equal(full.train.speech, single.train.speech) and torch.equal(full.test.speech, single.test.speech)
    with pytest.raises(InputError, match="needs every hidden state"):
        prepare_fold(one_layer, split_rows(one_layer, 1, 0.1), FeatureConfig(layer="weighted"))


def test_a_switch_setting_takes_on_or_off_and_its_label_parses_back():
    config = parse_variant("separate-attn+state-gate=off", TrainConfig())
    assert config.state_gate is False and run_label(config) == "separate-attn+state-gate=off"
    assert parse_variant(run_label(config), TrainConfig()) == config
    with pytest.raises(InputError, match="state-gate=maybe is not a switch"):
        parse_variant("separate-attn+state-gate=maybe", TrainConfig())


def test_a_training_set_larger_than_epoch_rows_is_validated_every_epoch_rows_of_one_pass():
    from heads.training.train import epoch_positions

    passes = iter([torch.arange(10), torch.arange(10, 20)])
    pending, seen = torch.zeros(0, dtype=torch.int64), []
    for _ in range(4):
        order, pending = epoch_positions(pending, 10, 4, lambda: next(passes))
        seen.append(order.tolist())
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
    small = epoch_positions(torch.zeros(0, dtype=torch.int64), 10, 10, lambda: torch.arange(10))
    assert small[0].tolist() == list(range(10)) and len(small[1]) == 0  # at most epoch_rows: a whole pass


def test_the_state_gates_fold_without_state_equals_one_prepared_without_it(tmp_path):
    from heads.training.features import without_state
    from pipeline.stages.state import StateConfig, run_state_stage
    from tests.synth_cache import sticky_dialogue_cache

    path = sticky_dialogue_cache(tmp_path / "c.h5", dialogs_per_fold=2, turns=12)
    run_state_stage(str(path), StateConfig(), torch.device("cpu"))
    arrays = load_corpus_arrays(CacheReader(path))
    split = split_rows(arrays, 2, 0.1)
    derived = without_state(prepare_fold(arrays, split, FeatureConfig()))
    prepared = prepare_fold(arrays, split, FeatureConfig(use_state=False))
    assert derived.effective == prepared.effective and derived.stats.keys() == prepared.stats.keys()
    for part in ("train", "validation", "test"):
        a, b = getattr(derived, part), getattr(prepared, part)
        for block in ("speech", "prosody", "state", "targets"):
            assert torch.equal(getattr(a, block), getattr(b, block)), (part, block)


def test_a_speaker_shared_between_folds_is_a_warning_in_the_run_and_in_every_table(tmp_path):
    from heads.evaluation.evaluate import evaluate_runs
    from heads.reporting.tables import write_evaluation

    arrays = load_corpus_arrays(CacheReader(planted_cache(tmp_path / "c.h5", n_per_speaker=20, shared_speaker=True,
                                                          dialogues=False)))
    config = parse_variant("linear", TrainConfig())
    for fold in (1, 2, 3):
        train_fold(arrays, fold, config, [0], tmp_path / f"fold{fold}")
    record, _ = read_run(tmp_path / "fold1")
    assert record["validation"]["rule"] == "dialogue groups"
    assert record["warnings"] == ["test rows share 1 speaker(s) and 0 dialogue(s) with training rows (speaker spk0): "
                                  "test scores are optimistic"]
    assert read_run(tmp_path / "fold3")[0]["warnings"] == []  # fold 3 shares nobody
    markdown, _ = write_evaluation(evaluate_runs([tmp_path / f"fold{k}" for k in (1, 2, 3)]), tmp_path / "eval")
    assert markdown.startswith("**Warnings**") and "(linear fold 1, linear fold 2)" in markdown
