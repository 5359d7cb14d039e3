"""eGeMAPS v02 functionals measure what they name, on synthetic signals whose truth is known.

The reference for the values themselves is openSMILE's command-line tool (benchmarks/check_egemaps_reference.py:
bit-identical on EmoDB); these tests pin the conventions the cache relies on.
"""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.features.egemaps import EGEMAPS_NAMES, EGEMAPS_SET_VERSION, egemaps_functionals
from tests.synth import harmonic_tone

F0_MEAN = EGEMAPS_NAMES.index("F0semitoneFrom27.5Hz_sma3nz_amean")
LOUDNESS_MEAN = EGEMAPS_NAMES.index("loudness_sma3_amean")
LEQ = EGEMAPS_NAMES.index("equivalentSoundLevel_dBp")
VOICED_PER_S = EGEMAPS_NAMES.index("VoicedSegmentsPerSec")
# Measured on 1 s harmonic tones (100-300 Hz, 16 and 22.05 kHz): openSMILE's F0 (subharmonic summation on a
# spline-interpolated octave-scale spectrum) reads 0.018-0.034 st (0.1-0.2 %) high.
F0_TOLERANCE_ST = 0.05
# openSMILE's longest analysis frame (the 60 ms pitch frame): shorter input yields no frame at all.
MIN_FRAME_S = 0.060


def _semitones(f0_hz: float) -> float:
    return 12 * math.log2(f0_hz / 27.5)


def test_there_are_88_named_float32_values_in_opensmiles_order():
    import opensmile

    library = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                              feature_level=opensmile.FeatureLevel.Functionals)
    assert EGEMAPS_NAMES == tuple(library.feature_names) and len(set(EGEMAPS_NAMES)) == 88
    values = egemaps_functionals(harmonic_tone(150.0, 1.0), 16000)
    assert values.shape == (88,) and values.dtype == np.float32 and np.isfinite(values).all()


def test_the_set_version_names_the_opensmile_release_that_computed_it():
    from importlib.metadata import version

    assert EGEMAPS_SET_VERSION == f"egemaps-v02-opensmile-{version('opensmile')}"


@pytest.mark.parametrize("rate", [16000, 22050])
@pytest.mark.parametrize("f0", [100.0, 200.0])
def test_f0_mean_is_in_semitones_from_27_5_hz(rate, f0):
    values = egemaps_functionals(harmonic_tone(f0, 1.0, rate=rate), rate)
    assert values[F0_MEAN] == pytest.approx(_semitones(f0), abs=F0_TOLERANCE_ST)


@pytest.mark.parametrize("rate", [16000, 22050])
def test_an_octave_up_is_12_semitones_up(rate):
    low, high = (egemaps_functionals(harmonic_tone(f0, 1.0, rate=rate), rate)[F0_MEAN] for f0 in (100.0, 200.0))
    assert high - low == pytest.approx(12.0, abs=F0_TOLERANCE_ST)  # the bias is the same at both pitches


def test_four_times_the_amplitude_is_louder_by_the_loudness_power_law():
    quiet = egemaps_functionals(harmonic_tone(200.0, 1.0, amplitude=0.05), 16000)
    loud = egemaps_functionals(harmonic_tone(200.0, 1.0, amplitude=0.2), 16000)
    # eGeMAPS loudness sums an auditory spectrum compressed as power ** 0.33 (its cPlp compression = 0.33):
    # 4x amplitude = 16x power -> 16 ** 0.33 = 2.497x loudness
    assert loud[LOUDNESS_MEAN] / quiet[LOUDNESS_MEAN] == pytest.approx(16**0.33, rel=1e-3)
    # the equivalent sound level is the mean energy in dB: 20*log10(4) = 12.04 dB more
    assert loud[LEQ] - quiet[LEQ] == pytest.approx(20 * math.log10(4), abs=0.01)


def test_the_same_tone_reads_the_same_at_16_and_22_05_khz():
    at_16k = egemaps_functionals(harmonic_tone(150.0, 1.0, rate=16000), 16000)
    at_22k = egemaps_functionals(harmonic_tone(150.0, 1.0, rate=22050), 22050)
    assert at_22k[F0_MEAN] == pytest.approx(at_16k[F0_MEAN], abs=F0_TOLERANCE_ST)
    assert at_22k[LEQ] == pytest.approx(at_16k[LEQ], abs=0.1)


def test_silence_gives_opensmiles_zeros_for_voiced_functionals_not_nan():
    """openSMILE's documented behaviour, kept so values equal its CLI: a mean over no voiced frames is 0.0."""
    values = egemaps_functionals(np.zeros(16000, dtype=np.float32), 16000)
    assert np.isfinite(values).all()
    assert values[F0_MEAN] == 0.0 and values[VOICED_PER_S] == 0.0


@pytest.mark.parametrize("rate", [16000, 22050])
def test_input_shorter_than_one_60_ms_frame_is_all_nan(rate):
    frame = int(round(MIN_FRAME_S * rate))
    assert np.isnan(egemaps_functionals(np.zeros(frame - 1, dtype=np.float32), rate)).all()
    assert np.isfinite(egemaps_functionals(np.zeros(frame, dtype=np.float32), rate)).all()


def test_full_scale_samples_do_not_wrap_around():
    # openSMILE's wrapper casts sample * 32768 to int16 unclipped: +1.0 would become -32768
    square = np.sign(np.sin(2 * np.pi * 150.0 * np.arange(16000) / 16000)).astype(np.float32)
    clipped = np.clip(square, -1.0, 32767 / 32768)
    assert np.array_equal(egemaps_functionals(square, 16000), egemaps_functionals(clipped, 16000))


def test_importing_the_module_does_not_import_opensmile():
    code = "import sys, pipeline.features.egemaps as m; m.EGEMAPS_NAMES; print('opensmile' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


def test_a_spawned_worker_computes_what_this_process_computes():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    wave = harmonic_tone(180.0, 0.5)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pooled = pool.submit(egemaps_functionals, wave, 16000).result()
    assert np.array_equal(pooled, egemaps_functionals(wave, 16000))
