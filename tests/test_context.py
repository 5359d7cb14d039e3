"""The untrained dialogue context: a causal, bias-corrected EMA of the previous turns' projected features."""

import numpy as np
import torch

from cache import CacheReader
from pipeline.features.context import causal_average, context_states, fit_block_projection, project_block
from pipeline.models.state_kinds import state_width
from pipeline.stages.state import StateConfig, compute_fold_states, load_state_inputs, run_state_stage
from tests.synth_cache import sticky_dialogue_cache

EMA = StateConfig(kind="ema-features", context_components=3)


def test_the_context_is_the_weighted_mean_of_the_previous_turns_only():
    u = np.array([[1.0], [2.0], [4.0], [8.0]])
    a = 0.5
    out = causal_average(u, np.arange(4), a)
    # by hand: t=1 nothing; t=2 u1; t=3 (u2 + a u1)/(1 + a); t=4 (u3 + a u2 + a^2 u1)/(1 + a + a^2)
    expected = [0.0, 1.0, (2 + 0.5) / 1.5, (4 + 1 + 0.25) / 1.75]
    assert np.allclose(out[:, 0], expected)
    assert np.allclose(out[:, 1], [0.0, 1 - a, 1 - a**2, 1 - a**3])  # history mass


def test_the_speaker_aware_context_separates_own_turns_from_the_others():
    u = np.array([[1.0], [10.0], [3.0], [30.0], [5.0]])
    speakers = np.array(["A", "B", "A", "B", "A"])
    out = context_states(u, [np.arange(5)], speakers, a=0.5, speaker_aware=True)
    # turn 5 (A): own previous turns 1 and 3 -> (3 + 0.5 * 1) / 1.5; the others' turns 2 and 4 -> (30 + 5) / 1.5
    assert np.isclose(out[4, 0], 3.5 / 1.5) and np.isclose(out[4, 2], 35 / 1.5)
    assert np.allclose(out[0], 0.0)  # the first turn has no history of either kind


def test_the_block_projection_whitens_the_training_rows():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)) @ rng.standard_normal((6, 6)) + 5
    train = np.arange(150)
    mean, std, axes = fit_block_projection(x, train, components=3)
    projected = project_block(x[train], mean, std, axes)
    assert np.allclose(np.cov(projected.T), np.eye(3), atol=1e-4)
    assert fit_block_projection(x[:, :2], train, components=3)[2].shape == (2, 3)  # fixed width, zeros beyond rank


def test_ema_states_ignore_every_label_and_have_the_documented_width(tmp_path):
    path = sticky_dialogue_cache(tmp_path / "c.h5", dialogs_per_fold=2, turns=12)
    inputs = load_state_inputs(CacheReader(path), EMA)
    base = compute_fold_states(inputs, EMA, torch.device("cpu"))
    moved = compute_fold_states(inputs.__class__(**{**inputs.__dict__, "targets": -inputs.targets}), EMA,
                                torch.device("cpu"))
    assert all(np.array_equal(base[k], moved[k]) for k in base)
    assert base[1].shape == (len(inputs.z), state_width(EMA, 4)) == (len(inputs.z), 3 + 4 + 1)


def test_each_fold_fits_its_projection_without_its_test_rows(tmp_path):
    path = sticky_dialogue_cache(tmp_path / "c.h5", dialogs_per_fold=2, turns=12)
    inputs = load_state_inputs(CacheReader(path), EMA)
    base = compute_fold_states(inputs, EMA, torch.device("cpu"))
    z = inputs.z.copy()
    z[inputs.folds == 2] *= 3.0  # fold 2's own features change: fold 2's projection must not
    moved = compute_fold_states(inputs.__class__(**{**inputs.__dict__, "z": z}), EMA, torch.device("cpu"))
    rows = inputs.folds == 4  # fold 4's rows see only fold 4's turns, projected with fold 2's projection
    assert np.allclose(base[2][rows], moved[2][rows]) and not np.allclose(base[1][rows], moved[1][rows])


def test_the_stage_stores_speaker_aware_states_one_unit_per_fold(tmp_path):
    path = sticky_dialogue_cache(tmp_path / "c.h5")
    run_state_stage(str(path), StateConfig(kind="ema-features-speaker"), torch.device("cpu"))
    reader = CacheReader(path)
    provenance = reader.provenance("state")
    assert provenance["kind"] == "ema-features-speaker" and provenance["includes_current_turn"] is False
    assert reader.read("state", "fold_1").shape == (len(reader), 2 * (16 + 4 + 1))
    assert len(provenance["unit_summaries"]) == 5  # one unit per fold, no updaters


def test_a_corpus_without_dialogues_has_no_context_and_the_heads_leave_the_state_out(tmp_path):
    from heads.training.features import load_corpus_arrays, protocol_warnings, split_rows
    from tests.synth_cache import planted_cache

    path = planted_cache(tmp_path / "c.h5", n_per_speaker=12, dialogues=False)  # as EmoDB now is
    run_state_stage(str(path), EMA, torch.device("cpu"))
    reader = CacheReader(path)
    assert reader.provenance("state")["context"] is False and reader.provenance("state")["context_rows"] == 0
    arrays = load_corpus_arrays(reader, "last")
    assert arrays.states == {} and arrays.no_context
    assert any("no dialogue context" in w for w in protocol_warnings(arrays, split_rows(arrays, 1, 0.1), True))
    assert protocol_warnings(arrays, split_rows(arrays, 1, 0.1)) == []  # the state was not asked for: nothing to say


def test_speaker_sequences_refuse_an_order_that_start_s_does_not_give():
    import polars as pl
    import pytest

    from core.errors import InputError
    from pipeline.features.context import build_sequences

    frame = pl.DataFrame({"utt_id": ["a1", "a2", "b1"], "speaker": ["a", "a", "b"], "dialog_id": ["x", "y", "z"],
                          "fold": [1, 1, 2], "split": pl.Series([None] * 3, dtype=pl.String)})
    usable = np.ones(3, bool)
    with pytest.raises(InputError, match="start_s alone, and speaker a has 2 utterances at start_s = 0.0"):
        build_sequences(frame.with_columns(start_s=pl.lit(0.0)), usable, "speaker")
    with pytest.raises(InputError, match="2 utterance\\(s\\) have none"):
        build_sequences(frame.with_columns(start_s=pl.Series([None, 1.0, None], dtype=pl.Float64)), usable, "speaker")
    timed = frame.with_columns(start_s=pl.Series([5.0, 1.0, 0.0]))
    assert [s.tolist() for s in build_sequences(timed, usable, "speaker")] == [[1, 0], [2]]


PREDICTED_KIND = StateConfig(kind="ema-predictions", context_components=3)


def test_ema_predictions_keep_every_label_of_fold_j_out_of_the_states_of_fold_js_rows(tmp_path):
    """Scramble the labels of each fold j in turn: in every experiment, the states of j's rows stay bit for bit
    the same (their first-pass predictions never saw their fold, so never their dialogue); the test fold's
    labels reach no state of its experiment at all."""
    from dataclasses import replace

    path = sticky_dialogue_cache(tmp_path / "c.h5", dialogs_per_fold=3, turns=20)
    inputs = load_state_inputs(CacheReader(path), PREDICTED_KIND)
    base = compute_fold_states(inputs, PREDICTED_KIND, torch.device("cpu"))
    assert base[1].shape == (len(inputs.z), 6)
    for j in range(1, 6):
        scrambled = inputs.targets.copy()
        rows = inputs.folds == j
        scrambled[rows] = np.random.default_rng(j).uniform(1, 5, (rows.sum(), 2))
        moved = compute_fold_states(replace(inputs, targets=scrambled), PREDICTED_KIND, torch.device("cpu"))
        for k in range(1, 6):
            assert np.array_equal(base[k][rows], moved[k][rows]), (j, k)
        assert np.array_equal(base[j], moved[j])  # test fold j: no state of its experiment moves
        other = next(k for k in range(1, 6) if k != j)
        assert not np.array_equal(base[other][~rows], moved[other][~rows])  # j's labels do fit other predictors


def test_ema_predictions_are_the_averages_of_the_previous_turns_out_of_fold_predictions(tmp_path):
    """Recomputed by hand for experiment 2: ridge fits on the right rows, then each turn's own-speaker and
    other-speaker weighted means of the earlier turns' predictions."""
    from core.linear import ridge_gcv
    from pipeline.features.context import fit_context_projection, projection_rows, turn_summaries

    path = sticky_dialogue_cache(tmp_path / "c.h5", dialogs_per_fold=2, turns=8)
    inputs = load_state_inputs(CacheReader(path), PREDICTED_KIND)
    states = compute_fold_states(inputs, PREDICTED_KIND, torch.device("cpu"))[2]
    projection = fit_context_projection(inputs, projection_rows(inputs, 2), PREDICTED_KIND.context_components)
    u = turn_summaries(inputs.z[:, : inputs.speech_width], inputs.z[:, inputs.speech_width :], projection)
    sequence = inputs.sequences[0]  # a dialogue of fold 1: predicted by a ridge fitted on folds 3, 4, 5
    fit = ~np.isin(inputs.folds, [1, 2])
    w, x_mean, y_mean, _ = ridge_gcv(u[fit], inputs.targets[fit])
    pred = (u[sequence] - x_mean) @ w + y_mean
    speakers = inputs.speakers[sequence]
    a = PREDICTED_KIND.context_decay
    for t in range(len(sequence)):
        for part, same in ((0, True), (1, False)):
            earlier = [s for s in range(t) if (speakers[s] == speakers[t]) == same]
            if not earlier:
                assert np.allclose(states[sequence[t], part * 3 : part * 3 + 3], 0)
                continue
            weights = a ** np.arange(len(earlier))[::-1]
            expected = weights @ pred[earlier] / weights.sum()
            assert np.allclose(states[sequence[t], part * 3 : part * 3 + 2], expected, atol=1e-5)
            assert np.isclose(states[sequence[t], part * 3 + 2], 1 - a ** len(earlier), atol=1e-6)


def test_the_recursive_context_equals_the_definition_with_three_speakers():
    from pipeline.features.context import causal_average

    rng = np.random.default_rng(4)
    u = rng.normal(size=(40, 3))
    speakers = rng.choice(["A", "B", "C"], 40)
    sequences = [np.arange(0, 25), np.arange(25, 40)]
    fast = context_states(u, sequences, speakers, a=0.6, speaker_aware=True)
    for sequence in sequences:
        same = speakers[sequence][:, None] == speakers[sequence][None, :]
        naive = np.concatenate([causal_average(u, sequence, 0.6, same), causal_average(u, sequence, 0.6, ~same)], 1)
        assert np.allclose(fast[sequence], naive, atol=1e-5)
        assert np.allclose(context_states(u, [sequence], speakers, 0.6, speaker_aware=False)[sequence],
                           causal_average(u, sequence, 0.6), atol=1e-5)


def test_rows_projected_in_blocks_equal_the_whole_matrix_product(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1000, 12)).astype(np.float32) * 3 + 1
    x[5, 2] = np.nan  # missing -> the training mean
    mean, std, axes = fit_block_projection(x, np.arange(0, 1000, 2), components=4)
    monkeypatch.setattr("pipeline.features.context.PROJECT_ROWS", 97)  # blocks that do not divide the rows
    blocked = project_block(x, mean, std, axes)
    z = np.clip((x - mean) / std, -10, 10)  # the formula, all rows at once
    expected = (np.where(np.isnan(z), 0.0, z) @ axes).astype(np.float32)
    assert blocked.shape == (1000, 4) and np.allclose(blocked, expected, rtol=1e-5, atol=1e-5)
    train = np.where(np.isnan(z[::2]), 0.0, z[::2]) @ axes  # the fitted axes whiten the training rows
    assert np.allclose(np.cov(train.T), np.eye(4), atol=1e-2)
