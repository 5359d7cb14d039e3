"""Utterance-level eGeMAPS v02 functionals (88) through openSMILE: a pure function of a waveform.

The extended Geneva Minimalistic Acoustic Parameter Set (Eyben et al. 2016, IEEE Trans. Affective Computing
7(2)) as openSMILE's ``eGeMAPSv02`` configuration computes it: 25 low-level descriptors on 10 ms frames
(F0 in semitones from 27.5 Hz, loudness, jitter, shimmer, HNR, formants, alpha ratio, Hammarberg index,
spectral slopes, MFCC 1-4, ...), smoothed over 3 frames, summarised per utterance (mean, coefficient of
variation, percentiles, slopes; some over voiced or unvoiced frames only) plus temporal features. Names
(``EGEMAPS_NAMES``) are openSMILE's own, in its output order; units are openSMILE's (semitones, dB,
sone-like loudness, Hz, seconds, per second).

Undefined values: openSMILE itself writes 0.0 for a voiced-frame functional of an utterance without voiced
frames (e.g. ``F0semitoneFrom27.5Hz_sma3nz_amean`` of silence or noise) and -201 dB for the formant
amplitudes; those values are returned as openSMILE gives them, so the features equal its command-line
tool's. NaN only where openSMILE gives no finite value (an input too short for one frame).

``import opensmile`` (and its pandas/audinterface imports, ~0.5 s) happens on the first call, not when this
module is imported; each process (a spawned worker too) builds its own openSMILE extractor once (``_smile``).
"""

from __future__ import annotations

import functools
import warnings
from importlib.metadata import version

import numpy as np


def _opensmile_version() -> str:
    return version("opensmile")


# The Python package's version names the bundled libSMILEapi and config files: a new release may change
# values (openSMILE 3.0.1 itself changed numerics by dropping -ffast-math), so caches are tied to it.
EGEMAPS_SET_VERSION = f"egemaps-v02-opensmile-{_opensmile_version()}"


# openSMILE's names in its output order, as its eGeMAPSv02 configuration declares them. Written out rather than
# read from openSMILE so that importing this module (the stage registry does) does not import opensmile; the
# first ``_smile()`` of a process and tests/test_egemaps.py check them against the library's configuration,
# benchmarks/check_egemaps_reference.py against SMILExtract's CSV header.
EGEMAPS_NAMES: tuple[str, ...] = (
    "F0semitoneFrom27.5Hz_sma3nz_amean", "F0semitoneFrom27.5Hz_sma3nz_stddevNorm",
    "F0semitoneFrom27.5Hz_sma3nz_percentile20.0", "F0semitoneFrom27.5Hz_sma3nz_percentile50.0",
    "F0semitoneFrom27.5Hz_sma3nz_percentile80.0", "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2",
    "F0semitoneFrom27.5Hz_sma3nz_meanRisingSlope", "F0semitoneFrom27.5Hz_sma3nz_stddevRisingSlope",
    "F0semitoneFrom27.5Hz_sma3nz_meanFallingSlope", "F0semitoneFrom27.5Hz_sma3nz_stddevFallingSlope",
    "loudness_sma3_amean", "loudness_sma3_stddevNorm", "loudness_sma3_percentile20.0", "loudness_sma3_percentile50.0",
    "loudness_sma3_percentile80.0", "loudness_sma3_pctlrange0-2", "loudness_sma3_meanRisingSlope",
    "loudness_sma3_stddevRisingSlope", "loudness_sma3_meanFallingSlope", "loudness_sma3_stddevFallingSlope",
    "spectralFlux_sma3_amean", "spectralFlux_sma3_stddevNorm", "mfcc1_sma3_amean", "mfcc1_sma3_stddevNorm",
    "mfcc2_sma3_amean", "mfcc2_sma3_stddevNorm", "mfcc3_sma3_amean", "mfcc3_sma3_stddevNorm", "mfcc4_sma3_amean",
    "mfcc4_sma3_stddevNorm", "jitterLocal_sma3nz_amean", "jitterLocal_sma3nz_stddevNorm",
    "shimmerLocaldB_sma3nz_amean", "shimmerLocaldB_sma3nz_stddevNorm", "HNRdBACF_sma3nz_amean",
    "HNRdBACF_sma3nz_stddevNorm", "logRelF0-H1-H2_sma3nz_amean", "logRelF0-H1-H2_sma3nz_stddevNorm",
    "logRelF0-H1-A3_sma3nz_amean", "logRelF0-H1-A3_sma3nz_stddevNorm", "F1frequency_sma3nz_amean",
    "F1frequency_sma3nz_stddevNorm", "F1bandwidth_sma3nz_amean", "F1bandwidth_sma3nz_stddevNorm",
    "F1amplitudeLogRelF0_sma3nz_amean", "F1amplitudeLogRelF0_sma3nz_stddevNorm", "F2frequency_sma3nz_amean",
    "F2frequency_sma3nz_stddevNorm", "F2bandwidth_sma3nz_amean", "F2bandwidth_sma3nz_stddevNorm",
    "F2amplitudeLogRelF0_sma3nz_amean", "F2amplitudeLogRelF0_sma3nz_stddevNorm", "F3frequency_sma3nz_amean",
    "F3frequency_sma3nz_stddevNorm", "F3bandwidth_sma3nz_amean", "F3bandwidth_sma3nz_stddevNorm",
    "F3amplitudeLogRelF0_sma3nz_amean", "F3amplitudeLogRelF0_sma3nz_stddevNorm", "alphaRatioV_sma3nz_amean",
    "alphaRatioV_sma3nz_stddevNorm", "hammarbergIndexV_sma3nz_amean", "hammarbergIndexV_sma3nz_stddevNorm",
    "slopeV0-500_sma3nz_amean", "slopeV0-500_sma3nz_stddevNorm", "slopeV500-1500_sma3nz_amean",
    "slopeV500-1500_sma3nz_stddevNorm", "spectralFluxV_sma3nz_amean", "spectralFluxV_sma3nz_stddevNorm",
    "mfcc1V_sma3nz_amean", "mfcc1V_sma3nz_stddevNorm", "mfcc2V_sma3nz_amean", "mfcc2V_sma3nz_stddevNorm",
    "mfcc3V_sma3nz_amean", "mfcc3V_sma3nz_stddevNorm", "mfcc4V_sma3nz_amean", "mfcc4V_sma3nz_stddevNorm",
    "alphaRatioUV_sma3nz_amean", "hammarbergIndexUV_sma3nz_amean", "slopeUV0-500_sma3nz_amean",
    "slopeUV500-1500_sma3nz_amean", "spectralFluxUV_sma3nz_amean", "loudnessPeaksPerSec", "VoicedSegmentsPerSec",
    "MeanVoicedSegmentLengthSec", "StddevVoicedSegmentLengthSec", "MeanUnvoicedSegmentLength",
    "StddevUnvoicedSegmentLength", "equivalentSoundLevel_dBp",
)


@functools.lru_cache(maxsize=1)
def _smile():  # noqa: ANN202 - opensmile.Smile, imported lazily
    """The eGeMAPSv02 functionals extractor of this process (built on first use, in spawned workers too)."""
    import opensmile  # here, not at module import: it pulls in pandas and audinterface (~0.5 s)

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    if tuple(smile.feature_names) != EGEMAPS_NAMES:  # a new openSMILE release renamed or reordered features
        raise RuntimeError(f"openSMILE {_opensmile_version()} eGeMAPSv02 names differ from EGEMAPS_NAMES")
    return smile


# openSMILE's Python wrapper feeds the library 16-bit PCM: sample * 32768 cast to int16, with no clipping,
# so +1.0 would wrap around to -32768. The largest float that maps into range:
_MAX_SAMPLE = 32767 / 32768


def egemaps_functionals(audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """eGeMAPS v02 functionals of one utterance.

    ``audio``: [S] float mono in [-1, 1] (clipped to 16-bit range, as openSMILE reads 16-bit PCM);
    ``sample_rate_hz``: its rate in Hz (any rate; openSMILE's frames are defined in seconds).
    Returns [88] float32 in ``EGEMAPS_NAMES`` order; NaN where openSMILE gives no finite value.
    """
    wave = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, _MAX_SAMPLE)
    with warnings.catch_warnings():
        # openSMILE fills too-short input with NaN and warns; NaN is this function's documented answer
        warnings.filterwarnings("ignore", message="Segment too short")
        values = _smile()(wave[np.newaxis, :], int(sample_rate_hz))  # [channels=1, 88, frames=1]
    out = np.asarray(values, dtype=np.float32).reshape(-1)
    if out.shape != (len(EGEMAPS_NAMES),):
        raise RuntimeError(f"openSMILE returned {out.shape} values, expected ({len(EGEMAPS_NAMES)},)")
    out[~np.isfinite(out)] = np.nan
    return out
