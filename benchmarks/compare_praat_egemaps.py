"""How far the Praat set (``praat-v2``) and eGeMAPS v02 measure the same thing: correlations on EmoDB.

    .venv/bin/python benchmarks/compare_praat_egemaps.py [--files 535]

Every EmoDB file is decoded and resampled to 16 kHz as the stages do; ``prosody_features`` and
``egemaps_functionals`` are computed on the same waveform. For each Praat feature with an eGeMAPS
counterpart, Pearson r, Spearman rho and the mean difference over the files where both are finite, after
bringing the two onto the same scale (the transformation column; Spearman is unchanged by a monotonic one).
Printed as a markdown table. Also the ``praat-v1`` alpha ratio (10*log10(E(50-1000 Hz)/E(1-5 kHz)) of the whole utterance's
spectrum, recomputed here) against eGeMAPS', to show what the ``praat-v2`` convention changed.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import parselmouth
from parselmouth.praat import call
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.features.audio import load_audio  # noqa: E402
from pipeline.features.egemaps import EGEMAPS_NAMES, egemaps_functionals  # noqa: E402
from pipeline.features.prosody import FEATURE_NAMES, hz_to_semitones, prosody_features  # noqa: E402

EMODB_WAV = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "emodb" / "wav"  # ../shared beside the repo
RATE_HZ = 16000
LOUDNESS_EXPONENT = 0.33  # eGeMAPS loudness = sum of the auditory spectrum, power ** 0.33 (cPlp compression)

Columns = dict[str, np.ndarray]  # feature name -> [N] values over the files


@dataclass(frozen=True)
class Pair:
    praat: str  # Praat feature (or a derived quantity) with its unit
    egemaps: str  # eGeMAPS feature with its unit
    transformation: str
    ours: Callable[[Columns], np.ndarray]
    theirs: Callable[[Columns], np.ndarray]


def _p(name: str) -> Callable[[Columns], np.ndarray]:
    return lambda c: c[name]


def _loudness_db(functional: str) -> Callable[[Columns], np.ndarray]:
    # undo the 0.33 power-law compression, then dB: 10*log10(L ** (1/0.33))
    return lambda c: 10.0 / LOUDNESS_EXPONENT * np.log10(c[f"loudness_sma3_{functional}"])


F0 = "F0semitoneFrom27.5Hz_sma3nz"
PAIRS = [
    Pair("f0_mean_st (st re 27.5 Hz)", f"{F0}_amean (st re 27.5 Hz)", "none", _p("f0_mean_st"), _p(f"{F0}_amean")),
    Pair("f0_mean_hz (Hz)", f"{F0}_amean (st)", "ours -> 12*log2(f/27.5) st (mean of Hz, then st)",
         lambda c: hz_to_semitones(c["f0_mean_hz"]), _p(f"{F0}_amean")),
    Pair("f0_p20_st (st)", f"{F0}_percentile20.0 (st)", "none", _p("f0_p20_st"), _p(f"{F0}_percentile20.0")),
    Pair("f0_p50_st (st)", f"{F0}_percentile50.0 (st)", "none", _p("f0_p50_st"), _p(f"{F0}_percentile50.0")),
    Pair("f0_p80_st (st)", f"{F0}_percentile80.0 (st)", "none", _p("f0_p80_st"), _p(f"{F0}_percentile80.0")),
    Pair("f0_range_p20_p80_st (st)", f"{F0}_pctlrange0-2 (st)", "none", _p("f0_range_p20_p80_st"),
         _p(f"{F0}_pctlrange0-2")),
    Pair("f0_sd_st (st)", f"{F0}_stddevNorm (sd/mean)", "ours -> f0_sd_st / f0_mean_st",
         lambda c: c["f0_sd_st"] / c["f0_mean_st"], _p(f"{F0}_stddevNorm")),
    Pair("f0_rising_slope_st_per_s (st/s)", f"{F0}_meanRisingSlope (st/s)",
         "none (ours: frame to frame; theirs: valley to peak lines)", _p("f0_rising_slope_st_per_s"),
         _p(f"{F0}_meanRisingSlope")),
    Pair("f0_falling_slope_st_per_s (st/s, < 0)", f"{F0}_meanFallingSlope (st/s, > 0)", "ours -> -ours",
         lambda c: -c["f0_falling_slope_st_per_s"], _p(f"{F0}_meanFallingSlope")),
    Pair("intensity_mean_db (dB, Praat)", "loudness_sma3_amean (sone-like)", "theirs -> 10/0.33*log10(L) dB",
         _p("intensity_mean_db"), _loudness_db("amean")),
    *(Pair(f"intensity_p{p}_db (dB)", f"loudness_sma3_percentile{p}.0 (sone-like)", "theirs -> 10/0.33*log10(L) dB",
           _p(f"intensity_p{p}_db"), _loudness_db(f"percentile{p}.0")) for p in (20, 50, 80)),
    Pair("intensity_sd_db (dB)", "loudness_sma3_stddevNorm (sd/mean)", "none (sd of dB vs CV of loudness)",
         _p("intensity_sd_db"), _p("loudness_sma3_stddevNorm")),
    Pair("rms_dbfs (dBFS)", "equivalentSoundLevel_dBp (dB re full scale)", "none", _p("rms_dbfs"),
         _p("equivalentSoundLevel_dBp")),
    Pair("speech_rate_syll_per_s (1/s)", "loudnessPeaksPerSec (1/s)", "none (nuclei vs all loudness peaks)",
         _p("speech_rate_syll_per_s"), _p("loudnessPeaksPerSec")),
    Pair("voiced_segments_per_s (1/s)", "VoicedSegmentsPerSec (1/s)", "none", _p("voiced_segments_per_s"),
         _p("VoicedSegmentsPerSec")),
    Pair("voiced_segment_mean_s (s)", "MeanVoicedSegmentLengthSec (s)", "none", _p("voiced_segment_mean_s"),
         _p("MeanVoicedSegmentLengthSec")),
    Pair("unvoiced_segment_mean_s (s)", "MeanUnvoicedSegmentLength (s)", "none", _p("unvoiced_segment_mean_s"),
         _p("MeanUnvoicedSegmentLength")),
    Pair("jitter_local (fraction)", "jitterLocal_sma3nz_amean (fraction)", "none", _p("jitter_local"),
         _p("jitterLocal_sma3nz_amean")),
    Pair("shimmer_local_db (dB)", "shimmerLocaldB_sma3nz_amean (dB)", "none", _p("shimmer_local_db"),
         _p("shimmerLocaldB_sma3nz_amean")),
    Pair("hnr_mean_db (dB)", "HNRdBACF_sma3nz_amean (dB)", "none", _p("hnr_mean_db"), _p("HNRdBACF_sma3nz_amean")),
    *(Pair(f"f{n}_mean_hz (Hz)", f"F{n}frequency_sma3nz_amean (Hz)", "none", _p(f"f{n}_mean_hz"),
           _p(f"F{n}frequency_sma3nz_amean")) for n in (1, 2, 3)),
    *(Pair(f"f{n}_bandwidth_hz (Hz)", f"F{n}bandwidth_sma3nz_amean (Hz)", "none", _p(f"f{n}_bandwidth_hz"),
           _p(f"F{n}bandwidth_sma3nz_amean")) for n in (1, 2, 3)),
    Pair("alpha_ratio_db (dB, praat-v2)", "alphaRatioV_sma3nz_amean (dB)", "none", _p("alpha_ratio_db"),
         _p("alphaRatioV_sma3nz_amean")),
    Pair("alpha ratio, praat-v1 convention (dB)", "alphaRatioV_sma3nz_amean (dB)", "none (v1 recomputed here)",
         _p("alpha_ratio_v1_db"), _p("alphaRatioV_sma3nz_amean")),
    Pair("hammarberg_db (dB, LTAS)", "hammarbergIndexV_sma3nz_amean (dB)", "none", _p("hammarberg_db"),
         _p("hammarbergIndexV_sma3nz_amean")),
]


def alpha_ratio_v1_db(wave: np.ndarray, rate_hz: int) -> float:
    """``praat-v1``'s alpha ratio: 10*log10(E(50-1000 Hz) / E(1-5 kHz)) of the whole utterance's spectrum."""
    spectrum = parselmouth.Sound(np.asarray(wave, dtype=np.float64), sampling_frequency=rate_hz).to_spectrum()
    low, high = (call(spectrum, "Get band energy", a, b) for a, b in ((50, 1000), (1000, 5000)))
    return 10 * math.log10(low / high) if low > 0 and high > 0 else math.nan


def agreement(x: np.ndarray, y: np.ndarray) -> tuple[int, float, float, float]:
    """(pairs used, Pearson r, Spearman rho, mean of x - y) over the files where both values are finite."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return int(ok.sum()), math.nan, math.nan, math.nan
    x, y = x[ok], y[ok]
    return len(x), float(np.corrcoef(x, y)[0, 1]), float(spearmanr(x, y).statistic), float(np.mean(x - y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=0, help="first N files (default: all)")
    parser.add_argument("--wav-dir", type=Path, default=EMODB_WAV)
    args = parser.parse_args()
    files = sorted(args.wav_dir.glob("*.wav"))
    files = files[: args.files] if args.files else files

    praat, egemaps, v1 = [], [], []
    for f in files:
        wave = load_audio(str(f), RATE_HZ)
        praat.append(prosody_features(wave, RATE_HZ))
        egemaps.append(egemaps_functionals(wave, RATE_HZ))
        v1.append(alpha_ratio_v1_db(wave, RATE_HZ))
    columns: Columns = dict(zip(FEATURE_NAMES, np.array(praat, dtype=np.float64).T))
    columns.update(zip(EGEMAPS_NAMES, np.array(egemaps, dtype=np.float64).T))
    columns["alpha_ratio_v1_db"] = np.array(v1)

    print(f"{len(files)} EmoDB files at {RATE_HZ} Hz\n")
    print("| Praat (unit) | eGeMAPS (unit) | transformation | n | Pearson r | Spearman rho | mean ours - theirs |")
    print("|---|---|---|---|---|---|---|")
    for pair in PAIRS:
        n, r, rho, bias = agreement(pair.ours(columns), pair.theirs(columns))
        print(f"| {pair.praat} | {pair.egemaps} | {pair.transformation} | {n} | {r:.3f} | {rho:.3f} | {bias:.3g} |")


if __name__ == "__main__":
    main()
