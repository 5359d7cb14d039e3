"""The speech stage: every utterance -> masked-mean pooled hidden states of all layers, ``[N, L+1, D]``.

Audio is decoded and resampled in DataLoader workers while the model runs on the previous batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cache.parts import UnitResult
from cache.schema import Failure
from core.errors import InputError
from core.provenance import package_versions
from pipeline.features.audio import load_rows
from pipeline.models.onnx_speech import OPSET, OnnxSpeechEmbedder
from pipeline.models.speech_model import SpeechEmbedder
from pipeline.runtime.orphans import die_with_parent
from pipeline.stages.batching import plan_length_buckets, window_bounds
from pipeline.stages.row_blocks import RAGGED_PREFIX
from pipeline.stages.runner import Stage, StagePlan, StageWork, run_stage

FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class SpeechConfig:
    """Settings of the speech stage (stored with the cache)."""

    model: str = "microsoft/wavlm-large"
    batch_seconds: float = 0.0  # padded audio seconds per batch; 0 = auto: 120 on CUDA, 8 on CPU (see below)
    max_batch_size: int = 32
    max_length_ratio: float = 1.25  # longest / shortest utterance within a batch (padding is wasted work)
    window_s: float = 30.0  # longer utterances are embedded in windows, pooled by frame count
    frame_layers: tuple[int, ...] = ()  # also store the frame sequences of these hidden states (ragged)
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU; or fp32 | bf16 | fp16
    num_workers: int = 1  # DataLoader processes decoding audio

    def __post_init__(self) -> None:
        """Refuse settings the stage cannot run with, naming the option."""
        if not (np.isfinite(self.window_s) and self.window_s >= 0.1):
            raise InputError(f"--window-s {self.window_s}: must be at least 0.1 seconds")
        if not (np.isfinite(self.batch_seconds) and self.batch_seconds >= 0):
            raise InputError(f"--batch-seconds {self.batch_seconds}: must be 0 (automatic) or a positive number of "
                             "seconds")
        if self.max_batch_size < 1 or self.max_length_ratio < 1:
            raise InputError("max_batch_size and max_length_ratio must be at least 1")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise InputError(f"--precision {self.precision}: choose auto, fp32, bf16 or fp16")
        if self.num_workers < 0:
            raise InputError(f"--loader-workers {self.num_workers}: must be 0 or more")


class _UnitAudio(Dataset):
    """Item k = decoded audio of pending unit k: ``(unit_index, rows, [waveform or failure reason])``."""

    def __init__(self, paths: list[str], pending: list[tuple[int, list[int]]], rate_hz: int):
        self.paths, self.pending, self.rate_hz = paths, pending, rate_hz

    def __len__(self) -> int:
        return len(self.pending)

    def __getitem__(self, k: int) -> tuple[int, list[int], list[np.ndarray | str], np.ndarray]:
        unit, rows = self.pending[k]
        return unit, rows, *load_rows(self.paths, rows, self.rate_hz)


def resolve_batch_seconds(config: SpeechConfig, device: torch.device) -> SpeechConfig:
    """Fill in the automatic batch budget. On a CPU, batching pays only for short utterances (fewer
    framework calls); from ~3 s on, one utterance already keeps the cores busy (benchmarks/bench_extract.py),
    so the CPU budget is small. A GPU needs large batches to be busy."""
    if config.batch_seconds > 0:
        return config
    return replace(config, batch_seconds=120.0 if device.type == "cuda" else 8.0)


def _worker_init(parent_pid: int, worker_id: int) -> None:
    die_with_parent(parent_pid)  # a killed extract leaves no decoding worker behind


def _as_is(item):  # noqa: ANN001, ANN202 - keep numpy waveforms (the default collate makes tensors)
    return item


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for the model, ``None`` for plain fp32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def embed_long(embedder: SpeechEmbedder, wave: np.ndarray, window_samples: int, batch_samples: int,
               frame_layers: tuple[int, ...] = ()) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Pooled states of one long waveform: windows embedded in batches, means weighted by frame count.
    Returns ``(pooled [L+1, D], {layer: frames [T, D]})`` with the windows' frames concatenated."""
    bounds = window_bounds(len(wave), window_samples)
    per_batch = max(1, batch_samples // window_samples)
    total = None
    frames_total = 0
    sequences: dict[int, list[np.ndarray]] = {layer: [] for layer in frame_layers}
    for start in range(0, len(bounds), per_batch):
        chunk = [wave[a:b] for a, b in bounds[start : start + per_batch]]
        pooled, frames, chunk_sequences = embedder.embed(chunk, frame_layers)
        weighted = (pooled * frames[:, None, None]).sum(0)
        total = weighted if total is None else total + weighted
        frames_total += int(frames.sum())
        for layer in frame_layers:
            sequences[layer].extend(chunk_sequences[layer])
    return total / frames_total, {layer: np.concatenate(seqs) for layer, seqs in sequences.items()}


def speech_units(
    embedder: SpeechEmbedder, config: SpeechConfig, paths: list[str], utt_ids: list[str],
    pending: list[tuple[int, list[int]]],
) -> Iterator[tuple[int, UnitResult]]:
    """Compute pending units; bad files become failures, never exceptions."""
    rate = embedder.info.sample_rate_hz
    min_samples = 400  # the conv encoder's receptive field (25 ms at 16 kHz)
    loader = DataLoader(
        _UnitAudio(paths, pending, rate), batch_size=None, shuffle=False,
        num_workers=config.num_workers, prefetch_factor=2 if config.num_workers else None,
        collate_fn=_as_is, worker_init_fn=partial(_worker_init, os.getpid()),
    )
    shape = (embedder.info.num_hidden_states, embedder.info.hidden_size)
    layers = config.frame_layers
    for unit, rows, audio, stats in loader:
        pooled = np.zeros((len(rows), *shape), dtype=np.float32)
        ok = np.zeros(len(rows), dtype=bool)
        sequences: dict[int, list[np.ndarray | None]] = {layer: [None] * len(rows) for layer in layers}
        failures: list[Failure] = []
        short: list[int] = []
        for k, (row, item) in enumerate(zip(rows, audio)):
            if isinstance(item, str):
                failures.append(Failure(utt_ids[row], "speech", paths[row], item))
            elif len(item) < min_samples:
                failures.append(Failure(utt_ids[row], "speech", paths[row],
                                        f"too short for the speech model: {len(item) / rate * 1000:.1f} ms < 25 ms"))
            elif len(item) > config.window_s * rate:
                pooled[k], long_sequences = embed_long(embedder, item, int(config.window_s * rate),
                                                       int(config.batch_seconds * rate), layers)
                for layer in layers:
                    sequences[layer][k] = long_sequences[layer]
                ok[k] = True
            else:
                short.append(k)
        if short:
            pooled[short], _, short_sequences = embedder.embed([audio[k] for k in short], layers)
            for layer in layers:
                for k, seq in zip(short, short_sequences[layer]):
                    sequences[layer][k] = seq
            ok[short] = True
        bad = ~np.isfinite(pooled).all(axis=(1, 2))
        for k in np.flatnonzero(bad & ok):
            failures.append(Failure(utt_ids[rows[k]], "speech", paths[rows[k]], "model output is not finite"))
        ok &= ~bad
        pooled[~ok] = 0.0
        arrays = {"pooled": to_float16(pooled), "ok": ok, "file_size": stats[:, 0], "file_mtime_ns": stats[:, 1]}
        if layers:
            empty = np.zeros((0, shape[1]), np.float32)
            kept = {layer: [seq if ok[k] and seq is not None else empty for k, seq in enumerate(seqs)]
                    for layer, seqs in sequences.items()}
            arrays["frame_counts"] = np.array([len(seq) for seq in kept[layers[0]]], dtype=np.int64)
            for layer, seqs in kept.items():
                arrays[f"{RAGGED_PREFIX}frames_layer{layer}"] = to_float16(np.concatenate(seqs))
        yield unit, UnitResult(rows=np.asarray(rows, dtype=np.int64), arrays=arrays, failures=failures)


def to_float16(values: np.ndarray) -> np.ndarray:
    """Clip to float16's range (no inf in the cache) and convert."""
    return np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


def load_embedder(config: SpeechConfig, device: torch.device) -> SpeechEmbedder | OnnxSpeechEmbedder:
    """The speech model of ``config.model``: a hub id or folder runs in torch; a ``.onnx`` file (written by
    ``pipeline.models.onnx_speech``) in ONNX Runtime on the CPU, in fp32 or, for an int8 file, int8 matrix products.
    The file name is the whole switch, so a torch cache's settings and fingerprint are what they always were."""
    if not config.model.endswith(".onnx"):
        return SpeechEmbedder(config.model, device, resolve_precision(config.precision, device))
    if config.precision not in ("auto", "fp32"):
        raise InputError(f"--precision {config.precision}: an ONNX speech model computes in fp32 (int8 for its int8 "
                         "copy); use --precision auto or fp32, or the torch model")
    if config.frame_layers:
        raise InputError(f"--frame-layers: the ONNX speech model {config.model} returns pooled states only; use the "
                         "torch model to store frame sequences")
    return OnnxSpeechEmbedder(config.model, device)


def runtime(embedder: SpeechEmbedder | OnnxSpeechEmbedder) -> dict:
    """What ran the speech model, for the stage's provenance."""
    if isinstance(embedder, SpeechEmbedder):
        return {"name": "torch"}
    return {"name": "onnxruntime", "quantization": embedder.quantization,
            "exported_from": embedder.exported_from.model_id, "opset": OPSET}


def run_speech_stage(
    cache_path: str, manifest: pl.DataFrame, config: SpeechConfig, device: torch.device, on_error: str = "skip",
    only_rows: np.ndarray | None = None, work: StageWork = StageWork(),
) -> list[Failure]:
    """Embed every utterance of ``manifest`` into the cache's ``speech`` group (resumable); with ``only_rows``
    recompute just those rows (files that changed) and keep the others from the cache; with ``work.shard``
    compute one shard's batches only (see ``pipeline.runtime.sharding``)."""
    torch.manual_seed(0)
    config = resolve_batch_seconds(config, device)
    embedder = load_embedder(config, device)
    beyond = [layer for layer in config.frame_layers if not 0 <= layer < embedder.info.num_hidden_states]
    if beyond:
        raise InputError(f"--frame-layers {beyond}: the model has hidden states 0..{embedder.info.num_hidden_states - 1}")
    durations = manifest["duration_s"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    rows = np.arange(manifest.height) if only_rows is None else np.asarray(only_rows)
    units = [[int(rows[i]) for i in unit] for unit in plan_length_buckets(
        durations[rows], config.batch_seconds, config.max_batch_size, config.window_s, config.max_length_ratio)]
    info = asdict(embedder.info)
    fingerprint = {"config": asdict(config), "model": info, "device_type": device.type}
    if device.type == "cpu" and resolve_precision(config.precision, device) is not None:
        fingerprint["cpu_convolutions"] = "fp32"  # since AMX bf16 convolutions were found wrong (speech_model)
    if not isinstance(embedder, SpeechEmbedder):  # torch fingerprints stay as they were: their caches resume
        fingerprint["runtime"] = runtime(embedder)
    provenance = {**fingerprint, "packages": package_versions(), "units": len(units),
                  "runtime": runtime(embedder)}
    padded_seconds = [len(unit) * float(np.nan_to_num(durations[unit]).max(initial=0.0)) for unit in units]
    frames = 50 * float(np.nan_to_num(durations).sum()) * len(config.frame_layers)  # 50 frames per second
    stage_bytes = int(manifest.height * embedder.info.num_hidden_states * embedder.info.hidden_size * 2
                      + frames * embedder.info.hidden_size * 2)  # float16
    plan = StagePlan("speech", units, fingerprint, update_rows=only_rows, unit_seconds=padded_seconds,
                     stage_bytes=stage_bytes)
    paths, utt_ids = manifest["path"].to_list(), manifest["utt_id"].to_list()
    compute = lambda pending: speech_units(embedder, config, paths, utt_ids, pending)  # noqa: E731
    return run_stage(cache_path, manifest, Stage(plan, compute, provenance), on_error, work)
