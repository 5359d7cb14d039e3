"""Where long recordings are cut: fixed windows cover the whole file, energy segments follow the speech between
pauses of known position, and the file-level reading (blocks, seeks) equals reading the whole file."""

import numpy as np
import pytest
import soundfile

from pipeline.corpora.segments import SegmentConfig, file_energy_db, plan_file_segments, write_segments
from pipeline.features.audio import load_audio
from pipeline.features.segments import energy_segments, fixed_segments, frame_energy_db, speech_regions
from tests.synth import RATE, harmonic_tone, speechlike, write_wav


def test_fixed_windows_step_by_the_hop_and_a_last_window_ends_at_the_end_of_the_file():
    assert fixed_segments(10.0, 4.0, 2.0).tolist() == [[0, 4], [2, 6], [4, 8], [6, 10]]
    assert fixed_segments(11.0, 4.0, 4.0).tolist() == [[0, 4], [4, 8], [7, 11]]


def test_a_file_no_longer_than_a_segment_is_one_segment():
    assert fixed_segments(3.2, 4.0, 2.0).tolist() == [[0, 3.2]]


def test_frame_energy_equals_a_naive_loop_over_frames():
    wave = np.random.default_rng(0).normal(0, 0.1, RATE // 2).astype(np.float32)
    frame, hop = 400, 160
    naive = [10 * np.log10(np.mean(wave[s : s + frame].astype(np.float64) ** 2))
             for s in range(0, len(wave) - frame + 1, hop)]
    assert np.allclose(frame_energy_db(wave, RATE), naive)


def _bursts(pauses_s=(0.0, 1.0, 0.8, 1.5), speech_s=(1.2, 2.0, 0.7)) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Speech-like bursts separated by near-silent pauses (noise 50 dB down); returns the wave and the bursts'
    true bounds in seconds."""
    rng = np.random.default_rng(1)
    pieces, bounds, t = [], [], 0.0
    for k, pause in enumerate(pauses_s):
        pieces.append(rng.normal(0, 1e-3, int(pause * RATE)))
        t += pause
        if k < len(speech_s):
            burst = speechlike(k, speech_s[k])
            pieces.append(burst)
            bounds.append((t, t + len(burst) / RATE))
            t += len(burst) / RATE
    return np.concatenate(pieces).astype(np.float32), bounds


def test_speech_regions_find_bursts_between_pauses_within_fifty_milliseconds_plus_the_hangover():
    wave, truth = _bursts()
    energy = frame_energy_db(wave, RATE)
    found = energy_segments(energy, len(wave) / RATE, segment_s=10.0, hop_s=5.0)
    assert len(found) == len(truth)
    expected = np.clip(np.array(truth) + [-0.1, 0.1], 0, len(wave) / RATE)
    assert np.abs(found - expected).max() < 0.05


def test_a_pause_shorter_than_the_minimum_does_not_split_a_region():
    energy = np.full(300, -20.0)
    energy[100:120] = -80.0  # a 0.2 s dip
    assert speech_regions(energy, -50.0, min_pause_s=0.3).shape == (1, 2)
    assert speech_regions(energy, -50.0, min_pause_s=0.1).shape == (2, 2)


def test_a_long_speech_region_is_cut_into_windows_inside_it():
    energy = np.full(1000, -80.0)
    energy[100:900] = -20.0  # speech from 1.0 s to ~9.0 s
    bounds = energy_segments(energy, 10.0, segment_s=4.0, hop_s=2.0)
    assert len(bounds) == 4 and np.all(bounds[:, 1] - bounds[:, 0] == pytest.approx(4.0))
    assert bounds[0, 0] == pytest.approx(0.9) and bounds[-1, 1] == pytest.approx(9.115)  # 0.1 s hangover


def test_energies_read_in_blocks_equal_those_of_the_whole_file(tmp_path):
    wave, _ = _bursts()
    path = write_wav(tmp_path / "long.wav", wave, subtype="FLOAT")
    blocked, duration, hop_s, frame_s = file_energy_db(str(path), block_s=0.37)  # blocks that split frames
    assert (hop_s, frame_s) == (0.01, 0.025)
    assert duration == pytest.approx(len(wave) / RATE)
    assert np.allclose(blocked, frame_energy_db(wave, RATE), atol=1e-9)


def test_a_written_segment_holds_that_stretch_of_the_recording_mixed_to_mono(tmp_path):
    left, right = harmonic_tone(150, 3.0), harmonic_tone(220, 3.0, amplitude=0.1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), RATE, subtype="FLOAT")
    out = [tmp_path / "a.wav", tmp_path / "b.wav"]
    write_segments(str(path), np.array([[0.5, 1.5], [2.0, 3.0]]), out)
    whole = load_audio(str(path), RATE)
    assert np.array_equal(load_audio(str(out[0]), RATE), whole[RATE // 2 : 3 * RATE // 2])
    assert np.array_equal(load_audio(str(out[1]), RATE), whole[2 * RATE :])


def test_the_energy_split_plans_segments_from_the_file(tmp_path):
    wave, truth = _bursts()
    path = write_wav(tmp_path / "long.wav", wave, subtype="FLOAT")
    planned = plan_file_segments(str(path), SegmentConfig(4.0, 2.0, "energy"))
    assert len(planned) == len(truth)


@pytest.mark.parametrize("options, message", [((0.1, 0.1, "fixed"), "--segment"), ((4.0, 5.0, "fixed"), "--hop"),
                                              ((4.0, 2.0, "vad"), "--split")])
def test_impossible_segment_settings_are_refused_naming_the_option(options, message):
    from core.errors import InputError

    with pytest.raises(InputError, match=message):
        SegmentConfig(*options)


def test_the_hangover_never_reaches_past_the_middle_of_a_pause():
    energy = np.full(200, -20.0)
    energy[40:80] = -80.0  # a 0.4 s pause, narrower than twice the hangover
    regions = speech_regions(energy, -50.0, pad_s=0.3)
    assert len(regions) == 2 and regions[0, 1] <= regions[1, 0]


def test_silence_and_steady_noise_hold_no_speech_segments():
    noise = np.random.default_rng(3).normal(0, 0.01, RATE * 3).astype(np.float32)
    for wave in (np.zeros(RATE * 3, np.float32), noise):
        assert energy_segments(frame_energy_db(wave, RATE), 3.0, 4.0, 2.0).shape == (0, 2)


def test_energy_segments_do_not_drift_at_a_rate_whose_hop_is_not_a_whole_number_of_samples(tmp_path):
    """22.05 kHz: a 10 ms hop is 220.5 samples; frames every 220 samples must be timed as 220 samples."""
    rate = 22050
    wave = np.random.default_rng(4).normal(0, 1e-3, rate * 60).astype(np.float32)
    wave[55 * rate : 58 * rate] += harmonic_tone(200, 3.0, rate=rate)  # 60 s x 0.23 % would be 0.13 s late
    path = tmp_path / "long22k.wav"
    soundfile.write(path, wave, rate, subtype="FLOAT")
    (start, end), = plan_file_segments(str(path), SegmentConfig(4.0, 2.0, "energy"))
    assert abs(start - 54.9) < 0.03 and abs(end - 58.1) < 0.03  # the tone, with the 0.1 s hangover


def test_an_unreadable_or_non_finite_file_is_an_audio_error_naming_the_reason(tmp_path):
    from pipeline.features.audio import AudioError

    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    nan = np.zeros(RATE, np.float32)
    nan[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", nan, RATE, subtype="FLOAT")
    for split in ("fixed", "energy"):
        with pytest.raises(AudioError, match="cannot decode"):
            plan_file_segments(str(tmp_path / "broken.wav"), SegmentConfig(4.0, 2.0, split))
    with pytest.raises(AudioError, match="NaN or inf"):
        plan_file_segments(str(tmp_path / "nan.wav"), SegmentConfig(4.0, 2.0, "energy"))
