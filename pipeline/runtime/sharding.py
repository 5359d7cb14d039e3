"""Which shard computes which unit of a stage: a disjoint split balanced by audio seconds.

Shards split a stage's unit plan (its batches), not the manifest: every unit is computed exactly as in a
single-process run, so the merged cache is bit-for-bit the same. Each unit is committed to
``<cache>.parts/<stage>/`` by its own atomic rename, so shards never write the same file; once every
unit is there, a plain ``extract`` (or ``cache merge``) assembles the stage as it would after a resume.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from core.errors import InputError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based), e.g. a torchrun rank or a job-array task."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def file_tag(self) -> str:
        return f"shard-{self.index}-of-{self.count}"


def parse_shard(text: str) -> Shard:
    """``"i/n"`` with ``0 <= i < n``, as given to ``--shard``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise InputError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4 for the first of four")
    return Shard(int(match[1]), int(match[2]))


def torchrun_shard() -> Shard | None:
    """This process's shard when launched by torchrun with more than one process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Shard(int(os.environ["RANK"]), world) if world > 1 else None


def assign_units(unit_seconds: list[float], count: int) -> np.ndarray:
    """[U] int: the shard of each unit, greedily balancing the audio seconds each shard computes.

    Longest unit first, each to the least-loaded shard (ties: lowest shard, then lowest unit index), so
    every process computes the same assignment from the same plan.
    """
    owner = np.zeros(len(unit_seconds), dtype=np.int64)
    load = np.zeros(count)
    for unit in sorted(range(len(unit_seconds)), key=lambda u: (-unit_seconds[u], u)):
        shard = int(np.argmin(load))
        owner[unit] = shard
        load[shard] += unit_seconds[unit]
    return owner
