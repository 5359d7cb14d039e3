"""Write the HDF5 cache so that a kill at any moment leaves either the old file or the new one.

Every change is written to a temporary file beside the cache, flushed to disk, and moved over the cache
with an atomic ``os.replace``. A cache is therefore never half-written; work in progress lives in
``cache.parts`` until a stage is complete.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np
import polars as pl

from cache.paths import temp_for
from cache.schema import (
    FAILURE_FIELDS,
    FAILURES_GROUP,
    MANIFEST_GROUP,
    PROVENANCE_ATTR,
    SCHEMA_VERSION,
    Failure,
)
from core.provenance import utc_now

log = logging.getLogger(__name__)
_STR = h5py.string_dtype("utf-8")
_CHUNK_BYTES = 4 << 20  # ~4 MiB row chunks: large sequential reads, small enough to slice a fold


def write_rows(group: h5py.Group, name: str, array: np.ndarray) -> h5py.Dataset:
    """Store ``array`` (rows first) chunked along rows only; strings as UTF-8."""
    if array.dtype.kind in "UO":
        return group.create_dataset(name, data=np.asarray(array, dtype=object), dtype=_STR)
    row_bytes = max(1, array.nbytes // max(1, len(array)))
    rows_per_chunk = int(max(1, min(len(array), _CHUNK_BYTES // row_bytes))) if len(array) else None
    chunks = (rows_per_chunk, *array.shape[1:]) if rows_per_chunk else None
    return group.create_dataset(name, data=array, chunks=chunks)


def write_manifest_group(group: h5py.Group, manifest: pl.DataFrame) -> None:
    """One dataset per column. Nulls: '' for strings, NaN for floats, -1 for integers."""
    for name, dtype in manifest.schema.items():
        column = manifest[name]
        if dtype == pl.String:
            data = column.fill_null("").to_numpy().astype(object)
        elif dtype.is_float():
            data = column.cast(pl.Float64).fill_null(float("nan")).to_numpy()
        else:
            data = column.fill_null(-1).to_numpy().astype(np.int64)
        write_rows(group, name, data)
        group[name].attrs["polars_dtype"] = str(dtype)


def write_failures(file: h5py.File, failures: list[Failure]) -> None:
    group = file.create_group(FAILURES_GROUP)
    for field in FAILURE_FIELDS:
        values = np.array([getattr(f, field) for f in failures], dtype=object)
        group.create_dataset(field, data=values, dtype=_STR, shape=(len(failures),))


def read_failures(file: h5py.File) -> list[Failure]:
    if FAILURES_GROUP not in file:
        return []
    group = file[FAILURES_GROUP]
    columns = [group[field].asstr()[()] for field in FAILURE_FIELDS]
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


def create_cache(path: str | Path, manifest: pl.DataFrame, config: dict) -> None:
    """Create a cache holding only the manifest and the extract ``config`` (JSON-serialisable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_for(path)
    with h5py.File(tmp, "w") as file:
        file.attrs["schema_version"] = SCHEMA_VERSION
        file.attrs["created_utc"] = utc_now()
        file.attrs["config"] = json.dumps(config, sort_keys=True)
        write_manifest_group(file.create_group(MANIFEST_GROUP), manifest)
        write_failures(file, [])
    _replace_atomically(tmp, path)


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
    tmp = temp_for(path)
    log.info("%s: writing stage into %s", stage, path)
    try:
        with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            replaced = {stage, FAILURES_GROUP} | ({MANIFEST_GROUP} if manifest is not None else set())
            for name in src:
                if name not in replaced:
                    src.copy(src[name], dst, name=name)
            if manifest is not None:
                write_manifest_group(dst.create_group(MANIFEST_GROUP), manifest)
            group = dst.create_group(stage)
            for name, array in datasets.items():
                write_rows(group, name, array)
            group.attrs[PROVENANCE_ATTR] = json.dumps(provenance, sort_keys=True, default=str)
            kept = [f for f in read_failures(src) if f.stage != stage]
            write_failures(dst, kept + list(failures))
        _replace_atomically(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
