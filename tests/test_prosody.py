"""Praat features measure what they name, on synthetic signals whose truth is known."""

import math

import numpy as np
import pytest

from pipeline.features.prosody import FEATURE_NAMES, hz_to_semitones, prosody_features, syllable_nuclei
from tests.synth import RATE, glide, harmonic_tone, speechlike


def _features(wave):
    return dict(zip(FEATURE_NAMES, prosody_features(wave, RATE)))


def test_the_feature_set_is_sized_and_named_as_documented():
    assert 60 <= len(FEATURE_NAMES) <= 90 and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


@pytest.mark.parametrize("f0", [90.0, 150.0, 220.0, 380.0])
def test_mean_f0_of_a_harmonic_tone_is_within_one_percent(f0):
    features = _features(harmonic_tone(f0, seconds=1.0))
    assert features["f0_mean_hz"] == pytest.approx(f0, rel=0.01)
    assert features["f0_mean_st"] == pytest.approx(12 * math.log2(f0 / 27.5), abs=0.17)  # 1 % = 0.17 st
    assert features["voiced_fraction"] > 0.9


@pytest.mark.parametrize("start,end", [(120.0, 240.0), (300.0, 150.0)])
def test_an_f0_glide_has_the_slope_of_its_semitone_ramp(start, end):
    seconds = 1.5
    expected = 12 * math.log2(end / start) / seconds  # st/s
    features = _features(glide(start, end, seconds))
    assert np.sign(features["f0_slope_st_per_s"]) == np.sign(expected)
    assert features["f0_slope_st_per_s"] == pytest.approx(expected, rel=0.05)
    key = "f0_rising_slope_st_per_s" if expected > 0 else "f0_falling_slope_st_per_s"
    assert features[key] == pytest.approx(expected, rel=0.15)


def test_an_amplitude_step_shows_as_its_intensity_difference_in_db():
    quiet, loud = harmonic_tone(200.0, 1.0, amplitude=0.05), harmonic_tone(200.0, 1.0, amplitude=0.4)
    expected_db = 20 * math.log10(0.4 / 0.05)
    assert _features(loud)["intensity_mean_db"] - _features(quiet)["intensity_mean_db"] == pytest.approx(expected_db, abs=0.5)
    step = _features(np.concatenate([quiet, loud]))
    assert step["intensity_p95_db"] - step["intensity_p05_db"] == pytest.approx(expected_db, abs=1.0)
    assert step["intensity_slope_db_per_s"] > 0


def test_silence_is_unvoiced_and_undefined_not_a_crash():
    features = _features(np.zeros(RATE, dtype=np.float32))
    assert features["voiced_fraction"] == 0.0 and features["duration_s"] == 1.0
    assert math.isnan(features["f0_mean_st"]) and math.isnan(features["jitter_local"])
    assert math.isnan(features["cpps_db"]) and math.isnan(features["intensity_mean_db"])


def test_noise_without_pitch_leaves_f0_undefined_but_level_defined():
    noise = (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    features = _features(noise)
    assert features["voiced_fraction"] < 0.1
    assert math.isfinite(features["intensity_mean_db"]) and math.isfinite(features["spectral_centroid_hz"])


def test_syllable_nuclei_are_voiced_peaks_separated_by_dips():
    intensity = np.array([40, 60, 70, 60, 50, 69, 68, 69.5, 50, 72, 40], dtype=float)
    voiced = np.ones_like(intensity, dtype=bool)
    voiced[9] = False
    # peaks at 2, 5, 7, 9: 5 and 7 are one nucleus (dip 1 dB); 9 is unvoiced
    assert syllable_nuclei(intensity, voiced, threshold_db=45).tolist() == [2, 7]


def test_speech_rate_counts_the_syllables_of_a_synthetic_utterance():
    syllables = [harmonic_tone(180.0, 0.15, amplitude=0.3) for _ in range(6)]
    gap = np.zeros(int(0.1 * RATE), dtype=np.float32)
    wave = np.concatenate([x for s in syllables for x in (s, gap)])
    features = _features(wave)
    assert features["syllable_count"] == 6
    assert features["speech_rate_syll_per_s"] == pytest.approx(6 / (len(wave) / RATE))


def test_a_long_pause_is_counted():
    talk = speechlike(1, 0.8)
    wave = np.concatenate([talk, np.zeros(int(0.6 * RATE), dtype=np.float32), talk])
    features = _features(wave)
    assert features["pause_count"] >= 1 and features["pause_mean_s"] >= 0.5


def test_semitones_are_relative_to_27_5_hz():
    assert hz_to_semitones(np.array([27.5, 55.0, 110.0])).tolist() == pytest.approx([0.0, 12.0, 24.0])


def test_the_worker_pool_returns_every_files_features_in_row_order(tmp_path):
    """Two workers (one task per file) give what one process gives, row by row, with a bad file in place."""
    import soundfile

    from pipeline.stages.feature_table import feature_table_units
    from pipeline.stages.prosody import PRAAT, ProsodyConfig

    paths = []
    for i, f0 in enumerate([100.0, 140.0, 180.0, 220.0, 260.0, 300.0, 340.0]):
        paths.append(str(tmp_path / f"u{i}.wav"))
        soundfile.write(paths[-1], harmonic_tone(f0, seconds=0.5), RATE)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    paths.insert(3, str(tmp_path / "bad.wav"))
    ids = [f"u{i}" for i in range(len(paths))]
    units = [(0, [0, 1, 2]), (1, [3, 4, 5]), (2, [6, 7])]
    one = dict(feature_table_units(PRAAT, ProsodyConfig(workers=1), paths, ids, units))
    pooled = dict(feature_table_units(PRAAT, ProsodyConfig(workers=2), paths, ids, units))
    f0_mean = FEATURE_NAMES.index("f0_mean_hz")
    for unit, rows in units:
        assert np.array_equal(pooled[unit].rows, rows)
        assert np.array_equal(pooled[unit].arrays["values"], one[unit].arrays["values"], equal_nan=True)
    assert [f.utt_id for f in pooled[1].failures] == ["u3"] and not pooled[1].arrays["ok"][0]
    means = np.concatenate([pooled[u].arrays["values"][:, f0_mean] for u, _ in units])
    assert np.isnan(means[3]) and np.all(np.diff(np.delete(means, 3)) > 0)  # rising pitch: order kept


def test_the_demo_corpus_formant_filter_is_the_two_pole_recurrence():
    from pipeline.corpora.synthetic import RATE, resonator

    x = np.random.default_rng(3).standard_normal(800)
    freq, bandwidth = 700.0, 150.0
    r = np.exp(-np.pi * bandwidth / RATE)
    a1, a2 = 2 * r * np.cos(2 * np.pi * freq / RATE), -r * r
    y, y1, y2 = np.zeros_like(x), 0.0, 0.0
    for i, v in enumerate(x):  # the recurrence, sample by sample
        y[i] = v + a1 * y1 + a2 * y2
        y2, y1 = y1, y[i]
    assert np.abs(resonator(x, freq, bandwidth) - y).max() < 1e-9
