"""Dialogue states: the scan is Mamba's recurrence, states are causal, no test label leaks, and on
dialogues whose emotion persists the state helps held-out predictions."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cache import CacheReader
from core.errors import InputError
from core.metrics import dimension_metrics
from heads.training.experiment import train_fold
from heads.training.features import FeatureConfig, load_corpus_arrays
from heads.training.train import TrainConfig
from pipeline.models.mamba import Mamba, selective_scan_reference
from pipeline.models.state_model import DialogueStateUpdater, StateModelConfig, ema_weights
from pipeline.models.state_updater import updater_plan
from pipeline.stages.state import StateConfig, compute_fold_states, load_state_inputs, run_state_stage
from tests.synth_cache import sticky_dialogue_cache

SMALL = StateConfig(kind="mamba", model=StateModelConfig(d_model=32, d_state=16, ssm_state=8), epochs=12, window=24,
                    batch_size=16)


def naive_selective_scan(x, dt, A, B, C, D):
    """Mamba's discretised recurrence with explicit loops, float64 numpy:
    h[d, n] <- exp(dt[t, d] * A[d, n]) * h[d, n] + dt[t, d] * B[t, n] * x[t, d];  y[t, d] = sum_n C[t, n] h[d, n] + D[d] x[t, d]."""
    batch, steps, d_inner = x.shape
    n_state = A.shape[1]
    y = np.zeros((batch, steps, d_inner))
    for b in range(batch):
        h = np.zeros((d_inner, n_state))
        for t in range(steps):
            for d in range(d_inner):
                for n in range(n_state):
                    h[d, n] = np.exp(dt[b, t, d] * A[d, n]) * h[d, n] + dt[b, t, d] * B[b, t, n] * x[b, t, d]
                y[b, t, d] = sum(C[b, t, n] * h[d, n] for n in range(n_state)) + D[d] * x[b, t, d]
    return y


def test_the_pytorch_scan_equals_the_naive_recurrence():
    rng = np.random.default_rng(0)
    b, t, d, n = 2, 7, 5, 3
    x, dt = rng.standard_normal((b, t, d)), rng.uniform(0.01, 0.5, (b, t, d))
    A, B, C, D = -rng.uniform(0.5, 4, (d, n)), rng.standard_normal((b, t, n)), rng.standard_normal((b, t, n)), rng.standard_normal(d)
    ours = selective_scan_reference(*(torch.tensor(v) for v in (x, dt, A, B, C, D)))
    assert np.abs(ours.numpy() - naive_selective_scan(x, dt, A, B, C, D)).max() < 1e-10


def test_the_ema_matrix_is_the_recurrence_c_t_equals_a_c_prev_plus_one_minus_a_u_t():
    u = torch.randn(9, 3, dtype=torch.float64)
    a = torch.tensor(0.8, dtype=torch.float64)
    c, expected = ema_weights(a, 9) @ u, []
    prev = torch.zeros(3, dtype=torch.float64)
    for t in range(9):
        prev = a * prev + (1 - a) * u[t]
        expected.append(prev)
    assert torch.allclose(c, torch.stack(expected))


def test_states_are_causal_changing_a_later_utterance_never_changes_earlier_states():
    torch.manual_seed(0)
    model = DialogueStateUpdater(12, StateModelConfig(d_model=16, d_state=8, ssm_state=4)).eval()
    z = torch.randn(1, 10, 12)
    changed = z.clone()
    changed[0, 6:] += 5 * torch.randn(4, 12)
    with torch.no_grad():
        before, after = model(z)[0], model(changed)[0]
    assert torch.equal(before[0, :6], after[0, :6])
    assert not torch.allclose(before[0, 6:], after[0, 6:])


def test_a_mamba_layer_is_causal_and_shape_preserving():
    torch.manual_seed(1)
    layer = Mamba(8, d_state=4)
    x = torch.randn(2, 6, 8)
    y = layer(x)
    x2 = x.clone()
    x2[:, 4] = 0
    assert y.shape == x.shape and torch.equal(layer(x2)[:, :4], y[:, :4])


@pytest.fixture(scope="module")
def sticky(tmp_path_factory):
    path = sticky_dialogue_cache(tmp_path_factory.mktemp("sticky") / "c.h5")
    run_state_stage(str(path), SMALL, torch.device("cpu"))
    return path


def test_the_stage_stores_states_for_every_fold_and_utterance(sticky):
    reader = CacheReader(sticky)
    shapes = reader.dataset_shapes("state")
    assert {f"fold_{k}" for k in range(1, 6)} <= set(shapes) and shapes["fold_1"] == (len(reader), 16)
    assert reader.read("state", "ok").all()
    provenance = reader.provenance("state")
    assert provenance["backend"] == "PyTorch reference scan" and len(provenance["units"]) == 15
    for k in range(1, 6):
        states = reader.read("state", f"fold_{k}")
        assert np.isfinite(states).all() and (np.abs(states).sum(1) > 0).all()


# Few epochs: the leakage tests need updaters trained with and without some labels, not good ones.
FAST = replace(SMALL, model=replace(SMALL.model, d_model=16, d_state=8, ssm_state=4), epochs=2)


def test_no_label_of_fold_j_reaches_any_state_stored_for_fold_js_own_rows(sticky):
    """Scramble the labels of each fold j in turn: for every experiment fold k (j as the test fold or as one of
    the training folds), the states of j's rows stay bit for bit the same."""
    reader = CacheReader(sticky)
    inputs = load_state_inputs(reader, FAST)
    base = compute_fold_states(inputs, FAST, torch.device("cpu"))
    for j in range(1, 6):
        scrambled = inputs.targets.copy()
        rows = inputs.folds == j
        scrambled[rows] = np.random.default_rng(j).uniform(1, 5, (rows.sum(), 2))
        moved = compute_fold_states(replace(inputs, targets=scrambled), FAST, torch.device("cpu"))
        for k in range(1, 6):
            assert np.array_equal(base[k][rows], moved[k][rows]), (j, k)
        other = next(k for k in range(1, 6) if k != j)
        assert not np.array_equal(base[other][~rows], moved[other][~rows])  # j's labels do train other updaters


def test_heads_with_the_state_beat_heads_without_it_on_persistent_dialogues(sticky, tmp_path):
    reader = CacheReader(sticky)
    arrays = load_corpus_arrays(reader)
    scores = {}
    for use_state in (True, False):
        config = TrainConfig(variant="separate", features=FeatureConfig(use_state=use_state), state_gate=False)
        ccc = [dimension_metrics(train_fold(arrays, k, config, [0], tmp_path / f"{use_state}{k}"))
               for k in range(1, 6)]
        scores[use_state] = np.mean([(m["ccc_v"] + m["ccc_a"]) / 2 for m in ccc])
    assert scores[True] > scores[False] + 0.1, scores


def test_fewer_than_three_folds_cannot_be_cross_fitted():
    with pytest.raises(InputError, match="at least 3 folds"):
        updater_plan([1, 2])
    assert len(updater_plan([1, 2, 3, 4, 5])) == 15


def test_extract_writes_states_for_every_fold_of_an_iemocap_shaped_tree(tmp_path, tiny_wavlm):
    from pipeline.corpora import read_iemocap
    from pipeline.extract import ExtractConfig, extract
    from pipeline.stages.prosody import ProsodyConfig
    from pipeline.stages.speech import SpeechConfig
    from tests.synth import write_iemocap_tree
    from tests.test_cli import run_cli

    df, _ = read_iemocap(write_iemocap_tree(tmp_path))
    config = ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm)), prosody=ProsodyConfig(workers=1), state=SMALL)
    extract(tmp_path / "c.h5", df, ["speech", "prosody", "state"], config, device="cpu")
    reader = CacheReader(tmp_path / "c.h5")
    assert reader.read("state", "ok").all()
    for k in range(1, 6):
        states = reader.read("state", f"fold_{k}")
        assert states.shape == (25, 16) and (np.abs(states).sum(1) > 0).all()
    info = run_cli("cache", "info", "--cache", str(tmp_path / "c.h5"))
    assert "[state] 25 of 25 ok" in info.stdout and "mamba over dialog, width 16, folds [1, 2, 3, 4, 5], 15 updaters" in info.stdout
    assert "PyTorch reference scan" in info.stdout


def test_the_state_gate_keeps_an_informative_state_and_drops_a_noise_state(sticky, tmp_path):
    """The gate trains with and without the state and keeps the better on held-out dialogue groups."""
    arrays = load_corpus_arrays(CacheReader(sticky))
    config = TrainConfig(variant="separate", epochs=8, features=FeatureConfig(use_state=True))
    noise = {k: np.random.default_rng(k).standard_normal(v.shape).astype(np.float32) for k, v in arrays.states.items()}
    chosen = {}
    for name, states in (("real", arrays.states), ("noise", noise)):
        arrays.states = states
        chosen[name] = []
        for k in range(1, 6):
            train_fold(arrays, k, config, [0], tmp_path / name / f"fold{k}")
            record = json.loads((tmp_path / name / f"fold{k}" / "run.json").read_text())
            gate = record["state_gate"]
            assert gate["chosen"] == ("with_state" if record["effective_features"]["use_state"] else "without_state")
            assert (gate["with_state"] > gate["without_state"]) == (gate["chosen"] == "with_state")
            chosen[name].append(gate["chosen"])
    assert chosen["real"] == ["with_state"] * 5
    assert chosen["noise"].count("without_state") >= 4, chosen
    from heads.evaluation.evaluate import evaluate_runs

    # one label whose folds chose differently (folds 1-2 kept a state, 3-5 mostly not) is one table
    runs = [tmp_path / ("real" if k <= 2 else "noise") / f"fold{k}" for k in range(1, 6)]
    assert evaluate_runs(runs).per_fold.height == 5
