"""Every path a cache owns on disk, in one place: the HDF5 file, its work parts, locks, temporary names.

    <cache>                         the HDF5 file (replaced whole by atomic rename, or added to under a journal)
    <cache>.lock                    the writer lock (``cache.lock``)
    <cache>.journal                 undo journal of a stage being added in place (``cache.journal``)
    <cache>.shard-i-of-n.lock       the lock of one job-array shard
    <cache>.parts/<stage>/          committed units of a stage in progress (``cache.parts``)
    <cache>.parts/run/              what a sharded extraction was asked to do, for ``cache merge``

A temporary file is always ``.<final name>.tmp-<pid>`` beside its final name (``temp_for``), written,
flushed and renamed over the final name; a killed writer leaves one behind, which the next writer deletes
(under the lock, when no live writer can own it).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from core.files import temp_for  # noqa: F401 - the cache's temporary names are core's

RUN_DESCRIPTION_DIR = "run"


@dataclass(frozen=True)
class CachePaths:
    """The paths of the cache ``file`` (``CachePaths(Path("c.h5")).parts`` is ``c.h5.parts``)."""

    file: Path

    def __init__(self, file: str | Path):
        object.__setattr__(self, "file", Path(file))

    @property
    def parts(self) -> Path:
        return Path(f"{self.file}.parts")

    def stage_parts(self, stage: str) -> Path:
        return self.parts / stage

    @property
    def run_description(self) -> Path:
        """Folder with the manifest and settings every shard of a sharded extraction must share."""
        return self.parts / RUN_DESCRIPTION_DIR

    @property
    def journal(self) -> Path:
        return Path(f"{self.file}.journal")

    @property
    def lock(self) -> Path:
        return Path(f"{self.file}.lock")

    def shard_lock(self, shard_tag: str) -> Path:
        return Path(f"{self.file}.{shard_tag}.lock")

    def leftover_temp_files(self) -> list[Path]:
        """Temporary files of writers of this cache: beside it and anywhere in its parts."""
        leftovers = list(self.file.parent.glob(f".{self.file.name}.tmp-*"))
        if self.parts.is_dir():
            leftovers += list(self.parts.rglob(".*.tmp-*"))
        return leftovers

    def remove_leftover_temp_files(self) -> list[Path]:
        """Delete ``leftover_temp_files``; returns them. Only safe while holding the cache's lock."""
        leftovers = self.leftover_temp_files()
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
        return leftovers

    def remove_stage_parts(self, stage: str) -> None:
        shutil.rmtree(self.stage_parts(stage), ignore_errors=True)
        self.remove_empty_parts()

    def remove_run_description(self) -> None:
        shutil.rmtree(self.run_description, ignore_errors=True)
        self.remove_empty_parts()

    def remove_all(self) -> None:
        """The cache file and all its work (``extract --force``)."""
        self.file.unlink(missing_ok=True)
        self.journal.unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)

    def remove_empty_parts(self) -> None:
        """Delete ``<cache>.parts`` once no stage (and no sharded run description) is left in it."""
        try:
            self.parts.rmdir()
        except OSError:  # not empty, or already gone
            pass
