"""Work in progress of one stage: batches committed as small ``.npz`` part files by atomic rename.

A stage plans its work as numbered units (batches) over the manifest rows. Each finished unit is written
to ``<cache>.parts/<stage>/unit-<k>.npz`` via a temporary file and ``os.replace``, so a kill loses at most
the unit being computed and never leaves a half-written part. Re-running the stage skips committed units.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache.schema import Failure
from pipeline.problems import InputError


@dataclass
class UnitResult:
    """What one unit produced. ``rows`` index the manifest; ``arrays`` have one entry per row."""

    rows: np.ndarray  # [n] int64
    arrays: dict[str, np.ndarray]
    failures: list[Failure]


class PartStore:
    """The committed units of one stage of one cache."""

    def __init__(self, cache_path: str | Path, stage: str, fingerprint: str, discard_other: bool = False):
        """``fingerprint`` identifies the stage config. Parts made under another one are refused (an
        unfinished run must be finished with its own settings) or, with ``discard_other``, deleted."""
        self.cache_path = cache_path
        self.dir = Path(f"{cache_path}.parts") / stage
        stamp = self.dir / "FINGERPRINT"
        if discard_other and stamp.is_file() and stamp.read_text() != fingerprint:
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if stamp.is_file() and stamp.read_text() != fingerprint:
            raise InputError(
                f"{self.dir}: unfinished '{stage}' work was made with other settings (model or config); "
                "re-run with the original settings to finish it, or pass --force to start a new cache"
            )
        if not stamp.is_file():
            tmp = self.dir / f"FINGERPRINT.tmp-{os.getpid()}"  # shards may create it at the same moment
            tmp.write_text(fingerprint)
            os.replace(tmp, stamp)

    def _unit_path(self, unit: int) -> Path:
        return self.dir / f"unit-{unit:06d}.npz"

    def committed_units(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("unit-*.npz")}

    def commit(self, unit: int, result: UnitResult) -> None:
        tmp = self.dir / f".unit-{unit:06d}.tmp-{os.getpid()}.npz"
        fields = {f"fail_{k}": np.array([getattr(f, k) for f in result.failures], dtype=str)
                  for k in ("utt_id", "stage", "path", "reason")}
        with open(tmp, "wb") as handle:
            np.savez(handle, rows=result.rows, **{f"array_{k}": v for k, v in result.arrays.items()}, **fields)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._unit_path(unit))

    def load(self, unit: int) -> UnitResult:
        with np.load(self._unit_path(unit), allow_pickle=False) as data:
            arrays = {k[len("array_"):]: data[k] for k in data.files if k.startswith("array_")}
            failures = [Failure(*row) for row in zip(*(data[f"fail_{k}"].tolist()
                                                       for k in ("utt_id", "stage", "path", "reason")))]
            return UnitResult(rows=data["rows"], arrays=arrays, failures=failures)

    @staticmethod
    def remove_finished(cache_path: str | Path, stages: list[str]) -> None:
        """Delete parts of ``stages`` the cache already holds whole (a kill can land between publishing
        a stage and deleting its parts)."""
        for stage in stages:
            shutil.rmtree(Path(f"{cache_path}.parts") / stage, ignore_errors=True)
        remove_empty_parts_dir(cache_path)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        remove_empty_parts_dir(self.cache_path)


def remove_empty_parts_dir(cache_path: str | Path) -> None:
    """Delete ``<cache>.parts`` once no stage (and no sharded run description) is left in it."""
    try:
        Path(f"{cache_path}.parts").rmdir()
    except OSError:  # not empty, or already gone
        pass
