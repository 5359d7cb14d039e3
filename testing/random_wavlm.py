"""Randomly initialised WavLM models saved like a downloaded checkpoint, for demos, tests and benchmarks.

They load through exactly the path used for ``microsoft/wavlm-large`` (``from_pretrained`` of a folder
with ``config.json``, weights and ``preprocessor_config.json``). Their embeddings are untrained: useful to
exercise and time the pipeline, meaningless as emotion features.
"""

from __future__ import annotations

from pathlib import Path

import torch

# name -> WavLMConfig overrides. "base-plus" and "large" match the published architectures' sizes.
SIZES: dict[str, dict] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                 num_buckets=32, max_bucket_distance=100),
    "small": dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                  conv_dim=(128,) * 7, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=8,
                  num_buckets=64, max_bucket_distance=400),
    "base-plus": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def save_random_wavlm(out_dir: str | Path, size: str = "tiny", norm: str = "layer", seed: int = 0) -> Path:
    """Write a random WavLM of ``size`` with a ``norm`` ("layer" or "group") feature encoder to ``out_dir``.

    Layer norm comes with the stable-layer-norm encoder and normalised input, as in wavlm-large; group
    norm with the post-norm encoder, as in the base models.
    """
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out_dir = Path(out_dir)
    config = WavLMConfig(**SIZES[size], feat_extract_norm=norm, do_stable_layer_norm=(norm == "layer"))
    torch.manual_seed(seed)
    WavLMModel(config).eval().save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(out_dir)
    return out_dir
