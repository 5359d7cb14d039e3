"""Write the HDF5 cache so that a kill at any moment leaves either the old file or the new one.

Every change is written to a temporary file beside the cache, flushed to disk, and moved over the cache
with an atomic ``os.replace``. A cache is therefore never half-written; work in progress lives in
``cache.parts`` until a stage is complete.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import polars as pl

from cache.integrity import read_text, seal_members, set_text_attr, write_json_attr, write_numeric, write_text
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


def _rewrite(path: Path, replaced: set[str], write_new: Callable[[h5py.File, h5py.File], list[str]]) -> None:
    """Copy the cache to a temporary file without the groups in ``replaced``, let ``write_new(src, dst)`` write
    their successors (it returns the names of the groups it wrote, to be sealed), then move it over the cache."""
    tmp = temp_for(path)
    with interrupts_deferred():
        try:
            with h5py.File(path, "r") as src, h5py.File(tmp, "w", track_order=True) as dst:
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
                for name in src:
                    if name not in replaced:
                        src.copy(src[name], dst, name=name)
                for name in write_new(src, dst):
                    seal_members(dst[name])  # written now; copied groups keep the names sealed when written
                seal_members(dst)
            _replace_atomically(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def add_stage(
    path: str | Path,
    stage: str,
    datasets: dict[str, np.ndarray],
    provenance: dict,
    failures: list[Failure],
    manifest: pl.DataFrame | None = None,
) -> None:
    """Write (or replace) one stage's group and its failures; the rest of the cache is copied unchanged.

    ``datasets`` maps names to arrays with N rows (``ok`` among them); ``provenance`` is stored as JSON.
    ``manifest`` (same rows, in the same order) replaces the stored one in the same atomic write: used when
    changed audio files were re-extracted, so their ``duration_s`` and ``sample_rate`` are current.
    """
    path = Path(path)
    log.info("%s: writing stage into %s", stage, path)

    def write_new(src: h5py.File, dst: h5py.File) -> list[str]:
        if manifest is not None:
            write_manifest_group(dst.create_group(MANIFEST_GROUP), manifest)
        group = dst.create_group(stage)
        for name, array in datasets.items():
            write_rows(group, name, array)
        write_json_attr(group, PROVENANCE_ATTR, provenance)
        kept = [f for f in read_failures(src) if f.stage != stage]
        write_failures(dst, kept + list(failures))
        return [stage, FAILURES_GROUP, *([MANIFEST_GROUP] if manifest is not None else [])]

    _rewrite(path, {stage, FAILURES_GROUP} | ({MANIFEST_GROUP} if manifest is not None else set()), write_new)


def replace_manifest(path: str | Path, manifest: pl.DataFrame) -> None:
    """Store ``manifest`` (the same rows, in the cache's order) in place of the cache's; everything else is copied
    unchanged, in one atomic write (``extract`` after labels changed)."""

    def write_new(src: h5py.File, dst: h5py.File) -> list[str]:
        write_manifest_group(dst.create_group(MANIFEST_GROUP), manifest)
        return [MANIFEST_GROUP]

    _rewrite(Path(path), {MANIFEST_GROUP}, write_new)
