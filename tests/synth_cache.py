"""Synthetic caches with planted structure, written through the real cache writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cache import add_stage, create_cache
from pipeline.corpora.manifest import normalise_manifest


def planted_cache(path: Path, n_per_speaker: int = 60, seed: int = 0, layers: int = 3, dim: int = 16,
                  n_prosody: int = 8, informative_layer: int = -1, swap: bool = False) -> Path:
    """10 speakers in 5 folds. Valence depends only on the prosody block, arousal only on the speech
    block (on ``informative_layer``; the other layers are noise); ``swap`` plants them the other way
    round. Ratings on a 1-5 scale."""
    rng = np.random.default_rng(seed)
    n = 10 * n_per_speaker
    speakers = np.repeat(np.arange(10), n_per_speaker)
    valence_latent, arousal_latent = rng.standard_normal(n), rng.standard_normal(n)
    prosody = rng.standard_normal((n, n_prosody)).astype(np.float32)
    prosody[:, 0] = valence_latent + 0.3 * rng.standard_normal(n)
    prosody[:, 1] = -valence_latent + 0.3 * rng.standard_normal(n)
    prosody[::17, 2] = np.nan  # some undefined features, as Praat gives
    speech = (3 * rng.standard_normal((n, layers, dim))).astype(np.float16)  # loud, label-free
    speech[:, informative_layer, :4] = (arousal_latent[:, None] + 0.3 * rng.standard_normal((n, 4))).astype(np.float16)
    manifest = normalise_manifest(pl.DataFrame({
        "utt_id": [f"u{i:05d}" for i in range(n)], "path": [f"/synthetic/u{i:05d}.wav" for i in range(n)],
        "duration_s": np.full(n, 2.0), "sample_rate": np.full(n, 16000), "speaker": [f"spk{s}" for s in speakers],
        "dialog_id": [f"spk{s}" for s in speakers], "start_s": np.arange(n, dtype=float), "fold": speakers // 2 + 1,
        "valence": np.clip(3 + 0.8 * (arousal_latent if swap else valence_latent), 1, 5),
        "arousal": np.clip(3 + 0.8 * (valence_latent if swap else arousal_latent), 1, 5),
    }))
    order = np.argsort(manifest["utt_id"].to_numpy())  # manifest sorted by dialog, start: same as utt order here
    assert (order == np.arange(n)).all()
    create_cache(path, manifest, {"synthetic": True})
    ok = np.ones(n, dtype=bool)
    add_stage(path, "speech", {"pooled": speech, "ok": ok}, {"model": "synthetic"}, [])
    add_stage(path, "prosody", {"values": prosody, "defined": np.isfinite(prosody), "ok": ok,
                                "names": np.array([f"p{i}" for i in range(n_prosody)], dtype=object)}, {}, [])
    return path
