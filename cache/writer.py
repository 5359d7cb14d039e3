"""Write the HDF5 cache so that a kill at any moment leaves either the old file or the new one.

A new cache is written to a temporary file beside its final name, flushed to disk and moved there with an atomic
``os.replace``. A stage is added in place under an undo journal (``cache.journal``): the file grows by the new
stage only, and a kill leaves the old file or the old one plus the whole stage. When that would leave much of the
file unused (a large group replaced), the cache is instead copied without it to a temporary file that replaces it.
A stage's rows can be written block by block (``RowBlocks``), so memory does not grow with the number of rows.
Work in progress lives in ``cache.parts`` until a stage is complete.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import polars as pl

from cache.integrity import (
    create_numeric,
    read_text,
    seal_members,
    set_text_attr,
    write_json_attr,
    write_numeric,
    write_text,
)
from cache.journal import LocksUnsupported, appending, reading
from cache.paths import temp_for
from cache.schema import (
    FAILURE_FIELDS,
    FAILURES_GROUP,
    MANIFEST_GROUP,
    NULL_SUFFIX,
    PROVENANCE_ATTR,
    SCHEMA_VERSION,
    Failure,
)
from core.provenance import utc_now

log = logging.getLogger(__name__)


def write_rows(group: h5py.Group, name: str, array: np.ndarray) -> None:
    """Store ``array`` (rows first) with its checksums (``cache.integrity``); strings as a text dataset."""
    if array.dtype.kind in "UO":
        write_text(group, name, array.tolist())
    else:
        write_numeric(group, name, array)


def write_manifest_group(group: h5py.Group, manifest: pl.DataFrame) -> None:
    """One dataset per column (nulls as '' / NaN / 0 in it) and, for a column with nulls, a
    ``<column>.null`` [N] bool mask saying where: a sentinel value could be a real one."""
    for name, dtype in manifest.schema.items():
        column = manifest[name]
        if dtype == pl.String:
            data = column.fill_null("").to_numpy().astype(object)
        elif dtype.is_float():
            data = column.cast(pl.Float64).fill_null(float("nan")).to_numpy()
        else:
            data = column.fill_null(0).to_numpy().astype(np.int64)
        write_rows(group, name, data)
        set_text_attr(group[name], "polars_dtype", str(dtype))
        if column.null_count():
            write_rows(group, f"{name}{NULL_SUFFIX}", column.is_null().to_numpy())


def write_failures(file: h5py.File, failures: list[Failure]) -> None:
    group = file.create_group(FAILURES_GROUP)
    for field in FAILURE_FIELDS:
        write_text(group, field, [getattr(f, field) for f in failures])


def read_failures(file: h5py.File) -> list[Failure]:
    if FAILURES_GROUP not in file:
        return []
    group = file[FAILURES_GROUP]
    columns = [read_text(group, field, f"/{FAILURES_GROUP}/{field}") for field in FAILURE_FIELDS]
    return [Failure(*row) for row in zip(*columns)]


def _replace_atomically(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Deliver Ctrl-C after the block, not inside it: an atomic write then completes or fails whole, and the
    interrupt is not swallowed inside HDF5's C code (it was: runs ended with exit 0). Main thread only."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def create_cache(path: str | Path, manifest: pl.DataFrame, config: dict) -> None:
    """Create a cache holding only the manifest and the extract ``config`` (JSON-serialisable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_for(path)
    with interrupts_deferred():
        try:
            with h5py.File(tmp, "w", track_order=True) as file:  # stages listed in the order written
                file.attrs["schema_version"] = SCHEMA_VERSION
                set_text_attr(file, "created_utc", utc_now())
                write_json_attr(file, "config", config)
                write_manifest_group(file.create_group(MANIFEST_GROUP), manifest)
                write_failures(file, [])
                for group in (file[MANIFEST_GROUP], file[FAILURES_GROUP], file):
                    seal_members(group)
            _replace_atomically(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class RowBlocks:
    """Datasets of a stage written block by block, so that memory holds one block whatever the number of rows.

    ``layouts`` gives each dataset's full shape and dtype; ``blocks`` yields ``(name, first_row, rows)`` writes in
    any order that together fill every row (blocks aligned to the dataset's chunks never rewrite a chunk)."""

    layouts: dict[str, tuple[tuple[int, ...], np.dtype]]
    blocks: Iterable[tuple[str, int, np.ndarray]]


# Adding in place leaves the space of the groups it replaces unused (HDF5 does not reuse it in a later session);
# beyond this share of the file, the cache is rewritten instead, which compacts it.
UNUSED_SHARE_BEFORE_REWRITE = 0.25
UNUSED_BYTES_ALWAYS_FINE = 64 << 20


def stored_bytes(group: h5py.Group) -> int:
    """Bytes of dataset storage under ``group`` (what its chunks take in the file)."""
    total = 0

    def visit(name: str, item: h5py.HLObject) -> None:
        nonlocal total
        if isinstance(item, h5py.Dataset):
            total += item.id.get_storage_size()

    group.visititems(visit)
    return total


def adds_in_place(path: str | Path, replaced: set[str]) -> bool:
    """Whether writing the groups ``replaced`` (new or existing) appends to the cache instead of rewriting it: when
    the space the file leaves unused afterwards (what earlier additions left, plus the replaced groups) stays small."""
    path = Path(path)
    with reading(path), h5py.File(path, "r") as file:
        replaced_bytes = sum(stored_bytes(file[name]) for name in replaced if name in file)
        unused = os.fstat(file.id.get_vfd_handle()).st_size - stored_bytes(file)  # metadata counts as unused: small
    return replaced_bytes + unused <= max(UNUSED_BYTES_ALWAYS_FINE, UNUSED_SHARE_BEFORE_REWRITE *
                                          os.path.getsize(path))


def _publish(path: Path, replaced: set[str], write_new: Callable[[h5py.File], list[str]], in_place: bool) -> None:
    """Replace the groups in ``replaced`` by what ``write_new(file)`` writes (it returns the names of the groups it
    wrote, to be sealed), atomically: in place under an undo journal (``cache.journal``: the file grows by the new
    groups only), or, when that would leave much of the file unused or ``in_place`` is False, by copying the rest to a
    temporary file moved over the cache (the file needs its size again while that runs)."""
    with interrupts_deferred():
        if in_place and adds_in_place(path, replaced):
            log.info("cache: adding %s to %s in place", ", ".join(sorted(replaced)), path)
            try:
                with appending(path) as file:
                    for name in replaced & set(file):
                        del file[name]
                    for name in write_new(file):
                        seal_members(file[name])
                    seal_members(file)
                return
            except LocksUnsupported as err:  # raised before anything is written: readers could not be kept out
                log.warning("%s; rewriting the cache instead of adding to it in place", err)
        log.info("cache: rewriting %s without the group(s) replaced: %s", path, ", ".join(sorted(replaced)))
        tmp = temp_for(path)
        try:
            with reading(path), h5py.File(path, "r") as src, h5py.File(tmp, "w", track_order=True) as dst:
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
                for name in src:
                    if name not in replaced:
                        src.copy(src[name], dst, name=name)  # chunk by chunk: memory stays small
                for name in write_new(dst):
                    seal_members(dst[name])  # written now; copied groups keep the names sealed when written
                seal_members(dst)
            _replace_atomically(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_row_blocks(group: h5py.Group, blocks: RowBlocks) -> None:
    """Create the datasets of ``blocks.layouts`` in ``group`` and fill them from ``blocks.blocks``."""
    datasets = {name: create_numeric(group, name, shape, dtype) for name, (shape, dtype) in blocks.layouts.items()}
    for name, first, rows in blocks.blocks:
        datasets[name][first : first + len(rows)] = rows


def add_stage(
    path: str | Path,
    stage: str,
    datasets: dict[str, np.ndarray],
    provenance: dict,
    failures: list[Failure],
    manifest: pl.DataFrame | None = None,
    blocks: RowBlocks | None = None,
    in_place: bool = True,
) -> None:
    """Write (or replace) one stage's group and its failures; the rest of the cache is kept unchanged.

    ``datasets`` maps names to arrays with N rows (``ok`` among them, unless in ``blocks``), ``blocks`` more datasets
    written block by block; ``provenance`` is stored as JSON. ``manifest`` (same rows, in the same order) replaces the
    stored one in the same atomic write: used when changed audio files were re-extracted, so their ``duration_s`` and
    ``sample_rate`` are current. ``in_place=False`` rewrites the cache even when the stage could be appended (a
    caller whose ``blocks`` read the cache itself: an in-place writer locks readers out).
    """
    path = Path(path)
    log.info("%s: writing stage into %s", stage, path)
    with reading(path), h5py.File(path, "r") as file:
        kept = [f for f in read_failures(file) if f.stage != stage]

    def write_new(file: h5py.File) -> list[str]:
        if manifest is not None:
            write_manifest_group(file.create_group(MANIFEST_GROUP), manifest)
        group = file.create_group(stage)
        for name, array in datasets.items():
            write_rows(group, name, array)
        if blocks is not None:
            write_row_blocks(group, blocks)
        write_json_attr(group, PROVENANCE_ATTR, provenance)
        write_failures(file, kept + list(failures))
        return [stage, FAILURES_GROUP, *([MANIFEST_GROUP] if manifest is not None else [])]

    _publish(path, {stage, FAILURES_GROUP} | ({MANIFEST_GROUP} if manifest is not None else set()), write_new,
             in_place)


def replace_manifest(path: str | Path, manifest: pl.DataFrame) -> None:
    """Store ``manifest`` (the same rows, in the cache's order) in place of the cache's; everything else is kept
    unchanged, in one atomic write (``extract`` after labels changed)."""

    def write_new(file: h5py.File) -> list[str]:
        write_manifest_group(file.create_group(MANIFEST_GROUP), manifest)
        return [MANIFEST_GROUP]

    _publish(Path(path), {MANIFEST_GROUP}, write_new, in_place=True)
