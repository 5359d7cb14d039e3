"""A row stage's committed units -> its datasets in the cache, written in blocks of rows in manifest order.

Units are batches of rows in any order (length buckets scatter a unit's rows over the manifest). The cache's rows
are written in windows of consecutive rows that fit a memory budget; each window reads just its rows from the
units' files (``PartStore.read_rows``: a unit's arrays are stored uncompressed, so a row is one read). Memory: one
window, whatever the number of rows; reading: each row once, however many windows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cache.integrity import rows_per_chunk
from cache.parts import PartStore, StoredArray
from cache.reader import CacheReader
from cache.schema import Failure
from cache.writer import RowBlocks
from core.machine import available_memory_bytes

log = logging.getLogger(__name__)

RAGGED_PREFIX = "ragged_"  # unit arrays of variable-length sequences: concatenated, lengths in ``frame_counts``
FRAME_COUNTS = "frame_counts"
FRAME_OFFSETS = "frame_offsets"
WINDOW_CAP_BYTES = 512 << 20
WINDOW_FLOOR_BYTES = 16 << 20
WINDOW_SHARE = 1 / 8  # of the memory available: the window is a buffer beside the model and the workers


def window_budget(available: int | None = None) -> int:
    """Bytes one window of rows may take: an eighth of the memory available (``core.machine``), between 16 and
    512 MiB (beyond that, larger windows save passes over the parts but no measurable time)."""
    available = available_memory_bytes() if available is None else available
    return int(min(WINDOW_CAP_BYTES, max(WINDOW_FLOOR_BYTES, WINDOW_SHARE * available)))


Layout = tuple[tuple[int, ...], np.dtype]  # shape of one row (or one frame), dtype


@dataclass(frozen=True)
class KeptRows:
    """An update of some rows: the others keep the values the cache holds for ``stage``."""

    reader: CacheReader
    stage: str
    updated: np.ndarray  # [N] bool: rows the units recompute

    @classmethod
    def of(cls, cache_path: str, stage: str, update_rows: np.ndarray) -> KeptRows:
        reader = CacheReader(cache_path)
        updated = np.zeros(len(reader), bool)
        updated[np.asarray(update_rows, dtype=np.int64)] = True
        return cls(reader, stage, updated)

    def layouts(self, constants: set[str]) -> dict[str, Layout]:
        """The stage's per-row datasets in the cache (not its constants, such as feature names)."""
        shapes = self.reader.dataset_shapes(self.stage)
        return {name: (shape[1:], self.reader.read(self.stage, name, np.s_[:0]).dtype) for name, shape in shapes.items()
                if shape[:1] == (len(self.reader),) and name not in constants}

    def failures(self) -> list[Failure]:
        """The cache's failures of this stage for rows not recomputed."""
        updated = set(self.reader.manifest["utt_id"].to_numpy()[self.updated].tolist())
        return [f for f in self.reader.failures if f.stage == self.stage and f.utt_id not in updated]


@dataclass(frozen=True)
class UnitIndex:
    """Where each row's values are, and the stage's datasets, from one light pass over the units."""

    unit_of_row: np.ndarray  # [N] int64: the unit holding each row, -1 for a row an update keeps
    position_in_unit: np.ndarray  # [N] int64: the row's index in its unit's arrays
    stored: list[dict[str, StoredArray]]  # per unit: where its arrays lie in its file
    frame_starts: list[np.ndarray | None]  # per unit: [rows + 1] where each row's frames start (ragged only)
    layouts: dict[str, Layout]  # per-row arrays
    ragged: dict[str, Layout]  # variable-length sequences (name without RAGGED_PREFIX), per frame
    offsets: np.ndarray | None  # [N + 1] int64: row i's frames are offsets[i]:offsets[i + 1] (ragged only)
    failures: list[Failure]


def index_units(parts: PartStore, count: int, num_rows: int, base: KeptRows | None = None) -> UnitIndex:
    """Read what every unit holds (rows, failures, array headers, frame counts), not its values."""
    unit_of_row = np.full(num_rows, -1, np.int64)
    position_in_unit = np.zeros(num_rows, np.int64)
    stored: list[dict[str, StoredArray]] = []
    frame_starts: list[np.ndarray | None] = []
    layouts: dict[str, Layout] = {}
    ragged: dict[str, Layout] = {}
    frame_counts = np.zeros(num_rows, np.int64)
    failures: list[Failure] = [] if base is None else base.failures()
    for unit in range(count):
        result = parts.load(unit, names={FRAME_COUNTS})
        if (unit_of_row[result.rows] >= 0).any():
            raise RuntimeError(f"unit {unit} holds rows another unit holds")  # a bug, not bad input
        unit_of_row[result.rows] = unit
        position_in_unit[result.rows] = np.arange(len(result.rows))
        failures.extend(result.failures)
        counts = result.arrays.get(FRAME_COUNTS)
        if counts is not None:
            frame_counts[result.rows] = counts
        frame_starts.append(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64) if counts is not None else None)
        stored.append(parts.stored_arrays(unit))
        for name, array in stored[-1].items():
            into, key = (ragged, name[len(RAGGED_PREFIX):]) if name.startswith(RAGGED_PREFIX) else (layouts, name)
            if into.setdefault(key, (array.shape[1:], array.dtype)) != (array.shape[1:], array.dtype):
                raise RuntimeError(f"unit {unit}: {name} is {array.shape} {array.dtype}, other units' {into[key]}")
    expected = base.updated if base is not None else np.ones(num_rows, bool)
    if not np.array_equal(unit_of_row >= 0, expected):
        raise RuntimeError(f"stage parts cover {(unit_of_row >= 0).sum()} of {expected.sum()} rows")  # a bug
    offsets = np.concatenate([[0], np.cumsum(frame_counts)]).astype(np.int64) if ragged else None
    return UnitIndex(unit_of_row, position_in_unit, stored, frame_starts, layouts, ragged, offsets, failures)


def plan_windows(num_rows: int, row_bytes: int, budget: int, align: int,
                 offsets: np.ndarray | None = None, frame_bytes: int = 0) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` windows covering ``num_rows`` rows, each within ``budget`` bytes where it can be
    (a window is at least ``align`` rows, the chunk height of the largest dataset, so no chunk is written twice)."""
    rows = np.arange(num_rows + 1, dtype=np.int64)
    cumulative = rows * row_bytes + (offsets * frame_bytes if offsets is not None else 0)
    bounds = np.unique(np.concatenate([np.arange(0, num_rows, max(1, align)), [num_rows]]))
    windows, start = [], 0
    while start < num_rows:
        fits = bounds[(bounds > start) & (cumulative[bounds] - cumulative[start] <= budget)]
        stop = int(fits[-1]) if len(fits) else int(bounds[bounds > start][0])
        windows.append((start, stop))
        start = stop
    return windows


def stage_row_blocks(parts: PartStore, count: int, num_rows: int, budget: int, base: KeptRows | None = None,
                     constants: set[str] = frozenset()) -> tuple[RowBlocks, dict[str, np.ndarray], list[Failure]]:
    """The stage's datasets from its ``count`` committed units: per-row and ragged ones as ``RowBlocks`` written in
    windows of at most ``budget`` bytes, small whole arrays (``frame_offsets``), and the stage's failures. With
    ``base`` the rows no unit holds keep the cache's values."""
    index = index_units(parts, count, num_rows, base)
    layouts = dict(index.layouts)
    if base is not None:
        layouts = {**base.layouts(constants), **layouts}
    ragged, offsets = index.ragged, index.offsets
    row_bytes = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in layouts.values())
    frame_bytes = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in ragged.values())
    largest = max(layouts.items(), key=lambda item: int(np.prod(item[1][0])) * item[1][1].itemsize, default=None)
    align = rows_per_chunk((num_rows, *largest[1][0]), largest[1][1]) if largest and num_rows else 1
    windows = plan_windows(num_rows, row_bytes, budget, align, offsets, frame_bytes)
    if len(windows) > 1:
        log.info("%s: writing %d rows in %d blocks of up to %.0f MiB (the parts are read once per block)",
                 parts.dir.name, num_rows, len(windows), budget / 2**20)
    full = {name: ((num_rows, *shape), dtype) for name, (shape, dtype) in layouts.items()}
    frames = int(offsets[-1]) if offsets is not None else 0
    full.update({name: ((frames, *shape), dtype) for name, (shape, dtype) in ragged.items()})

    def blocks() -> Iterator[tuple[str, int, np.ndarray]]:
        for start, stop in windows:
            yield from _window(parts, index, layouts, base, start, stop)

    small = {FRAME_OFFSETS: offsets} if offsets is not None else {}
    return RowBlocks(full, blocks()), small, index.failures


def _window(parts: PartStore, index: UnitIndex, layouts: dict[str, Layout], base: KeptRows | None,
            start: int, stop: int) -> Iterator[tuple[str, int, np.ndarray]]:
    """The writes of rows ``[start, stop)``: gathered from the units holding them (over the cache's rows, for an
    update)."""
    rows_here = {name: np.zeros((stop - start, *shape), dtype) for name, (shape, dtype) in layouts.items()}
    if base is not None:
        for name in rows_here:
            rows_here[name][...] = base.reader.read(base.stage, name, np.s_[start:stop])
    offsets = index.offsets
    frames_here = {name: np.zeros((int(offsets[stop] - offsets[start]), *shape), dtype)
                   for name, (shape, dtype) in index.ragged.items()}
    rows = np.arange(start, stop)
    held = index.unit_of_row[start:stop] >= 0
    rows, units = rows[held], index.unit_of_row[start:stop][held]
    order = np.argsort(units, kind="stable")
    for group in np.split(order, np.flatnonzero(np.diff(units[order])) + 1) if len(order) else []:
        unit, here = int(units[group[0]]), rows[group]  # the rows of this window that this unit holds
        positions = index.position_in_unit[here]
        sort = np.argsort(positions)
        here, positions = here[sort], positions[sort]
        stored = index.stored[unit]
        for name in layouts:
            if name in stored:
                rows_here[name][here - start] = parts.read_rows(unit, stored[name], positions)
        for name, out in frames_here.items():
            starts = index.frame_starts[unit]
            frames = np.concatenate([np.arange(starts[p], starts[p + 1]) for p in positions])
            values = parts.read_rows(unit, stored[f"{RAGGED_PREFIX}{name}"], frames.astype(np.int64))
            at = 0
            for row, p in zip(here, positions):
                length = int(starts[p + 1] - starts[p])
                first = int(offsets[row] - offsets[start])
                out[first : first + length] = values[at : at + length]
                at += length
    for name, values in rows_here.items():
        yield name, start, values
    for name, values in frames_here.items():
        yield name, int(offsets[start]), values
