"""Read the HDF5 cache: manifest, provenance, failures and feature arrays.

Each dataset is read with one contiguous slice and indexed in memory; no per-row HDF5 access.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import polars as pl

from cache.schema import MANIFEST_GROUP, OK_DATASET, PROVENANCE_ATTR, SCHEMA_VERSION, STAGES
from cache.writer import read_failures
from core.columns import ALL_COLUMNS
from core.errors import InputError


class CacheReader:
    """Read-only view of a cache file. Cheap to open; arrays are read on request."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: cache not found")
        try:
            with h5py.File(self.path, "r") as file:
                version = int(file.attrs.get("schema_version", -1))
                self.config = json.loads(file.attrs.get("config", "{}"))
                self.created_utc = str(file.attrs.get("created_utc", ""))
                self.stages = [s for s in STAGES if s in file]
                self.manifest = _read_manifest(file[MANIFEST_GROUP])
                self.failures = read_failures(file)
                self._provenance = {s: json.loads(file[s].attrs.get(PROVENANCE_ATTR, "{}")) for s in self.stages}
        except (OSError, KeyError) as err:
            raise InputError(f"{self.path}: not a readable feature cache ({err})") from err
        if version != SCHEMA_VERSION:
            raise InputError(f"{self.path}: cache schema version {version}, this tool reads {SCHEMA_VERSION}")

    def __len__(self) -> int:
        return self.manifest.height

    def provenance(self, stage: str) -> dict:
        return self._provenance[stage]

    def failures_table(self) -> pl.DataFrame:
        return pl.DataFrame([f.__dict__ for f in self.failures],
                            schema={"utt_id": pl.String, "stage": pl.String, "path": pl.String, "reason": pl.String})

    def read(self, stage: str, name: str, index: tuple | slice = ()) -> np.ndarray:
        """Dataset ``/<stage>/<name>`` (optionally one hyperslab such as ``np.s_[:, 12, :]``)."""
        self._require(stage)
        with h5py.File(self.path, "r") as file:
            dataset = file[stage][name]
            if dataset.dtype.kind == "O":
                return dataset.asstr()[()]
            return dataset[index]

    def frames(self, layer: int, row: int) -> np.ndarray:
        """``[T, D]`` float16 frame sequence of one utterance (cached with ``extract --frame-layers``)."""
        self._require("speech")
        with h5py.File(self.path, "r") as file:
            name = f"frames_layer{layer}"
            if name not in file["speech"]:
                stored = sorted(k for k in file["speech"] if k.startswith("frames_layer"))
                raise InputError(f"{self.path}: no frame sequences of layer {layer} (stored: {stored or 'none'}); "
                                 "extract with --frame-layers")
            start, stop = file["speech"]["frame_offsets"][row : row + 2]
            return file["speech"][name][start:stop]

    def dataset_shapes(self, stage: str) -> dict[str, tuple[int, ...]]:
        """``{name: shape}`` of the datasets of one stage."""
        self._require(stage)
        with h5py.File(self.path, "r") as file:
            return {name: tuple(ds.shape) for name, ds in file[stage].items()}

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


def _read_manifest(group: h5py.Group) -> pl.DataFrame:
    """Inverse of ``cache.writer.write_manifest_group``."""

    columns = {}
    for name, dtype in ALL_COLUMNS.items():
        dataset = group[name]
        if dtype == pl.String:
            values = pl.Series(name, dataset.asstr()[()], dtype=pl.String)
            columns[name] = values.replace("", None) if name in ("emotion",) else values
        elif dtype.is_float():
            columns[name] = pl.Series(name, dataset[()], dtype=pl.Float64).fill_nan(None)
        else:
            values = pl.Series(name, dataset[()], dtype=pl.Int64)
            columns[name] = values.replace(-1, None)
    return pl.DataFrame(columns)
