"""Long recordings as segments for ``predict``: where each file is cut (``SegmentConfig``), and each segment's
audio written to its own file, reading only that stretch of the recording.

Nothing here holds a whole recording in memory: the energy split reads the file in blocks, and a segment is
read by seeking to it, so a two-hour call costs what one block and one segment cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from core.errors import InputError
from pipeline.features.audio import AudioError
from pipeline.features.segments import FRAME_HOP_S, FRAME_S, energy_segments, fixed_segments, frame_energy_db

SPLITS = ("fixed", "energy")


@dataclass(frozen=True)
class SegmentConfig:
    """How ``predict --segment`` cuts recordings (seconds). ``fixed``: windows of ``segment_s`` every ``hop_s``;
    ``energy``: the speech regions between pauses, each cut into such windows when longer than ``segment_s``."""

    segment_s: float = 4.0
    hop_s: float = 2.0
    split: str = "energy"  # 1 % of segments mix two utterances, against 60 % for fixed (benchmarks/bench_long.py)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.segment_s) and self.segment_s >= 0.5):
            raise InputError(f"--segment {self.segment_s}: must be at least 0.5 seconds")
        if not (np.isfinite(self.hop_s) and 0 < self.hop_s <= self.segment_s):
            raise InputError(f"--hop {self.hop_s}: must be positive and at most --segment ({self.segment_s})")
        if self.split not in SPLITS:
            raise InputError(f"--split {self.split}: choose {' or '.join(SPLITS)}")


def file_energy_db(path: str, block_s: float = 60.0) -> tuple[np.ndarray, float, float, float]:
    """``(frame energies [F] dB, duration_s, frame_hop_s, frame_s)`` of a file's mono mix (``frame_energy_db``'s
    frames), read in blocks of ``block_s`` seconds: the samples a frame straddles between blocks are carried over,
    so the frames are those of the whole file. The hop and frame lengths are whole samples, so they are returned
    in seconds as they really are (220 samples at 22.05 kHz is 9.977 ms, not 10: 16 s of drift over 2 h).
    Raises ``AudioError`` for samples that are NaN or infinite (as ``load_audio`` does)."""
    with soundfile.SoundFile(path) as f:
        rate, total = f.samplerate, f.frames
        hop, frame = int(round(FRAME_HOP_S * rate)), int(round(FRAME_S * rate))
        pieces, carry = [], np.empty(0, np.float32)
        for block in f.blocks(blocksize=int(block_s * rate), dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                raise AudioError("audio holds NaN or inf samples")
            buffer = np.concatenate([carry, block.mean(axis=1)])
            energy = frame_energy_db(buffer, rate)
            pieces.append(energy)
            carry = buffer[len(energy) * hop:] if len(energy) else buffer
    return (np.concatenate(pieces) if pieces else np.empty(0)), total / rate, hop / rate, frame / rate


def plan_file_segments(path: str, config: SegmentConfig) -> np.ndarray:
    """The segments of one recording, ``[K, 2]`` seconds (``fixed_segments`` or ``energy_segments``). Raises
    ``AudioError`` with the decoder's reason for a file that cannot be read."""
    try:
        if config.split == "fixed":
            return fixed_segments(soundfile.info(path).duration, config.segment_s, config.hop_s)
        energy, duration_s, hop_s, frame_s = file_energy_db(path)
    except (RuntimeError, OSError, ValueError) as err:  # soundfile's LibsndfileError is a RuntimeError
        raise AudioError(f"cannot decode audio: {err}") from err
    return energy_segments(energy, duration_s, config.segment_s, config.hop_s, hop_s, frame_s)


def write_segments(path: str, bounds: np.ndarray, out_paths: list[Path]) -> None:
    """Write each segment ``bounds[k]`` (seconds) of ``path`` to ``out_paths[k]`` as a mono float WAV at the file's
    own rate (channels averaged, as ``load_audio`` does), one segment in memory at a time."""
    with soundfile.SoundFile(path) as f:
        rate = f.samplerate
        for (start_s, end_s), out in zip(bounds, out_paths):
            first = int(round(start_s * rate))
            f.seek(first)
            data = f.read(frames=max(int(round(end_s * rate)) - first, 0), dtype="float32", always_2d=True)
            soundfile.write(out, data.mean(axis=1), rate, subtype="FLOAT")
