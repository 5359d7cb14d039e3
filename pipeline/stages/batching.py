"""Plan extraction work as units (batches) of manifest rows. Pure functions of durations and settings.

The plan depends only on the manifest and the config, never on what is already done, so a resumed run
recomputes exactly the batches a clean run would: results stay bit-identical across interruptions.
"""

from __future__ import annotations

import math

import numpy as np


def plan_length_buckets(
    durations_s: np.ndarray, batch_seconds: float, max_batch_size: int, window_s: float,
    max_length_ratio: float = 1.25,
) -> list[list[int]]:
    """Group rows into batches of similar length, bounded by padded audio seconds.

    ``durations_s``: [N] seconds (NaN when unknown). Rows are sorted longest first; a batch grows while
    ``len(batch) * longest <= batch_seconds``, ``len(batch) <= max_batch_size`` and
    ``longest / shortest <= max_length_ratio`` (padding is wasted compute). Rows longer than ``window_s``
    or of unknown length form batches of one (long ones are then processed in windows).
    Returns lists of row indices; every row appears exactly once.
    """
    order = sorted(range(len(durations_s)), key=lambda i: (-_finite_or_inf(durations_s[i]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0.0
    for row in order:
        duration = float(durations_s[row])
        if not math.isfinite(duration) or duration > window_s:
            batches.append([row])
            continue
        longest_if_added = max(longest, duration)
        too_uneven = duration > 0 and longest_if_added / duration > max_length_ratio
        if current and ((len(current) + 1) * longest_if_added > batch_seconds or len(current) >= max_batch_size
                        or too_uneven):
            batches.append(current)
            current, longest_if_added = [], duration
        current.append(row)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


def plan_fixed_chunks(num_rows: int, chunk_size: int) -> list[list[int]]:
    """Consecutive rows in chunks of ``chunk_size`` (the last may be shorter)."""
    return [list(range(start, min(start + chunk_size, num_rows))) for start in range(0, num_rows, chunk_size)]


def window_bounds(num_samples: int, window_samples: int) -> list[tuple[int, int]]:
    """Split ``[0, num_samples)`` into consecutive windows of at most ``window_samples`` samples.

    A final remainder shorter than a quarter window is merged into the previous window, so no window is
    too short to carry context.
    """
    bounds = [(s, min(s + window_samples, num_samples)) for s in range(0, num_samples, window_samples)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < window_samples // 4:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def _finite_or_inf(value: float) -> float:
    return float(value) if math.isfinite(float(value)) else math.inf
