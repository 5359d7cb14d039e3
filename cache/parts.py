"""Work in progress of one stage: units committed as small ``.npz`` part files by atomic rename.

A stage plans its work as numbered units (batches of rows, or one model each) over the manifest. Each
finished unit is written to ``<cache>.parts/<stage>/unit-<k>.npz`` via a temporary file and
``os.replace``, so a kill loses at most the unit being computed and never leaves a half-written part.
Re-running the stage skips committed units.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cache.paths import CachePaths, temp_for
from cache.schema import FAILURE_FIELDS, Failure
from core.errors import InputError


@dataclass(frozen=True)
class StoredArray:
    """One array of a committed unit as it lies in the unit's file."""

    offset: int  # bytes from the file's start to the array's first value
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class UnitResult:
    """What one unit produced. ``rows`` index the manifest; ``arrays`` have one entry per row (for row
    units; a stage with its own assembly may store any arrays); ``summary`` is JSON facts for provenance."""

    rows: np.ndarray  # [n] int64
    arrays: dict[str, np.ndarray]
    failures: list[Failure]
    summary: dict = field(default_factory=dict)


class PartStore:
    """The committed units of one stage of one cache."""

    def __init__(self, cache_path: str | Path, stage: str, fingerprint: str, discard_other: bool = False):
        """``fingerprint`` identifies the stage config. Parts made under another one are refused (an
        unfinished run must be finished with its own settings) or, with ``discard_other``, deleted."""
        self.paths = CachePaths(cache_path)
        self.dir = self.paths.stage_parts(stage)
        stamp = self.dir / "FINGERPRINT"
        if discard_other and stamp.is_file() and stamp.read_text() != fingerprint:
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if stamp.is_file() and stamp.read_text() != fingerprint:
            raise InputError(
                f"{self.dir}: unfinished '{stage}' work was made with other settings (model, config, or another "
                "version of its feature set); re-run with the original settings and version to finish it, or delete "
                "this folder to start the stage again (--force starts a new cache)"
            )
        if not stamp.is_file():
            tmp = temp_for(stamp)  # shards may create it at the same moment
            tmp.write_text(fingerprint)
            os.replace(tmp, stamp)

    def _unit_path(self, unit: int) -> Path:
        return self.dir / f"unit-{unit:06d}.npz"

    def committed_units(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("unit-*.npz")}

    def commit(self, unit: int, result: UnitResult) -> None:
        path = self._unit_path(unit)
        tmp = temp_for(path)
        fields = {f"fail_{k}": np.array([getattr(f, k) for f in result.failures], dtype=str) for k in FAILURE_FIELDS}
        with open(tmp, "wb") as handle:
            np.savez(handle, rows=result.rows, summary=np.array(json.dumps(result.summary, default=str)),
                     **{f"array_{k}": v for k, v in result.arrays.items()}, **fields)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def load(self, unit: int, names: Iterable[str] | None = None) -> UnitResult:
        """The unit as committed; with ``names``, only those of its arrays are read (an ``.npz`` member is read on
        access), for an assembly that touches each unit more than once."""
        with np.load(self._unit_path(unit), allow_pickle=False) as data:
            stored = [k[len("array_"):] for k in data.files if k.startswith("array_")]
            arrays = {k: data[f"array_{k}"] for k in stored if names is None or k in names}
            failures = [Failure(*row) for row in zip(*(data[f"fail_{k}"].tolist() for k in FAILURE_FIELDS))]
            return UnitResult(rows=data["rows"], arrays=arrays, failures=failures, summary=json.loads(str(data["summary"])))

    def stored_arrays(self, unit: int) -> dict[str, StoredArray]:
        """Where each array of the unit lies in its file (``np.savez`` stores members uncompressed), its shape and
        dtype, from the headers only: ``read_rows`` then reads single rows without loading the array."""
        path = self._unit_path(unit)
        found = {}
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            for info in archive.infolist():
                if not (info.filename.startswith("array_") and info.filename.endswith(".npy")):
                    continue
                if info.compress_type != zipfile.ZIP_STORED:
                    raise InputError(f"{path}: {info.filename} is compressed; this part was not written by this tool")
                raw.seek(info.header_offset)
                local = raw.read(30)  # the local file header; its name and extra field follow
                name_length, extra_length = struct.unpack("<HH", local[26:30])
                raw.seek(info.header_offset + 30 + name_length + extra_length)
                major, _ = np.lib.format.read_magic(raw)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else \
                    np.lib.format.read_array_header_2_0
                shape, fortran_order, dtype = read_header(raw)
                if fortran_order:
                    raise InputError(f"{path}: {info.filename} is stored column-major; this part was not written by "
                                     "this tool")
                found[info.filename[len("array_"):-len(".npy")]] = StoredArray(raw.tell(), tuple(shape), np.dtype(dtype))
        return found

    def read_rows(self, unit: int, stored: StoredArray, positions: np.ndarray) -> np.ndarray:
        """Rows ``positions`` (sorted, of the array's first axis) of one stored array, read alone: a run of
        neighbouring rows is one read."""
        row_shape = stored.shape[1:]
        row_bytes = int(np.prod(row_shape)) * stored.dtype.itemsize
        out = np.empty((len(positions), *row_shape), stored.dtype)
        if not len(positions) or not row_bytes:
            return out
        view = out.reshape(len(positions), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        with open(self._unit_path(unit), "rb") as raw:
            for run in np.split(np.arange(len(positions)), breaks):
                raw.seek(stored.offset + int(positions[run[0]]) * row_bytes)
                if raw.readinto(memoryview(view[run[0] : run[-1] + 1]).cast("B")) != len(run) * row_bytes:
                    raise InputError(f"{self._unit_path(unit)}: shorter than its header says (a damaged part)")
        return out

    def remove(self) -> None:
        self.paths.remove_stage_parts(self.dir.name)
