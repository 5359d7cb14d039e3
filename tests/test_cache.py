"""The HDF5 cache round-trips exactly, splits folds without leakage, and explains a damaged file."""

import h5py
import numpy as np
import polars as pl
import pytest

from cache import CacheReader, Failure, add_stage, create_cache
from core.errors import InputError
from pipeline.corpora.manifest import normalise_manifest


def _manifest(n_speakers: int = 10, per_speaker: int = 6) -> pl.DataFrame:
    rows = []
    for s in range(n_speakers):
        for k in range(per_speaker):
            rows.append(dict(utt_id=f"s{s}_{k}", path=f"/a/s{s}_{k}.wav", duration_s=1.0 + k, sample_rate=16000,
                             speaker=f"spk{s}", dialog_id=f"d{s // 2}", start_s=float(k), fold=s // 2 + 1,
                             valence=1.0 + k / 2, arousal=5.0 - k / 2, dominance=None if k == 0 else 3.0,
                             emotion="neu" if k else None))
    return normalise_manifest(pl.DataFrame(rows))


@pytest.fixture
def cache_path(tmp_path):
    path = tmp_path / "c.h5"
    create_cache(path, _manifest(), {"note": "test"})
    return path


def test_arrays_and_manifest_round_trip_bit_for_bit(cache_path):
    rng = np.random.default_rng(0)
    n = len(CacheReader(cache_path))
    pooled = rng.standard_normal((n, 3, 8)).astype(np.float16)
    values = rng.standard_normal((n, 5)).astype(np.float32)
    values[3, 2] = np.nan
    add_stage(cache_path, "speech", {"pooled": pooled, "ok": np.ones(n, bool)}, {"model": "m"}, [])
    add_stage(cache_path, "prosody", {"values": values, "defined": np.isfinite(values), "ok": np.ones(n, bool),
                                      "names": np.array(list("abcde"), dtype=object)}, {"v": 1}, [])
    reader = CacheReader(cache_path)
    assert reader.read("speech", "pooled").tobytes() == pooled.tobytes()
    assert reader.read("prosody", "values").tobytes() == values.tobytes()
    assert list(reader.read("prosody", "names")) == list("abcde")
    assert reader.manifest.equals(_manifest())
    assert reader.provenance("speech") == {"model": "m"} and reader.config == {"note": "test"}
    assert reader.stages == ["speech", "prosody"]


def test_one_layer_is_read_as_a_hyperslab(cache_path):
    n = len(CacheReader(cache_path))
    pooled = np.arange(n * 3 * 4, dtype=np.float16).reshape(n, 3, 4)
    add_stage(cache_path, "speech", {"pooled": pooled, "ok": np.ones(n, bool)}, {}, [])
    assert np.array_equal(CacheReader(cache_path).read("speech", "pooled", np.s_[:, 1, :]), pooled[:, 1, :])


def test_replacing_a_stage_keeps_other_stages_and_their_failures(cache_path):
    n = len(CacheReader(cache_path))
    fail_p = Failure("s0_0", "prosody", "/a/s0_0.wav", "empty audio")
    add_stage(cache_path, "prosody", {"ok": np.ones(n, bool)}, {}, [fail_p])
    add_stage(cache_path, "speech", {"ok": np.ones(n, bool)}, {"run": 1}, [Failure("s1_0", "speech", "/x", "bad")])
    add_stage(cache_path, "speech", {"ok": np.zeros(n, bool)}, {"run": 2}, [])
    reader = CacheReader(cache_path)
    assert reader.failures == [fail_p]
    assert reader.provenance("speech") == {"run": 2} and not reader.read("speech", "ok").any()
    assert not list(cache_path.parent.glob(".c.h5.tmp-*"))


def test_a_missing_stage_is_a_clear_error(cache_path):
    with pytest.raises(InputError, match="no 'speech' stage"):
        CacheReader(cache_path).read("speech", "pooled")


def test_a_damaged_file_is_explained_not_a_crash(tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(InputError, match="not a readable feature cache"):
        CacheReader(path)


def test_the_speech_block_is_chunked_along_utterances_and_per_hidden_state(cache_path):
    n = len(CacheReader(cache_path))
    add_stage(cache_path, "speech", {"pooled": np.zeros((n, 25, 64), np.float16)}, {}, [])
    with h5py.File(cache_path) as f:
        assert f["speech/pooled"].chunks == (n, 1, 64)  # one layer is read without the other 24
        assert f["manifest/duration_s"].chunks == (n,)
