"""Read the HDF5 cache: manifest, provenance, failures, and feature arrays split by fold.

Each dataset is read with one contiguous slice and indexed in memory; no per-row HDF5 access.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import polars as pl

from cache.schema import MANIFEST_GROUP, OK_DATASET, PROVENANCE_ATTR, SCHEMA_VERSION, STAGES
from cache.writer import read_failures
from pipeline.manifest import ALL_COLUMNS
from pipeline.problems import InputError


@dataclass(frozen=True)
class FoldSplit:
    """Row indices (into the cache) of one fold's train / validation / test utterances, disjoint."""

    fold: int
    train: np.ndarray  # [n_train] int64
    validation: np.ndarray  # [n_val] int64
    test: np.ndarray  # [n_test] int64


def speaker_disjoint_validation(
    speakers: np.ndarray, train_rows: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Move whole speakers from ``train_rows`` to validation until it holds >= ``fraction`` of them.

    At least one speaker is held out and at least one kept. Returns ``(train, validation)`` rows.
    """
    train_speakers = np.unique(speakers[train_rows])
    if len(train_speakers) < 2:
        raise InputError("speaker-disjoint validation needs at least 2 speakers in the training folds")
    order = np.random.default_rng(seed).permutation(train_speakers)
    held: list[str] = []
    for speaker in order[:-1]:
        held.append(speaker)
        if np.isin(speakers[train_rows], held).mean() >= fraction:
            break
    is_val = np.isin(speakers[train_rows], held)
    return train_rows[~is_val], train_rows[is_val]


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

    def fold_split(
        self, fold: int, stages: list[str] | None = None, val_fraction: float = 0.1, seed: int = 0
    ) -> FoldSplit:
        """Leave-fold-out split: test = ``fold``; validation = whole speakers held out of the other folds.

        Rows that failed any of ``stages`` (default: all stages present) are left out of all three.
        """
        folds = self.manifest["fold"].to_numpy()
        if fold not in set(folds.tolist()):
            raise InputError(f"{self.path}: no fold {fold} (folds: {sorted(set(folds.tolist()))})")
        usable = self.ok(self.stages if stages is None else stages)
        rows = np.arange(len(self))
        test = rows[(folds == fold) & usable]
        train_all = rows[(folds != fold) & usable]
        speakers = self.manifest["speaker"].to_numpy()
        train, validation = speaker_disjoint_validation(speakers, train_all, val_fraction, seed)
        return FoldSplit(fold=fold, train=train, validation=validation, test=test)

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
