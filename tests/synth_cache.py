"""Synthetic caches with planted structure, written through the real cache writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cache import add_stage, create_cache
from core.protocol import partition_folds
from pipeline.corpora.manifest import normalise_manifest


def planted_cache(path: Path, n_per_speaker: int = 60, seed: int = 0, layers: int = 3, dim: int = 16,
                  n_prosody: int = 8, informative_layer: int = -1, swap: bool = False,
                 dialogues: bool = True, shared_speaker: bool = False) -> Path:
    """10 speakers in 5 folds. Valence depends only on the prosody block, arousal only on the speech
    block (on ``informative_layer``; the other layers are noise); ``swap`` plants them the other way
    round. Ratings on a 1-5 scale. Each speaker's utterances form one dialogue, or with ``dialogues=False``
    each utterance is its own (no context). ``shared_speaker`` puts every other row of speaker 0 (fold 1) in
    fold 2: a leak between folds."""
    rng = np.random.default_rng(seed)
    n = 10 * n_per_speaker
    speakers = np.repeat(np.arange(10), n_per_speaker)
    folds = speakers // 2 + 1
    if shared_speaker:
        folds[np.flatnonzero(speakers == 0)[1::2]] = 2
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
        "dialog_id": [f"spk{s}" for s in speakers] if dialogues else [f"u{i:05d}" for i in range(n)], "start_s": np.arange(n, dtype=float), "fold": folds,
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


def sticky_dialogue_cache(path: Path, seed: int = 0, dialogs_per_fold: int = 6, turns: int = 40, noise: float = 2.0,
                          stay: float = 0.92, partitions: bool = False) -> Path:
    """5 folds of dialogues; each dialogue's (valence, arousal) is a sticky Markov chain over 4 states,
    and each utterance's acoustics are that state plus strong noise. With ``partitions`` the folds become
    predefined partitions instead: folds 1-3 ``train``, fold 4 ``dev``, fold 5's dialogues ``Test1`` and
    ``Test2`` (half each)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[1.5, 1.5], [1.5, 4.5], [4.5, 1.5], [4.5, 4.5]])
    rows, speech, prosody = [], [], []
    for fold in range(1, 6):
        for d in range(dialogs_per_fold):
            state = rng.integers(4)
            for t in range(turns):
                if rng.random() > stay:
                    state = rng.integers(4)
                v, a = centres[state] + 0.2 * rng.standard_normal(2)
                split = ("train" if fold <= 3 else "dev" if fold == 4 else "Test1" if d < dialogs_per_fold // 2
                         else "Test2")
                rows.append(dict(utt_id=f"f{fold}d{d}t{t:03d}", path=f"/syn/f{fold}d{d}t{t}.wav", duration_s=2.0,
                                 sample_rate=16000, speaker=f"f{fold}s{t % 2}", dialog_id=f"f{fold}d{d}",
                                 start_s=float(t), fold=fold, valence=v, arousal=a,
                                 split=split if partitions else None))
                speech.append(np.concatenate([[a - 3, v - 3], np.zeros(6)]) + noise * rng.standard_normal(8))
                prosody.append(np.concatenate([[v - 3, a - 3], np.zeros(2)]) + noise * rng.standard_normal(4))
    frame = pl.DataFrame(rows)
    if partitions:
        frame = frame.with_columns(fold=pl.Series(partition_folds(frame["split"].to_numpy())))
    manifest = normalise_manifest(frame)
    order = {u: i for i, u in enumerate(r["utt_id"] for r in rows)}
    index = np.array([order[u] for u in manifest["utt_id"]])
    n = len(rows)
    create_cache(path, manifest, {})
    pooled = np.stack(speech)[index][:, None, :].repeat(2, axis=1).astype(np.float16)
    add_stage(path, "speech", {"pooled": pooled, "ok": np.ones(n, bool)}, {"model": {"model_id": "synthetic"}}, [])
    values = np.stack(prosody)[index].astype(np.float32)
    add_stage(path, "prosody", {"values": values, "defined": np.ones_like(values, bool), "ok": np.ones(n, bool),
                                "names": np.array(["p0", "p1", "p2", "p3"], dtype=object)}, {}, [])
    return path
