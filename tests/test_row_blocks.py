"""A stage's units are written into the cache in windows of rows that fit a memory budget, and give exactly the
arrays a naive row-by-row assembly gives, whatever the window size."""

import numpy as np
import polars as pl
import pytest

from cache import CacheReader, Failure, add_stage, create_cache, integrity
from cache.parts import PartStore, UnitResult
from cache.writer import RowBlocks
from pipeline.corpora.manifest import normalise_manifest
from pipeline.stages.row_blocks import RAGGED_PREFIX, KeptRows, plan_windows, stage_row_blocks, window_budget

N = 97


def _manifest(n: int = N) -> pl.DataFrame:
    return normalise_manifest(pl.DataFrame({
        "utt_id": [f"u{i:03d}" for i in range(n)], "path": [f"/a/u{i}.wav" for i in range(n)], "duration_s": 1.0,
        "sample_rate": 16000, "speaker": [f"s{i % 4}" for i in range(n)], "dialog_id": [f"d{i // 10:02d}" for i in range(n)],
        "start_s": [float(i) for i in range(n)], "fold": [i // 10 % 4 + 1 for i in range(n)], "valence": 3.0,
        "arousal": 3.0}))  # rows stay in this order (sorted by dialogue, then start)


def _scattered_units(parts: PartStore, rows: np.ndarray, seed: int = 0, ragged: bool = True) -> dict:
    """Commit ``rows`` as units of 1-9 rows in shuffled order (as length buckets scatter them); return the values
    each row got, by a naive loop: ``{name: {row: value}}``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(rows)
    truth: dict[str, dict[int, np.ndarray]] = {"pooled": {}, "ok": {}, "frames": {}}
    start, unit = 0, 0
    while start < len(order):
        unit_rows = order[start : start + int(rng.integers(1, 10))]
        start += len(unit_rows)
        pooled = rng.standard_normal((len(unit_rows), 3, 5)).astype(np.float16)
        ok = rng.random(len(unit_rows)) > 0.2
        arrays = {"pooled": pooled, "ok": ok}
        if ragged:
            counts = rng.integers(0, 6, len(unit_rows))
            frames = [rng.standard_normal((c, 5)).astype(np.float16) for c in counts]
            arrays["frame_counts"] = counts.astype(np.int64)
            arrays[f"{RAGGED_PREFIX}frames_layer2"] = np.concatenate(frames)
        for k, row in enumerate(unit_rows):
            truth["pooled"][int(row)], truth["ok"][int(row)] = pooled[k], ok[k]
            if ragged:
                truth["frames"][int(row)] = frames[k]
        failures = [Failure(f"u{r:03d}", "speech", f"/a/u{r}.wav", "bad") for r, good in zip(unit_rows, ok) if not good]
        parts.commit(unit, UnitResult(rows=unit_rows.astype(np.int64), arrays=arrays, failures=failures))
        unit += 1
    truth["units"] = unit
    return truth


@pytest.mark.parametrize(("budget", "windows"), [(1, [10]), (1500, range(2, 10)), (10**9, [1])])
def test_units_written_in_windows_equal_a_naive_row_by_row_assembly(tmp_path, monkeypatch, budget, windows):
    monkeypatch.setattr(integrity, "_CHUNK_BYTES", 100)  # chunks of 10 rows: windows of a few chunks at this size
    cache = tmp_path / "c.h5"
    create_cache(cache, _manifest(), {})
    parts = PartStore(cache, "speech", "fingerprint")
    truth = _scattered_units(parts, np.arange(N))
    blocks, small, failures = stage_row_blocks(parts, truth["units"], N, budget)
    writes = list(blocks.blocks)
    assert len([w for w in writes if w[0] == "pooled"]) in windows  # one chunk each, a few chunks each, all in one
    add_stage(cache, "speech", small, {}, failures, blocks=RowBlocks(blocks.layouts, writes))
    reader = CacheReader(cache)
    assert np.array_equal(reader.read("speech", "pooled"), np.stack([truth["pooled"][r] for r in range(N)]))
    assert np.array_equal(reader.read("speech", "ok"), np.array([truth["ok"][r] for r in range(N)]))
    assert np.array_equal(reader.read("speech", "frame_counts"), [len(truth["frames"][r]) for r in range(N)])
    for row in (0, 13, N - 1):
        assert np.array_equal(reader.frames(2, row), truth["frames"][row])
    assert sorted(f.utt_id for f in reader.failures) == sorted(f"u{r:03d}" for r in range(N) if not truth["ok"][r])


def test_an_update_keeps_the_rows_no_unit_holds_from_the_cache(tmp_path):
    cache = tmp_path / "c.h5"
    create_cache(cache, _manifest(), {})
    before = np.random.default_rng(5).standard_normal((N, 3, 5)).astype(np.float16)
    add_stage(cache, "speech", {"pooled": before, "ok": np.ones(N, bool)}, {},
              [Failure("u004", "speech", "/a/u4.wav", "kept"), Failure("u010", "speech", "/a/u10.wav", "redone")])
    updated = np.array([3, 10, 50, 96])
    parts = PartStore(cache, "speech.update", "fingerprint")
    truth = _scattered_units(parts, updated, ragged=False)
    blocks, small, failures = stage_row_blocks(parts, truth["units"], N, 1, KeptRows.of(str(cache), "speech", updated))
    add_stage(cache, "speech", small, {}, failures, blocks=blocks, in_place=False)
    expected = before.copy()
    for row in updated:
        expected[row] = truth["pooled"][int(row)]
    assert np.array_equal(CacheReader(cache).read("speech", "pooled"), expected)
    assert "u004" in [f.utt_id for f in failures] and ("u010" in [f.utt_id for f in failures]) == (not truth["ok"][10])


def test_windows_cover_every_row_once_on_chunk_boundaries_within_the_budget():
    windows = plan_windows(10_000, row_bytes=100, budget=250_000, align=512)
    assert windows[0][0] == 0 and windows[-1][1] == 10_000
    assert all(a == b for (_, a), (b, _) in zip(windows[:-1], windows[1:]))
    assert all(start % 512 == 0 and (stop - start) * 100 <= 250_000 for start, stop in windows)
    assert plan_windows(10, row_bytes=100, budget=1, align=4) == [(0, 4), (4, 8), (8, 10)]  # at least one chunk


def test_the_window_budget_follows_the_memory_available():
    assert window_budget(available=1 << 30) == (1 << 30) // 8
    assert window_budget(available=64 << 30) == 512 << 20 and window_budget(available=0) == 16 << 20
