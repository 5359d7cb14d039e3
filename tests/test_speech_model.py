"""Pooled WavLM embeddings: padding never changes results; long files are pooled by frame count."""

import numpy as np
import pytest
import torch

from core.errors import InputError
from pipeline.models.speech_model import SpeechEmbedder
from pipeline.stages.speech import embed_long
from tests.synth import speechlike

CPU = torch.device("cpu")
LENGTHS = (16000, 7000, 23456, 4000, 401)


def _waves():
    return [speechlike(i, n / 16000) for i, n in enumerate(LENGTHS)]


def _one_at_a_time(embedder, waves):
    return np.concatenate([embedder.embed([w])[0] for w in waves])


@pytest.mark.parametrize("model", ["tiny_wavlm", "tiny_wavlm_group"])
def test_batched_extraction_equals_one_utterance_at_a_time(model, request):
    embedder = SpeechEmbedder(str(request.getfixturevalue(model)), CPU)
    batched, frames, _ = embedder.embed(_waves())
    assert batched.shape == (5, 3, 32)
    assert np.abs(batched - _one_at_a_time(embedder, _waves())).max() < 1e-4
    assert frames.tolist() == embedder.frame_counts(list(LENGTHS))


def test_plain_padding_would_leak_into_a_group_norm_model(tiny_wavlm_group):
    """Why the group-norm policy exists: without it, the padded batch differs from single utterances."""
    embedder = SpeechEmbedder(str(tiny_wavlm_group), CPU)
    single = _one_at_a_time(embedder, _waves())
    embedder.model.feature_extractor.conv_layers[0] = embedder.first_conv.block  # undo the policy
    embedder.first_conv = None
    naive, _, _ = embedder.embed(_waves())
    assert np.abs(naive - single).max() > 1e-3


def test_policies_are_chosen_from_the_model_config(tiny_wavlm, tiny_wavlm_group):
    assert SpeechEmbedder(str(tiny_wavlm), CPU).info.padding_policy == "pad-and-mask"
    assert SpeechEmbedder(str(tiny_wavlm_group), CPU).info.padding_policy == "per-utterance-first-conv"


def test_pooled_value_is_the_mean_of_the_frames_of_each_hidden_state(tiny_wavlm):
    embedder = SpeechEmbedder(str(tiny_wavlm), CPU)
    wave = speechlike(3, 0.7)
    inputs = embedder.feature_extractor([wave], sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        states = embedder.model(inputs["input_values"], output_hidden_states=True).hidden_states
    expected = np.stack([h[0].mean(0).numpy() for h in states])
    assert np.abs(embedder.embed([wave])[0][0] - expected).max() < 1e-5


def test_long_audio_is_pooled_over_windows_weighted_by_frames(tiny_wavlm):
    embedder = SpeechEmbedder(str(tiny_wavlm), CPU)
    wave = speechlike(9, 2.5)
    window = 16000  # 1 s windows: [0,1) [1,2) [2,2.5)
    pooled, _ = embed_long(embedder, wave, window, batch_samples=2 * window)
    parts = [wave[:16000], wave[16000:32000], wave[32000:]]
    means = [embedder.embed([p])[0][0] for p in parts]
    frames = embedder.frame_counts([len(p) for p in parts])
    expected = sum(m * f for m, f in zip(means, frames)) / sum(frames)
    assert np.abs(pooled - expected).max() < 1e-5


def test_a_model_that_is_not_available_offline_fails_with_one_helpful_line(tmp_path):
    with pytest.raises(InputError, match="not available offline.*--speech-model DIR"):
        SpeechEmbedder("nobody/no-such-wavlm", CPU)
    with pytest.raises(InputError, match="not a loadable speech model folder"):
        SpeechEmbedder(str(tmp_path), CPU)


def test_frame_sequences_of_chosen_layers_are_the_valid_frames(tiny_wavlm):
    embedder = SpeechEmbedder(str(tiny_wavlm), CPU)
    waves = _waves()[:3]
    pooled, counts, sequences = embedder.embed(waves, frame_layers=(1, 2))
    for b, wave in enumerate(waves):
        inputs = embedder.feature_extractor([wave], sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            states = embedder.model(inputs["input_values"], output_hidden_states=True).hidden_states
        for layer in (1, 2):
            assert sequences[layer][b].shape == (counts[b], 32)
            assert np.abs(sequences[layer][b] - states[layer][0].numpy()).max() < 1e-4
        assert np.abs(sequences[2][b].mean(0) - pooled[b, 2]).max() < 1e-5
