"""Decode an audio file to a mono float32 waveform at a requested sample rate."""

from __future__ import annotations

import os

import numpy as np
import soundfile
import torch
import torchaudio.functional

MAX_PEAK = 1000.0  # float files may overshoot +-1 a little; beyond this the scale is wrong, not the sound


class AudioError(Exception):
    """The file cannot be used as speech; the message is the reason stored in the failures table."""


def load_audio(path: str, target_rate_hz: int) -> np.ndarray:
    """Read ``path``, downmix to mono (mean of channels), resample to ``target_rate_hz``.

    Returns ``[S]`` float32 in [-1, 1] (integer PCM is scaled by soundfile). Raises ``AudioError`` for a
    file that cannot be decoded, holds no samples, holds NaN/inf samples, or float samples beyond +-1000.
    """
    if not os.path.isfile(path):
        raise AudioError("file not found")
    if os.path.getsize(path) == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)  # [S, C]
    except Exception as err:  # noqa: BLE001 - soundfile raises several types for corrupt files
        raise AudioError(f"cannot decode audio: {err}") from err
    if data.shape[0] == 0:
        raise AudioError("empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError("audio holds NaN or inf samples")
    peak = float(np.abs(data).max())
    if peak > MAX_PEAK:  # floating-point files can hold any value; integer PCM is always within +-1
        raise AudioError(f"samples reach {peak:.3g}, not audio scaled to +-1 (rescale the file)")
    mono = data.mean(axis=1)
    if rate != target_rate_hz:
        mono = resample(mono, rate, target_rate_hz)
    return np.ascontiguousarray(mono, dtype=np.float32)


def file_stats(path: str) -> tuple[int, int]:
    """``(size_bytes, mtime_ns)`` of a file, ``(-1, -1)`` when it is missing: stored per row so that a
    re-run of ``extract`` can find files that changed since they were processed."""
    try:
        stat = os.stat(path)
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def load_rows(paths: list[str], rows: list[int], target_rate_hz: int) -> tuple[list[np.ndarray | str], np.ndarray]:
    """Decode ``paths[row]`` for each row: the waveform (as ``load_audio``) or the reason it cannot be used,
    and the files' ``[n, 2]`` ``file_stats``, taken before decoding so a file changed meanwhile is caught
    on the next run."""
    stats = np.array([file_stats(paths[row]) for row in rows], dtype=np.int64).reshape(-1, 2)
    audio: list[np.ndarray | str] = []
    for row in rows:
        try:
            audio.append(load_audio(paths[row], target_rate_hz))
        except AudioError as err:
            audio.append(str(err))
    return audio, stats


def resample(wave: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Band-limited sinc resampling (torchaudio's default Hann-windowed kernel). ``[S] -> [S']``."""
    return torchaudio.functional.resample(torch.from_numpy(wave), from_hz, to_hz).numpy()
