"""Utterance-level Praat (parselmouth) prosody and voice features: pure functions of a waveform.

Feature set ``praat-v2`` (names in ``FEATURE_NAMES``; units in the names). Frame step 10 ms; pitch range
75-600 Hz; semitones are relative to 27.5 Hz (as in eGeMAPS). A feature that is undefined for an
utterance (no voiced frames, silence, too few pitch periods) is NaN; the cache stores a defined-mask and
the heads see NaN replaced by the training mean (never NaN or inf).

Groups:
* F0 (semitones): mean, sd, percentiles 5/20/50/80/95, ranges, min/max, mean in Hz, regression slope,
  mean rising and falling slopes between consecutive voiced frames.
* Intensity (dB): mean, sd, percentiles, range, slope; RMS level (dBFS).
* Voicing: voiced fraction, voiced segments per second, mean voiced/unvoiced segment length.
* Rate and pauses: syllable nuclei as voiced intensity peaks with >= 2 dB dips (after de Jong & Wempe
  2009), speech and articulation rate, phonation time, pauses (>= 0.3 s below max-25 dB) count/rate/mean.
* Voice quality: jitter (local, local abs, rap, ppq5, ddp), shimmer (local, local dB, apq3, apq5,
  apq11, dda), HNR mean/sd (cross-correlation), CPPS (smoothed cepstral peak prominence, 10 ms frames).
* Formants (Burg, 5 formants up to 5500 Hz, voiced frames): F1-F3 mean/sd and bandwidths.
* Spectrum: LTAS slope 0-1 kHz vs 1-4 kHz, alpha ratio, Hammarberg index, centroid, sd, skewness.
  The alpha ratio follows eGeMAPS (``alphaRatioV``): per 20 ms Hamming frame 10*log10(E(1-5 kHz) /
  E(50-1000 Hz)), averaged over voiced frames (``praat-v1`` had the inverse ratio over the whole utterance).
* Duration (seconds).
"""

from __future__ import annotations

import math

import numpy as np
import parselmouth
from parselmouth.praat import call

# v2: alpha ratio in eGeMAPS' convention (sign and voiced frames); caches of v1 are refused, not mixed.
FEATURE_SET_VERSION = "praat-v2"
TIME_STEP_S = 0.01
PITCH_FLOOR_HZ = 75.0
PITCH_CEILING_HZ = 600.0
SEMITONE_REFERENCE_HZ = 27.5
PAUSE_MIN_S = 0.3
SILENCE_BELOW_MAX_DB = 25.0
NUCLEUS_MIN_DIP_DB = 2.0
# eGeMAPS' alpha ratio (Eyben et al. 2016; openSMILE cSpectral on its 20 ms Hamming frames, 10 ms step).
ALPHA_FRAME_S = 0.020
ALPHA_LOW_BAND_HZ = (50.0, 1000.0)  # the paper's band; openSMILE's code sums from 0 Hz
ALPHA_HIGH_BAND_HZ = (1000.0, 5000.0)

_PERCENTILES = (5, 20, 50, 80, 95)
FEATURE_NAMES: tuple[str, ...] = (
    "f0_mean_st", "f0_sd_st", *(f"f0_p{p:02d}_st" for p in _PERCENTILES), "f0_range_p05_p95_st",
    "f0_range_p20_p80_st", "f0_min_st", "f0_max_st", "f0_mean_hz", "f0_slope_st_per_s",
    "f0_rising_slope_st_per_s", "f0_falling_slope_st_per_s",
    "intensity_mean_db", "intensity_sd_db", *(f"intensity_p{p:02d}_db" for p in _PERCENTILES),
    "intensity_range_p05_p95_db", "intensity_slope_db_per_s", "rms_dbfs",
    "voiced_fraction", "voiced_segments_per_s", "voiced_segment_mean_s", "unvoiced_segment_mean_s",
    "syllable_count", "speech_rate_syll_per_s", "articulation_rate_syll_per_s", "phonation_time_s",
    "pause_count", "pause_rate_per_s", "pause_mean_s", "pause_fraction",
    "jitter_local", "jitter_local_abs_s", "jitter_rap", "jitter_ppq5", "jitter_ddp",
    "shimmer_local", "shimmer_local_db", "shimmer_apq3", "shimmer_apq5", "shimmer_apq11", "shimmer_dda",
    "hnr_mean_db", "hnr_sd_db", "cpps_db",
    "f1_mean_hz", "f1_sd_hz", "f2_mean_hz", "f2_sd_hz", "f3_mean_hz", "f3_sd_hz",
    "f1_bandwidth_hz", "f2_bandwidth_hz", "f3_bandwidth_hz",
    "ltas_slope_db", "alpha_ratio_db", "hammarberg_db", "spectral_centroid_hz", "spectral_sd_hz",
    "spectral_skewness",
    "duration_s",
)
NAN = float("nan")


def hz_to_semitones(f0_hz: np.ndarray) -> np.ndarray:
    """Semitones relative to 27.5 Hz: ``12 * log2(f0 / 27.5)``."""
    return 12.0 * np.log2(np.asarray(f0_hz, dtype=np.float64) / SEMITONE_REFERENCE_HZ)


def linear_slope(times_s: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of ``values`` over ``times_s`` (units per second); NaN for < 2 points."""
    if len(values) < 2 or np.ptp(times_s) == 0:
        return NAN
    return float(np.polyfit(times_s, values, 1)[0])


def _stats(prefix: str, unit: str, values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        names = [f"{prefix}_mean_{unit}", f"{prefix}_sd_{unit}", *(f"{prefix}_p{p:02d}_{unit}" for p in _PERCENTILES)]
        return {n: NAN for n in names}
    pct = np.percentile(values, _PERCENTILES)
    out = {f"{prefix}_mean_{unit}": float(values.mean()), f"{prefix}_sd_{unit}": float(values.std())}
    out.update({f"{prefix}_p{p:02d}_{unit}": float(v) for p, v in zip(_PERCENTILES, pct)})
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` index runs where ``mask`` is True."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2], edges[1::2]))


def f0_features(times_s: np.ndarray, f0_hz: np.ndarray) -> dict[str, float]:
    """F0 statistics from a pitch track (0 Hz = unvoiced frame)."""
    voiced = f0_hz > 0
    st = hz_to_semitones(f0_hz[voiced])
    out = _stats("f0", "st", st)
    defined = len(st) > 0
    out["f0_range_p05_p95_st"] = out["f0_p95_st"] - out["f0_p05_st"] if defined else NAN
    out["f0_range_p20_p80_st"] = out["f0_p80_st"] - out["f0_p20_st"] if defined else NAN
    out["f0_min_st"] = float(st.min()) if defined else NAN
    out["f0_max_st"] = float(st.max()) if defined else NAN
    out["f0_mean_hz"] = float(f0_hz[voiced].mean()) if defined else NAN
    out["f0_slope_st_per_s"] = linear_slope(times_s[voiced], st)
    # Frame-to-frame slopes only between adjacent voiced frames (no slope across unvoiced gaps).
    both = voiced[1:] & voiced[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        local = np.diff(hz_to_semitones(np.where(voiced, f0_hz, 1.0)))[both] / np.diff(times_s)[both]
    out["f0_rising_slope_st_per_s"] = float(local[local > 0].mean()) if (local > 0).any() else NAN
    out["f0_falling_slope_st_per_s"] = float(local[local < 0].mean()) if (local < 0).any() else NAN
    return out


def intensity_features(times_s: np.ndarray, intensity_db: np.ndarray, wave: np.ndarray) -> dict[str, float]:
    """Intensity statistics over frames (dB re Praat's 2e-5 reference) and the RMS level in dBFS."""
    finite = np.isfinite(intensity_db)
    out = _stats("intensity", "db", intensity_db[finite])
    out["intensity_range_p05_p95_db"] = out["intensity_p95_db"] - out["intensity_p05_db"]
    out["intensity_slope_db_per_s"] = linear_slope(times_s[finite], intensity_db[finite])
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    out["rms_dbfs"] = 20.0 * math.log10(rms) if rms > 0 else NAN
    return out


def voicing_features(voiced: np.ndarray, duration_s: float) -> dict[str, float]:
    voiced_runs = _runs(voiced)
    unvoiced_runs = _runs(~voiced)
    return {
        "voiced_fraction": float(voiced.mean()) if len(voiced) else 0.0,
        "voiced_segments_per_s": len(voiced_runs) / duration_s,
        "voiced_segment_mean_s": float(np.mean([b - a for a, b in voiced_runs]) * TIME_STEP_S) if voiced_runs else NAN,
        "unvoiced_segment_mean_s": float(np.mean([b - a for a, b in unvoiced_runs]) * TIME_STEP_S) if unvoiced_runs else NAN,
    }


def syllable_nuclei(intensity_db: np.ndarray, voiced: np.ndarray, threshold_db: float) -> np.ndarray:
    """Frame indices of syllable nuclei: voiced local intensity maxima above ``threshold_db`` that are
    separated from the previous nucleus by a dip of at least 2 dB (the higher of two close peaks wins)."""
    x = intensity_db
    peaks = [i for i in range(1, len(x) - 1) if x[i] >= x[i - 1] and x[i] > x[i + 1] and x[i] > threshold_db]
    kept: list[int] = []
    for p in peaks:
        if kept:
            dip = x[kept[-1] : p + 1].min()
            if min(x[kept[-1]], x[p]) - dip < NUCLEUS_MIN_DIP_DB:
                if x[p] > x[kept[-1]]:
                    kept[-1] = p
                continue
        kept.append(p)
    return np.array([p for p in kept if voiced[p]], dtype=np.int64)


def rate_features(intensity_db: np.ndarray, voiced: np.ndarray, duration_s: float) -> dict[str, float]:
    """Syllable rate and pauses from the intensity contour (``voiced`` sampled on the same frames)."""
    finite = np.isfinite(intensity_db)
    if not finite.any():
        return {k: NAN for k in ("syllable_count", "speech_rate_syll_per_s", "articulation_rate_syll_per_s",
                                 "phonation_time_s", "pause_count", "pause_rate_per_s", "pause_mean_s", "pause_fraction")}
    x = np.where(finite, intensity_db, -np.inf)
    threshold = float(np.percentile(x[finite], 99)) - SILENCE_BELOW_MAX_DB
    nuclei = syllable_nuclei(x, voiced, threshold)
    sounding = x > threshold
    sounding_runs = _runs(sounding)
    # Pauses: silent stretches between the first and the last sounding frame, at least 0.3 s long.
    pauses = []
    for (_a0, a1), (b0, _b1) in zip(sounding_runs[:-1], sounding_runs[1:]):
        if (b0 - a1) * TIME_STEP_S >= PAUSE_MIN_S:
            pauses.append((b0 - a1) * TIME_STEP_S)
    phonation_s = float(sounding.sum()) * TIME_STEP_S
    return {
        "syllable_count": float(len(nuclei)),
        "speech_rate_syll_per_s": len(nuclei) / duration_s,
        "articulation_rate_syll_per_s": len(nuclei) / phonation_s if phonation_s > 0 else NAN,
        "phonation_time_s": phonation_s,
        "pause_count": float(len(pauses)),
        "pause_rate_per_s": len(pauses) / duration_s,
        "pause_mean_s": float(np.mean(pauses)) if pauses else 0.0,
        "pause_fraction": float(sum(pauses)) / duration_s,
    }


def voice_quality_features(sound: parselmouth.Sound, pitch: parselmouth.Pitch) -> dict[str, float]:
    """Jitter, shimmer (Praat's standard 0.0001-0.02 s period range, factor 1.3 / 1.6), HNR, CPPS."""
    out: dict[str, float] = {}
    points = call([sound, pitch], "To PointProcess (cc)")
    jitter_args = (0, 0, 0.0001, 0.02, 1.3)
    for name, command in (("jitter_local", "Get jitter (local)"), ("jitter_local_abs_s", "Get jitter (local, absolute)"),
                          ("jitter_rap", "Get jitter (rap)"), ("jitter_ppq5", "Get jitter (ppq5)"),
                          ("jitter_ddp", "Get jitter (ddp)")):
        out[name] = _praat_number(points, command, *jitter_args)
    for name, command in (("shimmer_local", "Get shimmer (local)"), ("shimmer_local_db", "Get shimmer (local_dB)"),
                          ("shimmer_apq3", "Get shimmer (apq3)"), ("shimmer_apq5", "Get shimmer (apq5)"),
                          ("shimmer_apq11", "Get shimmer (apq11)"), ("shimmer_dda", "Get shimmer (dda)")):
        out[name] = _praat_number([sound, points], command, *jitter_args, 1.6)
    harmonicity = sound.to_harmonicity_cc(time_step=TIME_STEP_S, minimum_pitch=PITCH_FLOOR_HZ)
    hnr = harmonicity.values[0]
    hnr = hnr[hnr > -199]  # Praat marks unvoiced frames with -200 dB
    out["hnr_mean_db"] = float(hnr.mean()) if len(hnr) else NAN
    out["hnr_sd_db"] = float(hnr.std()) if len(hnr) else NAN
    # 10 ms frames like every other analysis here (Hillenbrand used 2 ms: 5x the cost, ~70 % of this stage).
    cepstrogram = call(sound, "To PowerCepstrogram", 60, TIME_STEP_S, 5000, 50)
    out["cpps_db"] = _praat_number(cepstrogram, "Get CPPS", "yes", 0.02, 0.0005, 60, 330, 0.05, "Parabolic",
                                   0.001, 0.05, "Straight", "Robust")
    return out


def formant_features(sound: parselmouth.Sound, voiced_times_s: np.ndarray) -> dict[str, float]:
    """F1-F3 mean/sd and mean bandwidth over voiced frames (Burg, 5 formants, ceiling 5500 Hz)."""
    formant = sound.to_formant_burg(time_step=TIME_STEP_S, max_number_of_formants=5, maximum_formant=5500)
    out: dict[str, float] = {}
    for n in (1, 2, 3):
        values = np.array([formant.get_value_at_time(n, t) for t in voiced_times_s], dtype=np.float64)
        widths = np.array([formant.get_bandwidth_at_time(n, t) for t in voiced_times_s], dtype=np.float64)
        values, widths = values[np.isfinite(values)], widths[np.isfinite(widths)]
        out[f"f{n}_mean_hz"] = float(values.mean()) if len(values) else NAN
        out[f"f{n}_sd_hz"] = float(values.std()) if len(values) else NAN
        out[f"f{n}_bandwidth_hz"] = float(widths.mean()) if len(widths) else NAN
    return out


def alpha_ratio_frames_db(wave: np.ndarray, rate_hz: int, times_s: np.ndarray) -> np.ndarray:
    """Alpha ratio of 20 ms Hamming frames centred on ``times_s``: ``10*log10(E(1-5 kHz) / E(50-1000 Hz))``.

    ``wave``: [S] float mono; ``times_s``: [T] frame centres in seconds. Band energies are sums of the power
    spectrum (zero-padded FFT) over [50, 1000) Hz and [1000, 5000] Hz, as openSMILE's cSpectral sums bins
    (below 1 kHz vs from 1 kHz up to 5 kHz). Returns [T] float64 dB (negative when the low band is
    stronger, as for most voiced speech); NaN for a frame with no energy in a band.
    """
    n = int(round(ALPHA_FRAME_S * rate_hz))
    x = np.pad(np.asarray(wave, dtype=np.float64), (n, n))  # frames at the edges read zeros
    starts = np.round(np.asarray(times_s) * rate_hz).astype(np.int64) - n // 2 + n
    frames = x[np.clip(starts, 0, len(x) - n)[:, None] + np.arange(n)] * np.hamming(n)  # [T, n]
    n_fft = 1 << (n - 1).bit_length()
    power = np.abs(np.fft.rfft(frames, n_fft, axis=1)) ** 2  # [T, n_fft/2+1]
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate_hz)
    low = power[:, (freqs >= ALPHA_LOW_BAND_HZ[0]) & (freqs < ALPHA_LOW_BAND_HZ[1])].sum(axis=1)
    high = power[:, (freqs >= ALPHA_HIGH_BAND_HZ[0]) & (freqs <= ALPHA_HIGH_BAND_HZ[1])].sum(axis=1)
    out = np.full(len(frames), NAN)
    ok = (low > 0) & (high > 0)
    out[ok] = 10.0 * np.log10(high[ok] / low[ok])
    return out


def alpha_ratio_db(wave: np.ndarray, rate_hz: int, voiced_times_s: np.ndarray) -> float:
    """eGeMAPS' ``alphaRatioV`` convention: the mean per-frame alpha ratio (dB) over voiced frames; NaN if none.

    Voicing is Praat's (the pitch track's frames with F0 > 0); openSMILE uses its own SHS pitch tracker and
    smooths the contour over 3 frames first, which moves a mean only at the ends of voiced runs.
    """
    frames = alpha_ratio_frames_db(wave, rate_hz, voiced_times_s)
    frames = frames[np.isfinite(frames)]
    return float(frames.mean()) if len(frames) else NAN


def spectral_features(sound: parselmouth.Sound) -> dict[str, float]:
    """Long-term spectrum shape: LTAS slope, Hammarberg index, spectral moments (alpha ratio: ``alpha_ratio_db``)."""
    ltas = call(sound, "To Ltas", 100)
    spectrum = sound.to_spectrum()
    return {
        "ltas_slope_db": _praat_number(ltas, "Get slope", 0, 1000, 1000, 4000, "energy"),
        "hammarberg_db": _praat_number(ltas, "Get maximum", 0, 2000, "None")
        - _praat_number(ltas, "Get maximum", 2000, 5000, "None"),
        "spectral_centroid_hz": _praat_number(spectrum, "Get centre of gravity", 2),
        "spectral_sd_hz": _praat_number(spectrum, "Get standard deviation", 2),
        "spectral_skewness": _praat_number(spectrum, "Get skewness", 2),
    }


def prosody_features(wave: np.ndarray, rate_hz: int) -> np.ndarray:
    """All ``FEATURE_NAMES`` of one utterance. ``wave``: [S] float32 mono. Returns [F] float64, NaN = undefined."""
    duration_s = len(wave) / rate_hz
    if not np.any(wave):
        return _digital_silence(duration_s)
    sound = parselmouth.Sound(np.asarray(wave, dtype=np.float64), sampling_frequency=rate_hz)
    pitch = sound.to_pitch_ac(time_step=TIME_STEP_S, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    times = pitch.xs()
    f0 = pitch.selected_array["frequency"]
    voiced = f0 > 0
    features: dict[str, float] = {"duration_s": duration_s}
    features.update(f0_features(times, f0))
    features.update(voicing_features(voiced, duration_s))
    intensity_db = _intensity_on(sound, times)
    features.update(intensity_features(times, intensity_db, wave))
    features.update(rate_features(intensity_db, voiced, duration_s))
    features.update(_or_nan(lambda: voice_quality_features(sound, pitch), _VOICE_QUALITY))
    features.update(_or_nan(lambda: formant_features(sound, times[voiced]), _FORMANTS))
    features.update(_or_nan(lambda: spectral_features(sound), _SPECTRAL))
    features["alpha_ratio_db"] = alpha_ratio_db(wave, rate_hz, times[voiced])
    assert set(features) == set(FEATURE_NAMES), set(features) ^ set(FEATURE_NAMES)
    return np.array([features[name] for name in FEATURE_NAMES], dtype=np.float64)


def _digital_silence(duration_s: float) -> np.ndarray:
    """All-zero input: no pitch, level or spectrum is defined; only the timing facts are."""
    features = dict.fromkeys(FEATURE_NAMES, NAN)
    frames = max(1, int(round(duration_s / TIME_STEP_S)))
    features.update(duration_s=duration_s, voiced_fraction=0.0, voiced_segments_per_s=0.0,
                    unvoiced_segment_mean_s=frames * TIME_STEP_S)
    return np.array([features[name] for name in FEATURE_NAMES], dtype=np.float64)


def _intensity_on(sound: parselmouth.Sound, times_s: np.ndarray) -> np.ndarray:
    """Praat intensity (dB) sampled at the pitch frame times; NaN where Praat has no value (silence)."""
    try:
        intensity = sound.to_intensity(minimum_pitch=PITCH_FLOOR_HZ, time_step=TIME_STEP_S, subtract_mean=False)
    except parselmouth.PraatError:
        return np.full(len(times_s), NAN)
    values = np.array([intensity.get_value(t) for t in times_s], dtype=np.float64)
    values[values <= -250] = NAN  # Praat's floor for digital silence
    return values


_VOICE_QUALITY = [n for n in FEATURE_NAMES if n.startswith(("jitter", "shimmer", "hnr", "cpps"))]
_FORMANTS = [n for n in FEATURE_NAMES if n[:2] in ("f1", "f2", "f3")]
_SPECTRAL = ["ltas_slope_db", "hammarberg_db", "spectral_centroid_hz", "spectral_sd_hz", "spectral_skewness"]


def _praat_number(obj, command: str, *args) -> float:  # noqa: ANN001 - parselmouth objects
    """A Praat query; its ``--undefined--`` (and a query Praat refuses on degenerate input) -> NaN."""
    try:
        value = call(obj, command, *args)
    except parselmouth.PraatError:
        return NAN
    return float(value) if value is not None else NAN


def _or_nan(compute, names: list[str]) -> dict[str, float]:  # noqa: ANN001
    """A feature group, or NaN for all of it when Praat cannot analyse this signal (e.g. digital silence)."""
    try:
        return compute()
    except parselmouth.PraatError:
        return {n: NAN for n in names}
