"""``extract`` is resumable, records bad files instead of stopping, and never mixes settings."""

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from cache import CacheReader, integrity
from cache.parts import PartStore
from core.errors import InputError
from pipeline.corpora import read_generic_manifest
from pipeline.extract import ExtractConfig, extract
from pipeline.stages.prosody import ProsodyConfig
from pipeline.stages.runner import StageFailed, StageWork
from pipeline.stages.speech import SpeechConfig
from scripts.kill_campaign import cache_arrays
from tests.synth import speechlike, write_wav


def _corpus(root: Path, n: int = 12, bad: dict[str, bytes] | None = None) -> Path:
    lines = ["utt_id,path,speaker,fold,valence,arousal"]
    for i in range(n):
        write_wav(root / f"u{i:02d}.wav", speechlike(i, 0.4 + 0.1 * (i % 5)))
        lines.append(f"u{i:02d},u{i:02d}.wav,s{i % 4},{i % 4 + 1},{1 + i % 5},{5 - i % 5}")
    for name, content in (bad or {}).items():
        (root / f"{name}.wav").write_bytes(content)
        lines.append(f"{name},{name}.wav,s0,1,3,3")
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    return root / "m.csv"


def _config(model: Path, **speech) -> ExtractConfig:
    return ExtractConfig(speech=SpeechConfig(model=str(model), batch_seconds=1.2, **speech),
                         prosody=ProsodyConfig(workers=1, chunk_size=4))


def test_extract_writes_both_stages_for_every_utterance(tmp_path, tiny_wavlm):
    df, _ = read_generic_manifest(_corpus(tmp_path))
    extract(tmp_path / "c.h5", df, ["speech", "prosody"], _config(tiny_wavlm), device="cpu")
    reader = CacheReader(tmp_path / "c.h5")
    assert reader.stages == ["speech", "prosody"] and reader.ok(["speech", "prosody"]).all()
    pooled = reader.read("speech", "pooled")
    assert pooled.shape == (12, 3, 32) and pooled.dtype == np.float16 and np.isfinite(pooled).all()
    assert reader.provenance("speech")["model"]["padding_policy"] == "pad-and-mask"
    assert len(reader.provenance("speech")["model"]["weights_sha256"]) == 64
    assert reader.read("prosody", "values").shape[0] == 12
    assert not Path(f"{tmp_path / 'c.h5'}.parts").exists()  # work files are gone once published


def test_an_interrupted_stage_resumes_only_missing_units_with_identical_results(tmp_path, tiny_wavlm, monkeypatch):
    import pipeline.stages.speech as speech_stage

    df, _ = read_generic_manifest(_corpus(tmp_path))
    extract(tmp_path / "clean.h5", df, ["speech"], _config(tiny_wavlm), device="cpu")

    real_units = speech_stage.speech_units
    computed: list[int] = []

    def interrupted_after_three(*args):
        for k, (unit, result) in enumerate(real_units(*args)):
            if k == 3:
                raise KeyboardInterrupt
            computed.append(unit)
            yield unit, result

    monkeypatch.setattr(speech_stage, "speech_units", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        extract(tmp_path / "c.h5", df, ["speech"], _config(tiny_wavlm), device="cpu")
    assert "speech" not in CacheReader(tmp_path / "c.h5").stages
    first_run = list(computed)

    def counting(*args):
        for unit, result in real_units(*args):
            computed.append(unit)
            yield unit, result

    monkeypatch.setattr(speech_stage, "speech_units", counting)
    computed.clear()
    extract(tmp_path / "c.h5", df, ["speech"], _config(tiny_wavlm), device="cpu")
    assert not set(computed) & set(first_run) and len(first_run) == 3
    clean, resumed = cache_arrays(tmp_path / "clean.h5"), cache_arrays(tmp_path / "c.h5")
    assert all(clean[k].tobytes() == resumed[k].tobytes() for k in clean)


def test_bad_files_go_to_the_failures_table_and_the_run_goes_on(tmp_path, tiny_wavlm):
    bad = {"empty": b"", "random": os.urandom(2000), "text": b"this is not audio\n" * 20}
    df, _ = read_generic_manifest(_corpus(tmp_path, n=4, bad=bad))
    failures = extract(tmp_path / "c.h5", df, ["speech", "prosody"], _config(tiny_wavlm), device="cpu")
    assert {f.utt_id for f in failures["speech"]} == set(bad) == {f.utt_id for f in failures["prosody"]}
    reader = CacheReader(tmp_path / "c.h5")
    table = reader.failures_table()
    assert table.height == 6 and all("decode" in r or "empty" in r for r in table["reason"])
    ok = reader.ok(["speech"])
    assert ok.sum() == 4 and np.isfinite(reader.read("speech", "pooled")).all()


def test_on_error_fail_stops_at_the_first_bad_file_naming_it(tmp_path, tiny_wavlm):
    df, _ = read_generic_manifest(_corpus(tmp_path, n=3, bad={"broken": b"RIFF1234WAVE"}))
    with pytest.raises(StageFailed, match=r"broken\.wav: cannot decode"):
        extract(tmp_path / "c.h5", df, ["speech"], _config(tiny_wavlm), device="cpu", on_error="fail")


def test_other_settings_are_refused_unless_forced(tmp_path, tiny_wavlm):
    df, _ = read_generic_manifest(_corpus(tmp_path, n=4))
    extract(tmp_path / "c.h5", df, ["speech"], _config(tiny_wavlm), device="cpu")
    assert extract(tmp_path / "c.h5", df, ["speech"], _config(tiny_wavlm), device="cpu") == {}  # nothing to do
    with pytest.raises(InputError, match="extracted with other settings"):
        extract(tmp_path / "c.h5", df, ["speech"], _config(tiny_wavlm, window_s=10.0), device="cpu")
    extract(tmp_path / "c.h5", df, ["speech"], _config(tiny_wavlm, window_s=10.0), device="cpu", force=True)
    assert CacheReader(tmp_path / "c.h5").provenance("speech")["config"]["window_s"] == 10.0


def test_unfinished_parts_from_other_settings_are_refused(tmp_path):
    PartStore(tmp_path / "c.h5", "speech", "settings A")
    with pytest.raises(InputError, match="other settings"):
        PartStore(tmp_path / "c.h5", "speech", "settings B")


def test_batches_group_similar_lengths_within_the_padding_budget():
    from pipeline.stages.batching import plan_length_buckets

    durations = np.array([1.0, 1.1, 5.0, 1.05, 4.8, float("nan"), 40.0, 2.0])
    batches = plan_length_buckets(durations, batch_seconds=10.0, max_batch_size=8, window_s=30.0, max_length_ratio=1.25)
    assert sorted(r for b in batches for r in b) == list(range(8))  # every row exactly once
    assert [6] in batches and [5] in batches  # beyond the window, and unknown length: alone
    for batch in batches:
        lengths = durations[batch]
        if len(batch) > 1:
            assert lengths.max() * len(batch) <= 10.0 and lengths.max() / lengths.min() <= 1.25
    assert [4, 2] in batches or [2, 4] in batches  # 5.0 and 4.8 share a batch: 2 x 5.0 <= 10


def test_frame_sequences_are_stored_ragged_in_row_order(tmp_path, tiny_wavlm):
    df, _ = read_generic_manifest(_corpus(tmp_path, n=6, bad={"empty": b""}))
    config = ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm), batch_seconds=1.2, frame_layers=(1, 2)))
    extract(tmp_path / "c.h5", df, ["speech"], config, device="cpu")
    reader = CacheReader(tmp_path / "c.h5")
    offsets = reader.read("speech", "frame_offsets")
    counts = reader.read("speech", "frame_counts")
    assert offsets[0] == 0 and np.array_equal(np.diff(offsets), counts)
    pooled, ok = reader.read("speech", "pooled"), reader.read("speech", "ok")
    for row in range(len(reader)):
        frames = reader.frames(2, row)
        if not ok[row]:
            assert frames.shape[0] == 0  # the empty file has no frames
            continue
        expected_frames = round(reader.manifest["duration_s"][row] * 50) - 1  # 20 ms hop, 25 ms window
        assert frames.shape == (counts[row], 32) and abs(counts[row] - expected_frames) <= 1
        assert np.abs(frames.astype(np.float32).mean(0) - pooled[row, 2].astype(np.float32)).max() < 5e-3
    with pytest.raises(InputError, match="no frame sequences of layer 0"):
        reader.frames(0, 0)


def test_an_audio_file_that_changed_is_re_extracted_and_nothing_else(tmp_path, tiny_wavlm, monkeypatch):
    import pipeline.stages.speech as speech_stage

    df, _ = read_generic_manifest(_corpus(tmp_path, n=8))
    extract(tmp_path / "c.h5", df, ["speech", "prosody"], _config(tiny_wavlm), device="cpu")
    before = cache_arrays(tmp_path / "c.h5")
    write_wav(tmp_path / "u03.wav", speechlike(99, 0.9))  # new content, new size and time
    df, _ = read_generic_manifest(tmp_path / "m.csv")  # as a user's re-run would: the manifest is re-read
    real_units = speech_stage.speech_units
    computed: list[int] = []

    def counting(*args):
        for unit, result in real_units(*args):
            computed.extend(result.rows.tolist())
            yield unit, result

    monkeypatch.setattr(speech_stage, "speech_units", counting)
    failures = extract(tmp_path / "c.h5", df, ["speech", "prosody"], _config(tiny_wavlm), device="cpu")
    assert set(failures) == {"speech", "prosody"} and computed == [3]
    after = cache_arrays(tmp_path / "c.h5")
    row = 3
    for name in ("speech/pooled", "prosody/values"):
        others = np.delete(np.arange(8), row)
        assert after[name][others].tobytes() == before[name][others].tobytes()
        assert not np.array_equal(after[name][row], before[name][row])
    assert after["speech/file_size"][row] != before["speech/file_size"][row]
    assert CacheReader(tmp_path / "c.h5").manifest["duration_s"][row] == pytest.approx(0.9, abs=1e-3)
    assert extract(tmp_path / "c.h5", df, ["speech", "prosody"], _config(tiny_wavlm), device="cpu") == {}


def test_a_stage_written_in_many_small_blocks_equals_one_written_at_once(tmp_path, tiny_wavlm, monkeypatch):
    df, _ = read_generic_manifest(_corpus(tmp_path, n=12, bad={"empty": b""}))
    config = _config(tiny_wavlm, frame_layers=(1,))
    extract(tmp_path / "whole.h5", df, ["speech", "prosody"], config, device="cpu")
    monkeypatch.setattr(integrity, "_CHUNK_BYTES", 128)  # chunks of 2-4 rows, so one-byte blocks are many windows
    extract(tmp_path / "blocks.h5", df, ["speech", "prosody"], config, device="cpu",
            work=StageWork(write_block_bytes=1))
    whole, blocks = cache_arrays(tmp_path / "whole.h5"), cache_arrays(tmp_path / "blocks.h5")
    assert {"speech/pooled", "speech/frames_layer1", "prosody/values"} <= set(whole)
    assert whole.keys() == blocks.keys()
    assert all(np.array_equal(whole[k], blocks[k], equal_nan=whole[k].dtype.kind == "f") for k in whole)
    with h5py.File(tmp_path / "blocks.h5") as file:
        assert file["speech/pooled"].chunks[0] < 12  # the second cache was really written in several blocks
