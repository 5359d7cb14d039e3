"""Rating scales: every corpus rates valence and arousal on its own scale (IEMOCAP 1-5, MSP-Podcast 1-7, ...);
cross-corpus work maps them onto one common scale, -1 (the scale's low end) to +1 (its high end).

    common = 2 (x - low) / (high - low) - 1          x = low + (common + 1) (high - low) / 2

The map is affine, so CCC and Pearson computed on two variables mapped alike are unchanged, and MSE is scaled by
(2 / (high - low))^2. Across corpora it matches the scales' ends, not the raters: a corpus whose raters use the
middle of the scale (acted vs natural speech) keeps its narrower spread, which CCC penalises and Pearson does not.
"""

from __future__ import annotations

import numpy as np

COMMON = (-1.0, 1.0)


def to_common(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Ratings on the scale ``[low, high]`` -> the common scale ``[-1, 1]``."""
    return 2 * (np.asarray(values, np.float64) - low) / (high - low) - 1


def from_common(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """The common scale -> ratings on ``[low, high]`` (``to_common``'s inverse)."""
    return low + (np.asarray(values, np.float64) + 1) * (high - low) / 2
