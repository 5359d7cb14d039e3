"""Where to cut a long recording into segments: fixed windows, or speech regions found by frame energy.

Pure functions of durations and frame energies; every bound is in seconds from the start of the recording.
A segment is ``[start_s, end_s)``; arrays of segments are ``[K, 2]`` float64.
"""

from __future__ import annotations

import numpy as np

FRAME_S = 0.025  # energy frames: 25 ms windows every 10 ms, the usual speech analysis frame
FRAME_HOP_S = 0.010


def fixed_segments(duration_s: float, segment_s: float, hop_s: float) -> np.ndarray:
    """Windows of ``segment_s`` every ``hop_s`` from 0, plus one window ending at ``duration_s`` when the hops
    stop short of it (so the end of the recording is always covered by a full-length window). A recording no
    longer than ``segment_s`` is one segment. ``[K, 2]`` seconds."""
    if not (segment_s > 0 and hop_s > 0):
        raise ValueError("segment and hop must be positive")
    if duration_s <= segment_s:
        return np.array([[0.0, max(duration_s, 0.0)]])
    # a tolerance of a microsecond: 10.0 - 4.0 is not always a multiple of 2.0 in floating point
    starts = np.arange(0.0, duration_s - segment_s + 1e-6, hop_s)
    bounds = np.stack([starts, starts + segment_s], axis=1)
    if bounds[-1, 1] < duration_s - 1e-6:
        bounds = np.vstack([bounds, [duration_s - segment_s, duration_s]])
    return bounds


def frame_energy_db(wave: np.ndarray, rate_hz: int, frame_s: float = FRAME_S, hop_s: float = FRAME_HOP_S
                    ) -> np.ndarray:
    """RMS energy of each analysis frame in dB re full scale: ``[S] float32 -> [F]``, frame f covering samples
    ``[f*hop, f*hop + frame)``. Silence (all zeros) is -120 dB rather than -inf."""
    frame, hop = int(round(frame_s * rate_hz)), int(round(hop_s * rate_hz))
    if len(wave) < frame:
        return np.empty(0)
    count = 1 + (len(wave) - frame) // hop
    windows = np.lib.stride_tricks.sliding_window_view(wave.astype(np.float64), frame)[::hop][:count]
    return 10.0 * np.log10(np.maximum((windows ** 2).mean(axis=1), 1e-12))


def speech_threshold_db(energy_db: np.ndarray, above_floor_db: float = 12.0, below_peak_db: float = 40.0,
                        min_range_db: float = 10.0) -> float:
    """The level separating speech from pauses: ``above_floor_db`` over the noise floor (the 10th percentile of
    the frames), kept within ``[peak - below_peak_db, peak - min_range_db]`` of the loud frames (the 99th
    percentile): digital silence (-120 dB) must not pull the threshold down to breath noise, and a recording
    with hardly any pause must keep its quiet speech. A recording whose loud frames are within ``min_range_db`` of
    its floor (silence, steady noise; also speech in fewer than 1 % of the frames) has no speech to find: +inf."""
    floor, peak = np.percentile(energy_db, 10), np.percentile(energy_db, 99)
    if peak - floor < min_range_db:
        return float("inf")
    return float(np.clip(floor + above_floor_db, peak - below_peak_db, peak - min_range_db))


def speech_regions(energy_db: np.ndarray, threshold_db: float, hop_s: float = FRAME_HOP_S, frame_s: float = FRAME_S,
                   min_pause_s: float = 0.3, min_speech_s: float = 0.25, pad_s: float = 0.1) -> np.ndarray:
    """Runs of frames above ``threshold_db``, joined across pauses shorter than ``min_pause_s`` (a breath or a
    stop closure is not the end of an utterance), dropping runs shorter than ``min_speech_s`` (clicks), then
    widened by ``pad_s`` on each side (a VAD's usual hangover: weak onsets and final fricatives sit under the
    threshold), never across the middle of a pause. ``[K, 2]`` seconds (the first may start below 0)."""
    loud = np.concatenate([[False], energy_db > threshold_db, [False]])
    edges = np.flatnonzero(np.diff(loud.astype(np.int8)))
    runs = edges.reshape(-1, 2).astype(np.float64)  # [first frame, one past the last frame]
    regions: list[list[float]] = []
    for first, last in runs:
        start, end = first * hop_s, (last - 1) * hop_s + frame_s
        if regions and start - regions[-1][1] < min_pause_s:
            regions[-1][1] = end
        else:
            regions.append([start, end])
    kept = np.array([r for r in regions if r[1] - r[0] >= min_speech_s], dtype=np.float64).reshape(-1, 2)
    if len(kept) > 1:
        room = np.minimum(pad_s, (kept[1:, 0] - kept[:-1, 1]) / 2)  # half of each pause at most
        kept[1:, 0] -= room
        kept[:-1, 1] += room
    kept[:1, 0] -= pad_s
    kept[-1:, 1] += pad_s
    return kept


def energy_segments(energy_db: np.ndarray, duration_s: float, segment_s: float, hop_s: float,
                    frame_hop_s: float = FRAME_HOP_S, frame_s: float = FRAME_S) -> np.ndarray:
    """Segments that follow the speech: each speech region (``speech_regions`` at ``speech_threshold_db``) is
    one segment, and a region longer than ``segment_s`` is cut into ``fixed_segments`` inside it. Pauses are
    left out. A recording with no frame above the threshold gives no segment. ``[K, 2]`` seconds."""
    if len(energy_db) == 0:
        return np.empty((0, 2))
    regions = speech_regions(energy_db, speech_threshold_db(energy_db), frame_hop_s, frame_s)
    pieces = [fixed_segments(end - start, segment_s, hop_s) + start for start, end in regions]
    bounds = np.vstack(pieces) if pieces else np.empty((0, 2))
    return np.clip(bounds, 0.0, duration_s)
