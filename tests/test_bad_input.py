"""The bad-input matrix: every case is either processed correctly or skipped with a reason, never a crash,
and no NaN or inf reaches a stored speech array or a head input. Table in docs/reliability.md."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from cache import CacheReader
from heads.training.features import FeatureConfig, load_corpus_arrays, prepare_fold, split_rows
from pipeline.corpora import read_generic_manifest
from pipeline.extract import ExtractConfig, extract
from pipeline.stages.prosody import ProsodyConfig
from pipeline.stages.speech import SpeechConfig
from pipeline.stages.state import StateConfig
from tests.synth import harmonic_tone, speechlike

SKIP = "skipped"
OK = "processed"


def _wav(path: Path, wave: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> None:
    soundfile.write(str(path), wave, rate, subtype=subtype)


def _nan_wav(path: Path, value: float) -> None:
    wave = speechlike(1, 0.5)
    wave[100:200] = value
    _wav(path, wave, subtype="FLOAT")


def _truncated(path: Path) -> None:
    _wav(path, speechlike(2, 0.5))
    path.write_bytes(path.read_bytes()[:30])


# name -> (how to make the file, expected outcome, reason fragment or None)
CASES = {
    "empty": (lambda p: p.write_bytes(b""), SKIP, "empty file"),
    "truncated_header": (_truncated, SKIP, "cannot decode"),
    "random_bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4000)), SKIP, "cannot decode"),
    "text_file": (lambda p: p.write_text("utt_id,path\nthis is not audio\n" * 50), SKIP, "cannot decode"),
    "nan_samples": (lambda p: _nan_wav(p, np.nan), SKIP, "NaN or inf"),
    "inf_samples": (lambda p: _nan_wav(p, np.inf), SKIP, "NaN or inf"),
    "ten_ms": (lambda p: _wav(p, speechlike(3, 0.01)), SKIP, "too short"),
    "silence": (lambda p: _wav(p, np.zeros(16000, np.float32)), OK, None),
    "clipped_square": (lambda p: _wav(p, np.clip(4 * np.sign(np.sin(np.arange(16000) * 2 * np.pi * 150 / 16000)), -1, 1)), OK, None),
    "rate_8k": (lambda p: _wav(p, harmonic_tone(150.0, 1.0, rate=8000), rate=8000), OK, None),
    "stereo_48k": (lambda p: _wav(p, np.stack([harmonic_tone(150.0, 1.0, rate=48000)] * 2, 1), rate=48000), OK, None),
    "unsigned_8bit": (lambda p: _wav(p, speechlike(4, 0.8), subtype="PCM_U8"), OK, None),
    "pcm_24bit": (lambda p: _wav(p, speechlike(5, 0.8), subtype="PCM_24"), OK, None),
    "float32": (lambda p: _wav(p, speechlike(6, 0.8), subtype="FLOAT"), OK, None),
    "fifty_ms": (lambda p: _wav(p, speechlike(7, 0.05)), OK, None),
    "two_minutes": (lambda p: _wav(p, np.tile(speechlike(8, 2.0), 60)), OK, None),  # > 30 s: windowed
    "deleted_after_manifest": (lambda p: _wav(p, speechlike(9, 0.5)), SKIP, "file not found"),
}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, tiny_wavlm):
    root = tmp_path_factory.mktemp("bad_input")
    lines = ["utt_id,path,speaker,fold,valence,arousal"]
    for i in range(10):  # good utterances so every fold can train a head
        _wav(root / f"good{i}.wav", speechlike(100 + i, 0.6))
        lines.append(f"good{i},good{i}.wav,s{i % 5},{i % 5 + 1},{1 + i % 5},{5 - i % 5}")
    for k, (name, (make, _, _)) in enumerate(CASES.items()):
        make(root / f"{name}.wav")
        lines.append(f"{name},{name}.wav,s{k % 5},{k % 5 + 1},3,3")
    lines.append("label_out_of_range,good0.wav,s0,1,9.5,3")  # scales differ between corpora: kept
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    df, problems = read_generic_manifest(root / "m.csv")
    assert problems == []
    (root / "deleted_after_manifest.wav").unlink()
    config = ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm), window_s=30.0), prosody=ProsodyConfig(workers=2),
                           state=StateConfig(epochs=2))
    extract(root / "c.h5", df, ["speech", "prosody", "state"], config, device="cpu")
    return CacheReader(root / "c.h5")


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_input_has_its_expected_outcome(extracted, name):
    _, outcome, reason = CASES[name]
    row = extracted.manifest["utt_id"].to_list().index(name)
    failures = {(f.utt_id, f.stage): f.reason for f in extracted.failures}
    for stage in ("speech", "prosody"):
        if outcome == SKIP:
            assert reason in failures[(name, stage)], failures.get((name, stage))
            assert not extracted.read(stage, "ok")[row]
        else:
            assert (name, stage) not in failures and extracted.read(stage, "ok")[row]


def test_processed_audio_is_measured_right(extracted):
    names = extracted.manifest["utt_id"].to_list()
    values = dict(zip(extracted.read("prosody", "names"), extracted.read("prosody", "values").T))
    for name, seconds in (("rate_8k", 1.0), ("stereo_48k", 1.0), ("two_minutes", 120.0), ("fifty_ms", 0.05)):
        assert values["duration_s"][names.index(name)] == pytest.approx(seconds, rel=0.01)
    for name in ("rate_8k", "stereo_48k"):
        assert values["f0_mean_hz"][names.index(name)] == pytest.approx(150.0, rel=0.01)
    assert values["voiced_fraction"][names.index("silence")] == 0.0


def test_no_nan_or_inf_reaches_a_stored_speech_or_state_array_or_a_head_input(extracted):
    assert np.isfinite(extracted.read("speech", "pooled")).all()
    assert all(np.isfinite(extracted.read("state", f"fold_{k}")).all() for k in range(1, 6))
    arrays = load_corpus_arrays(extracted)
    for fold in range(1, 6):
        tensors = prepare_fold(arrays, split_rows(arrays, fold, val_fraction=0.2), FeatureConfig())
        for split in (tensors.train, tensors.validation, tensors.test):
            for block in (split.speech, split.prosody, split.targets):
                assert block.isfinite().all()


def test_an_out_of_range_label_is_kept(extracted):
    row = extracted.manifest.filter(extracted.manifest["utt_id"] == "label_out_of_range").row(0, named=True)
    assert row["valence"] == 9.5
