"""Cached arrays -> standardised fold tensors for the heads. Statistics come from training rows only.

* speech: the chosen layer (``last``, an index, or all layers for a learned mix), z-scored per dimension;
* prosody: NaN (undefined) replaced by the training mean, z-scored, clipped to +-10;
* state: the fold's own dialogue states (``/state/fold_<k>``), z-scored;
* targets: valence, arousal z-scored by the training mean/sd (metrics are reported on the original scale).

With ``per_speaker_norm`` speech and prosody are z-scored with each speaker's own statistics instead. Those
use the speaker's features but never labels, including test speakers (a common, documented practice: it
assumes the test speaker's unlabelled audio is available in advance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cache.reader import CacheReader, FoldSplit
from pipeline.problems import InputError

CLIP = 10.0


@dataclass(frozen=True)
class FeatureConfig:
    """Which cached blocks a head sees and how they are normalised."""

    layer: str = "last"  # "last" | "weighted" | an integer index into the L+1 hidden states
    use_speech: bool = True
    use_prosody: bool = True
    use_state: bool = True  # only when the cache holds states
    per_speaker_norm: bool = False


@dataclass
class CorpusArrays:
    """Everything the heads read from a cache, loaded once (one contiguous read per dataset)."""

    speech: np.ndarray | None  # [N, L+1, D] float16
    prosody: np.ndarray | None  # [N, F] float32 with NaN
    states: dict[int, np.ndarray]  # fold -> [N, d_state] float32
    targets: np.ndarray  # [N, 2] float64: valence, arousal on the corpus scale
    utt_ids: np.ndarray
    speakers: np.ndarray
    folds: np.ndarray
    prosody_names: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)


def load_corpus_arrays(reader: CacheReader) -> CorpusArrays:
    m = reader.manifest
    states = {}
    if "state" in reader.stages:
        for name in reader.dataset_shapes("state"):
            if name.startswith("fold_"):
                states[int(name.split("_")[1])] = reader.read("state", name)
    return CorpusArrays(
        speech=reader.read("speech", "pooled") if "speech" in reader.stages else None,
        prosody=reader.read("prosody", "values") if "prosody" in reader.stages else None,
        states=states,
        targets=m.select("valence", "arousal").to_numpy().astype(np.float64),
        utt_ids=m["utt_id"].to_numpy(), speakers=m["speaker"].to_numpy(), folds=m["fold"].to_numpy(),
        prosody_names=list(reader.read("prosody", "names")) if "prosody" in reader.stages else [],
        provenance={s: reader.provenance(s) for s in reader.stages},
    )


@dataclass
class SplitTensors:
    """One split's inputs. ``speech`` [n, D] or [n, L+1, D]; ``prosody`` [n, F]; ``state`` [n, d]."""

    rows: np.ndarray
    speech: torch.Tensor
    prosody: torch.Tensor
    state: torch.Tensor
    targets: torch.Tensor  # [n, 2] standardised
    raw_targets: np.ndarray  # [n, 2] corpus scale


@dataclass
class FoldTensors:
    train: SplitTensors
    validation: SplitTensors
    test: SplitTensors
    target_mean: np.ndarray  # [2]
    target_std: np.ndarray  # [2]
    effective: FeatureConfig  # after dropping blocks the cache lacks
    stats: dict[str, np.ndarray]  # normalisation statistics, saved with the head


def _zscore(x: np.ndarray, train: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = np.nanmean(train, axis=axis)
    std = np.nanstd(train, axis=axis)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
    return np.clip((x - mean) / std, -CLIP, CLIP), mean, std


def _per_speaker(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        out[rows], _, _ = _zscore(x[rows], x[rows])
    return out


def select_speech(speech: np.ndarray, layer: str) -> np.ndarray:
    """[N, L+1, D] -> [N, D] (one layer) or [N, L+1, D] float32 (``weighted``)."""
    if layer == "weighted":
        return speech.astype(np.float32)
    if layer == "last":
        return speech[:, -1].astype(np.float32)
    index = int(layer)
    if not -speech.shape[1] <= index < speech.shape[1]:
        raise InputError(f"--layer {layer}: the cache has hidden states 0..{speech.shape[1] - 1}")
    return speech[:, index].astype(np.float32)


def prepare_fold(arrays: CorpusArrays, split: FoldSplit, config: FeatureConfig) -> FoldTensors:
    """Standardised tensors of one fold's train / validation / test rows."""
    n = len(arrays.targets)
    use_speech = config.use_speech and arrays.speech is not None
    use_prosody = config.use_prosody and arrays.prosody is not None
    use_state = config.use_state and split.fold in arrays.states
    if not (use_speech or use_prosody or use_state):
        raise InputError("every feature block is switched off or missing from the cache")
    effective = FeatureConfig(config.layer, use_speech, use_prosody, use_state, config.per_speaker_norm)
    train = split.train
    stats: dict[str, np.ndarray] = {}

    def block(values: np.ndarray, name: str) -> np.ndarray:
        if config.per_speaker_norm and name != "state":
            if name == "prosody":  # impute first: a speaker may lack a feature entirely
                values = np.where(np.isnan(values), np.nanmean(values[train], 0), values)
            values = _per_speaker(values, arrays.speakers)
        z, stats[f"{name}_mean"], stats[f"{name}_std"] = _zscore(values, values[train])
        return np.nan_to_num(z, nan=0.0).astype(np.float32)  # NaN (undefined) -> the training mean

    speech = block(select_speech(arrays.speech, config.layer), "speech") if use_speech else np.zeros((n, 0), np.float32)
    prosody = block(arrays.prosody, "prosody") if use_prosody else np.zeros((n, 0), np.float32)
    state = block(arrays.states[split.fold], "state") if use_state else np.zeros((n, 0), np.float32)
    target_mean, target_std = arrays.targets[train].mean(0), arrays.targets[train].std(0)
    target_std = np.where(target_std > 1e-8, target_std, 1.0)
    stats["target_mean"], stats["target_std"] = target_mean, target_std
    targets = ((arrays.targets - target_mean) / target_std).astype(np.float32)

    def split_tensors(rows: np.ndarray) -> SplitTensors:
        return SplitTensors(rows, torch.from_numpy(speech[rows]), torch.from_numpy(prosody[rows]),
                            torch.from_numpy(state[rows]), torch.from_numpy(targets[rows]), arrays.targets[rows])

    return FoldTensors(split_tensors(split.train), split_tensors(split.validation), split_tensors(split.test),
                       target_mean, target_std, effective, {k: np.asarray(v, np.float32) for k, v in stats.items()})
