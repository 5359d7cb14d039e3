"""The Praat set's alpha ratio follows eGeMAPS: 10*log10(E(1-5 kHz) / E(50-1000 Hz)) per 20 ms frame, mean over
voiced frames. References: the band energies of tones built from known harmonic amplitudes, and openSMILE's own
``alphaRatioV_sma3nz_amean``."""

import math

import numpy as np
import pytest

from pipeline.features.prosody import FEATURE_NAMES, alpha_ratio_db, alpha_ratio_frames_db, prosody_features

ALPHA = FEATURE_NAMES.index("alpha_ratio_db")
F0_HZ = 285.0  # harmonics 855 and 1140 Hz, 4845 and 5130 Hz: >= 130 Hz from the 1 and 5 kHz band edges
# Hamming-window leakage across the band edges, measured per frame at 285 Hz (16 and 22.05 kHz): <= 0.011 dB
# for 1/k and 1/sqrt(k) harmonics, <= 0.088 dB for 1/k^2 (its 1-5 kHz band is 22 dB weaker, so leakage weighs more).
LEAKAGE_DB = 0.1


def tilted_tone(f0_hz: float, tilt: float, rate: int, seconds: float = 1.0) -> tuple[np.ndarray, float]:
    """Harmonics k*f0 up to 5 kHz with amplitudes 1/k**tilt, and their alpha ratio from those amplitudes (dB):
    a sinusoid of amplitude a carries a**2/2 of power, so the band energies are sums of a_k**2."""
    k = np.arange(1, int(5000 // f0_hz) + 1)
    amplitude, freq = 1.0 / k**tilt, k * f0_hz
    t = np.arange(int(seconds * rate)) / rate
    wave = np.sin(2 * np.pi * np.outer(t, freq)) @ amplitude
    low = np.sum(amplitude[(freq >= 50) & (freq < 1000)] ** 2)
    high = np.sum(amplitude[(freq >= 1000) & (freq <= 5000)] ** 2)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32), 10 * math.log10(high / low)


@pytest.mark.parametrize("rate", [16000, 22050])
@pytest.mark.parametrize("tilt", [0.5, 1.0, 2.0])
def test_each_frame_is_the_ratio_of_the_harmonic_energies_above_and_below_1_khz(tilt, rate):
    wave, expected_db = tilted_tone(F0_HZ, tilt, rate)
    frames = alpha_ratio_frames_db(wave, rate, np.arange(0.05, 0.95, 0.01))
    assert np.abs(frames - expected_db).max() < LEAKAGE_DB


def test_a_voice_stronger_below_1_khz_has_a_negative_alpha_ratio():
    """eGeMAPS' sign: high band over low band, so speech-like (falling) spectra are negative, flatter ones higher."""
    steep, flat = (prosody_features(tilted_tone(F0_HZ, tilt, 16000)[0], 16000)[ALPHA] for tilt in (2.0, 0.5))
    assert steep < flat < 0


@pytest.mark.parametrize("tilt", [0.5, 1.0, 2.0])
def test_the_praat_feature_equals_opensmiles_voiced_alpha_ratio_on_a_steady_voice(tilt):
    from pipeline.features.egemaps import EGEMAPS_NAMES, egemaps_functionals

    wave, _ = tilted_tone(F0_HZ, tilt, 16000)
    reference = egemaps_functionals(wave, 16000)[EGEMAPS_NAMES.index("alphaRatioV_sma3nz_amean")]
    # measured <= 0.004 dB apart: same frames and bands; openSMILE also sums 0-50 Hz, empty for this tone
    assert prosody_features(wave, 16000)[ALPHA] == pytest.approx(float(reference), abs=0.02)


def test_unvoiced_frames_do_not_count():
    voiced, expected_db = tilted_tone(F0_HZ, 1.0, 16000, seconds=0.8)
    # white noise at the tone's level: flat spectrum, +6.2 dB (4000 Hz of band over 950 Hz), and no pitch
    noise = (0.1 * np.random.default_rng(0).standard_normal(len(voiced))).astype(np.float32)
    wave = np.concatenate([voiced, noise])
    all_frames = alpha_ratio_frames_db(wave, 16000, np.arange(0.01, len(wave) / 16000, 0.01))
    assert np.nanmean(all_frames) > expected_db + 5  # what a whole-utterance measure would mix in
    # the frames at the tone-noise boundary that Praat still calls voiced move the mean by 0.04 dB (measured)
    assert prosody_features(wave, 16000)[ALPHA] == pytest.approx(expected_db, abs=LEAKAGE_DB)


def test_no_voiced_frames_is_undefined():
    noise = (0.1 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32)
    assert math.isnan(alpha_ratio_db(noise, 16000, np.array([])))
    assert math.isnan(prosody_features(np.zeros(16000, dtype=np.float32), 16000)[ALPHA])


def test_a_frame_without_energy_in_a_band_is_nan_not_inf():
    low_only = np.sin(2 * np.pi * 300.0 * np.arange(16000) / 16000).astype(np.float32)
    silent = np.zeros(16000, dtype=np.float32)
    frames = alpha_ratio_frames_db(np.concatenate([silent, low_only]), 16000, np.array([0.5, 1.5]))
    assert math.isnan(frames[0]) and frames[1] < -40  # a pure 300 Hz tone leaks only sidelobes above 1 kHz
