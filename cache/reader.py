"""Read the HDF5 cache: manifest, provenance, failures and feature arrays.

Each dataset is read with one contiguous slice and indexed in memory; no per-row HDF5 access. Every open of the
file holds a shared lock (``cache.journal.reading``): a stage being added in place is never read half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import polars as pl

from cache.integrity import (
    OFFSETS_SUFFIX,
    DamagedCache,
    check_members,
    get_text_attr,
    is_text,
    read_json_attr,
    read_numeric,
    read_rows_unchecked,
    read_text,
    summed_chunks_only,
)
from cache.journal import reading
from cache.schema import MANIFEST_GROUP, NULL_SUFFIX, OK_DATASET, PROVENANCE_ATTR, READABLE_SCHEMAS
from cache.writer import read_failures
from core.columns import ALL_COLUMNS, OPTIONAL_COLUMNS
from core.errors import InputError

# What h5py, numpy and polars raise on a damaged file (HDF5 errors surface as OSError, KeyError, ValueError...).
_UNREADABLE = (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError, pl.exceptions.PolarsError)


class CacheReader:
    """Read-only view of a cache file. Cheap to open; arrays are read on request.

    Every read is checked (``cache.integrity``): a damaged or unreadable part raises ``InputError`` naming
    the dataset, never returns different data."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._checked: set[tuple] = set()  # (file identity, stage, name) whose layout was checked
        # (file identity, stage, name) -> [row blocks of chunks] bool: every chunk of the block was read with its
        # Fletcher-32 sum checked, in this process, from this version of the file (see ``read``)
        self._summed: dict[tuple, np.ndarray] = {}
        if not self.path.is_file():
            if self.path.is_dir() and (any(self.path.glob("run.json")) or any(self.path.glob("*/run.json"))):
                raise InputError(f"{self.path}: this is a folder of head runs (train-heads/ablate output), not a "
                                 "cache; pass the .h5 file that extract --cache wrote")
            what = "a folder, not a cache file" if self.path.is_dir() else "cache not found"
            raise InputError(f"{self.path}: {what}")
        try:
            with reading(self.path), h5py.File(self.path, "r") as file:
                version = int(file.attrs.get("schema_version", -1))
                if version not in READABLE_SCHEMAS:
                    raise InputError(f"{self.path}: cache schema version {version}, this tool reads "
                                     f"{', '.join(map(str, READABLE_SCHEMAS))}")
                self.schema_version = version
                for name in ("/", *file):
                    check_members(file[name], f"{self.path}: {name if name == '/' else '/' + name}")
                self.config = read_json_attr(file, "config", f"{self.path}")
                self.created_utc = str(get_text_attr(file, "created_utc", ""))
                self.stages = stage_groups(file)
                self.manifest = _read_manifest(file[MANIFEST_GROUP], version, self.path)
                self.failures = read_failures(file)
                self._provenance = {s: read_json_attr(file[s], PROVENANCE_ATTR, f"{self.path}: /{s}")
                                    for s in self.stages}
        except InputError as err:
            raise InputError(f"{self.path}: {err}" if not str(err).startswith(str(self.path)) else str(err)) \
                from None
        except (*_UNREADABLE, UnicodeDecodeError) as err:
            raise InputError(f"{self.path}: not a readable feature cache, or damaged ({err})") from err

    def __len__(self) -> int:
        return self.manifest.height

    def provenance(self, stage: str) -> dict:
        return self._provenance[stage]

    def failures_table(self) -> pl.DataFrame:
        return pl.DataFrame([f.__dict__ for f in self.failures],
                            schema={"utt_id": pl.String, "stage": pl.String, "path": pl.String, "reason": pl.String})

    def read(self, stage: str, name: str, index: tuple | slice = ()) -> np.ndarray:
        """Dataset ``/<stage>/<name>`` (optionally one hyperslab such as ``np.s_[:, 12, :]``), checked."""
        self._require(stage)
        where = f"{self.path}: /{stage}/{name}"
        try:
            with reading(self.path), h5py.File(self.path, "r") as file:
                # the identity of the file actually open (not of the path: a new version may be renamed over it)
                info = os.fstat(file.id.get_vfd_handle())
                # ctime too: every write and every utime changes it, and no program can set it back
                identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, stage, name)
                if is_text(file[stage], name):
                    return read_text(file[stage], name, where)[index]
                # The chunk-index check visits every chunk (3,300 for the MSP-scale speech block): once per
                # dataset of this file, not per read of a block of rows (it outweighed the block reads themselves).
                dataset = file[stage][name]
                rows = _row_range(index, len(dataset)) if summed_chunks_only(dataset) else None
                identity += (len(dataset), dataset.chunks)  # the checked-blocks record fits this layout only
                if rows is not None:
                    step = dataset.chunks[0]
                    blocks = self._summed.setdefault(identity, np.zeros(-(-len(dataset) // step), bool))
                    span = slice(rows[0] // step, -(-rows[1] // step))  # the row blocks of chunks the rows touch
                    if identity in self._checked and span.stop <= len(blocks) and blocks[span].all():
                        return read_rows_unchecked(dataset, *rows, where=where)  # half of a whole-block read: sums
                values = read_numeric(dataset, where, index, check_layout=identity not in self._checked)
                self._checked.add(identity)
                if rows is not None and rows[1] > rows[0]:  # every chunk of these row blocks was just read whole
                    blocks[span] = True  # and its sum checked (an empty selection reads no chunk: nothing to mark)
                return values
        except InputError:
            raise
        except _UNREADABLE as err:
            raise DamagedCache(f"{where}: cannot be read, the file is damaged ({err})") from None

    def frames(self, layer: int, row: int) -> np.ndarray:
        """``[T, D]`` float16 frame sequence of one utterance (cached with ``extract --frame-layers``)."""
        self._require("speech")
        names = self.dataset_shapes("speech")
        name = f"frames_layer{layer}"
        if name not in names:
            stored = sorted(k for k in names if k.startswith("frames_layer"))
            raise InputError(f"{self.path}: no frame sequences of layer {layer} (stored: {stored or 'none'}); "
                             "extract with --frame-layers")
        start, stop = self.read("speech", "frame_offsets", np.s_[row : row + 2])
        return self.read("speech", name, np.s_[start:stop])

    def dataset_shapes(self, stage: str) -> dict[str, tuple[int, ...]]:
        """``{name: shape}`` of the datasets of one stage."""
        self._require(stage)
        try:
            with reading(self.path), h5py.File(self.path, "r") as file:
                group = file[stage]
                return {name: (len(group[f"{name}{OFFSETS_SUFFIX}"]) - 1,) if f"{name}{OFFSETS_SUFFIX}" in group
                        else tuple(ds.shape) for name, ds in group.items() if not name.endswith(OFFSETS_SUFFIX)}
        except _UNREADABLE as err:
            raise DamagedCache(f"{self.path}: /{stage} cannot be listed, the file is damaged ({err})") from None

    def ok(self, stages: list[str]) -> np.ndarray:
        """[N] bool: rows every one of ``stages`` processed successfully."""
        mask = np.ones(len(self), dtype=bool)
        for stage in stages:
            mask &= self.read(stage, OK_DATASET)
        return mask

    def _require(self, stage: str) -> None:
        if stage not in self.stages:
            raise InputError(f"{self.path}: cache has no '{stage}' stage (has: {', '.join(self.stages) or 'none'}); "
                             f"run `python cli.py extract --stages {stage}`")


def _read_manifest(group: h5py.Group, version: int, path: Path) -> pl.DataFrame:
    """Inverse of ``cache.writer.write_manifest_group``: nulls from the ``<column>.null`` masks (schema 1
    caches: '' in ``emotion``, NaN in floats and -1 in integers meant null)."""
    columns = {}
    for name, dtype in ALL_COLUMNS.items():
        where = f"{path}: /{MANIFEST_GROUP}/{name}"
        if name not in group and name in OPTIONAL_COLUMNS:  # a column added after the cache was written
            columns[name] = None
            continue
        if dtype == pl.String:
            values = pl.Series(name, read_text(group, name, where), dtype=pl.String)
        else:
            data = read_numeric(group[name], where)
            if data.dtype.kind not in "fiu":
                raise DamagedCache(f"{where}: a {data.dtype} column where numbers belong (the file is damaged)")
            values = pl.Series(name, data, dtype=pl.Float64 if dtype.is_float() else pl.Int64)
        if f"{name}{NULL_SUFFIX}" in group:
            mask = read_numeric(group[f"{name}{NULL_SUFFIX}"], f"{where}{NULL_SUFFIX}")
            values = values.scatter(np.flatnonzero(mask), None)
        elif version == 1:
            if dtype == pl.String:
                values = values.replace("", None) if name == "emotion" else values
            elif dtype.is_float():
                values = values.fill_nan(None)
            else:
                values = values.replace(-1, None)
        elif dtype.is_float():
            values = values.fill_nan(None)  # schema 2 writes masks, but NaN is never a value we keep
        columns[name] = values
    height = len(columns["utt_id"])
    return pl.DataFrame({name: values if values is not None else pl.Series(name, [None] * height, dtype=ALL_COLUMNS[name])
                         for name, values in columns.items()})


def _row_range(index: tuple | slice, rows: int) -> tuple[int, int] | None:
    """``(start, stop)`` when ``index`` selects whole rows ``start:stop`` with every column (``()`` or a slice of step
    1), else None."""
    if isinstance(index, tuple) and len(index) == 0:
        return 0, rows
    if isinstance(index, slice) and index.step in (None, 1):
        start, stop, _ = index.indices(rows)
        return start, max(start, stop)
    return None


def stage_groups(file: h5py.File) -> list[str]:
    """The stages a cache holds: its groups with a provenance, in the order they were written (caches written
    before the order was tracked list theirs alphabetically)."""
    names = [name for name in file if isinstance(file[name], h5py.Group) and PROVENANCE_ATTR in file[name].attrs]
    return names
