"""A manifest that changed after extraction is never ignored: labels are stored in place, changes the stored
dialogue states depend on are refused (or, when asked, stored with the states recomputed), and nothing touches a
cache or its parts before its lock is held."""

import json
import shutil
import socket
import subprocess
import sys

import polars as pl
import pytest

from cache import CacheReader
from cache.paths import CachePaths
from core.errors import InputError
from pipeline.corpora import read_generic_manifest
from pipeline.corpora.synthetic import write_synthetic_corpus
from pipeline.extract import ExtractConfig, extract
from pipeline.stages.prosody import ProsodyConfig
from pipeline.stages.speech import SpeechConfig
from pipeline.stages.state import StateConfig


def _config(model, kind: str = "ema-features") -> ExtractConfig:
    return ExtractConfig(speech=SpeechConfig(model=str(model)), prosody=ProsodyConfig(workers=1),
                         state=StateConfig(kind=kind))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, tiny_wavlm):
    root = tmp_path_factory.mktemp("changed")
    csv = write_synthetic_corpus(root / "corpus", dialogs_per_fold=1, turns=4)
    manifest, _ = read_generic_manifest(csv)
    extract(root / "c.h5", manifest, ["speech", "prosody", "state"], _config(tiny_wavlm), device="cpu")
    return root / "c.h5", manifest


def _copy(extracted, tmp_path):
    cache, manifest = extracted
    shutil.copyfile(cache, tmp_path / "c.h5")
    return tmp_path / "c.h5", manifest


def test_a_changed_label_is_stored_in_place_and_nothing_is_recomputed(extracted, tmp_path, tiny_wavlm):
    cache, manifest = _copy(extracted, tmp_path)
    before = {s: CacheReader(cache).provenance(s)["created_utc"] for s in ("speech", "prosody", "state")}
    first = manifest["utt_id"][0]
    changed = manifest.with_columns(pl.when(pl.col("utt_id") == first).then(9.5).otherwise(pl.col("valence"))
                                    .alias("valence"))
    assert extract(cache, changed, ["speech", "prosody", "state"], _config(tiny_wavlm), device="cpu") == {}
    reader = CacheReader(cache)
    assert reader.manifest.filter(pl.col("utt_id") == first)["valence"][0] == 9.5
    assert {s: reader.provenance(s)["created_utc"] for s in before} == before  # no stage was rewritten


def test_a_changed_fold_is_refused_naming_the_columns_and_what_depends_on_them(extracted, tmp_path, tiny_wavlm):
    cache, manifest = _copy(extracted, tmp_path)
    moved = manifest.with_columns(pl.when(pl.col("fold") == 1).then(6).otherwise(pl.col("fold")).alias("fold"))
    with pytest.raises(InputError, match=r"changed since extraction in column\(s\) fold; the stored dialogue states "
                                         r"depend on fold.*--update-manifest"):
        extract(cache, moved, ["speech", "prosody", "state"], _config(tiny_wavlm), device="cpu")
    assert sorted(set(CacheReader(cache).manifest["fold"].to_list())) == [1, 2, 3, 4, 5]  # untouched


def test_update_manifest_stores_a_new_dialogue_order_and_recomputes_only_the_states(extracted, tmp_path, tiny_wavlm):
    cache, manifest = _copy(extracted, tmp_path)
    speech_before = CacheReader(cache).provenance("speech")["created_utc"]
    reordered = manifest.with_columns((-pl.col("start_s")).alias("start_s"))  # every dialogue backwards
    failures = extract(cache, reordered, ["speech", "prosody", "state"], _config(tiny_wavlm), device="cpu",
                       update_manifest=True)
    assert list(failures) == ["state"]
    reader = CacheReader(cache)
    assert reader.provenance("speech")["created_utc"] == speech_before
    stored = reader.manifest.join(reordered.select("utt_id", "start_s"), on="utt_id")
    assert (stored["start_s"] == stored["start_s_right"]).all()


def test_a_changed_label_invalidates_a_cross_fitted_state(extracted, tmp_path, tiny_wavlm):
    cache, manifest = _copy(extracted, tmp_path)
    extract(cache, manifest, ["state"], _config(tiny_wavlm, "ema-predictions"), device="cpu")
    relabelled = manifest.with_columns((6 - pl.col("arousal")).alias("arousal"))
    with pytest.raises(InputError, match="depend on arousal"):
        extract(cache, relabelled, ["state"], _config(tiny_wavlm, "ema-predictions"), device="cpu")


def test_a_refused_second_writer_leaves_the_first_writers_parts_alone(extracted, tmp_path, tiny_wavlm):
    """Writer A recomputes the states (it holds the lock and has committed a unit); writer B runs the same command
    and is refused: it must not have deleted A's parts on its way to the lock."""
    cache, manifest = _copy(extracted, tmp_path)
    parts = CachePaths(cache).stage_parts("state")
    parts.mkdir(parents=True)
    (parts / "unit-00000.npz").write_bytes(b"committed by A")
    writer_a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (cache.parent / f"{cache.name}.lock").write_text(json.dumps(
            {"pid": writer_a.pid, "host": socket.gethostname(), "since": "2026-12-02T00:00:00+00:00"}))
        with pytest.raises(InputError, match="another extract is writing this cache"):
            extract(cache, manifest, ["state"], _config(tiny_wavlm, "ema-predictions"), device="cpu")
        assert (parts / "unit-00000.npz").read_bytes() == b"committed by A"
    finally:
        writer_a.kill()
