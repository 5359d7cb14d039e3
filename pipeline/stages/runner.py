"""The stage contract: every extraction stage (speech, prosody, state) runs through ``run_stage``.

A stage supplies a ``Stage``: its plan (numbered units of work), a generator that computes pending units,
its provenance and, when its units are not batches of rows, its own assembly. This module owns what all
stages share: part files (skip committed units, commit each new one), progress, ``--on-error``, sharding,
and the final atomic write of the assembled stage into the cache.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from cache.parts import PartStore, UnitResult
from cache.schema import FAILURES_GROUP, Failure
from cache.writer import add_stage, adds_in_place
from core.errors import InputError
from core.provenance import utc_now
from pipeline.runtime.progress import StageProgress
from pipeline.runtime.sharding import Shard, assign_units
from pipeline.stages.row_blocks import KeptRows, stage_row_blocks, window_budget

log = logging.getLogger(__name__)

# (units in plan order, number of manifest rows) -> (datasets of the stage, failures, extra provenance)
Assemble = Callable[[Iterable[UnitResult], int], tuple[dict[str, np.ndarray], list[Failure], dict]]
# pending [(unit_index, rows), ...] -> (unit_index, result) in any order
Compute = Callable[[list[tuple[int, list[int]]]], Iterator[tuple[int, UnitResult]]]


class StageFailed(InputError):
    """``--on-error fail`` met a bad file. Units committed before it are kept for the next run."""


class ShardsUnfinished(InputError):
    """``cache merge`` found units no shard has committed yet."""


@dataclass(frozen=True)
class StagePlan:
    name: str
    units: list[list[int]]  # rows of each unit, in a fixed order (see pipeline.stages.batching)
    fingerprint: dict  # everything that changes the stage's output (config, model checksum, versions)
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # not per row, e.g. feature names
    update_rows: np.ndarray | None = None  # recompute only these rows; the others stay as the cache has them
    unit_seconds: list[float] | None = None  # audio seconds each unit computes, to balance shards
    stage_bytes: int = 0  # about how large the stage's arrays are, to check free disk space first


@dataclass(frozen=True)
class Stage:
    """One stage's plan and code. ``assemble`` turns the committed units into the stage's datasets; by default row
    units are written into the cache in blocks of rows in manifest order (``pipeline.stages.row_blocks``)."""

    plan: StagePlan
    compute: Compute
    provenance: dict
    assemble: Assemble | None = None


@dataclass(frozen=True)
class StageWork:
    """What this process does with a plan: all of it, or one shard's units (and then no publishing).

    ``compute_missing=False`` only assembles units other processes committed (``cache merge``).
    """

    shard: Shard | None = None
    compute_missing: bool = True
    shard_count: int = 0  # how many shards did the work, to name the unfinished ones
    write_block_bytes: int = 0  # memory for writing the stage into the cache; 0 = from the machine (row_blocks)


def fingerprint_text(fingerprint: dict) -> str:
    return json.dumps(fingerprint, sort_keys=True, default=str)


def run_stage(cache_path: str, manifest: pl.DataFrame, stage: Stage, on_error: str = "skip",
              work: StageWork = StageWork()) -> list[Failure]:
    """Compute every unit not yet committed, then write the stage into the cache. Returns its failures.

    With ``work.shard`` only that shard's units are computed and the stage is not published; the
    failures returned are those of the units this call computed.
    """
    plan = stage.plan
    if plan.update_rows is None:
        parts = PartStore(cache_path, plan.name, fingerprint_text(plan.fingerprint))
    else:  # an update keeps its parts apart from a full run's; one for other rows is stale (files changed again)
        fingerprint = fingerprint_text({**plan.fingerprint, "update_rows": np.asarray(plan.update_rows).tolist()})
        parts = PartStore(cache_path, f"{plan.name}.update", fingerprint, discard_other=True)
    done = parts.committed_units()
    pending = [(i, rows) for i, rows in enumerate(plan.units) if i not in done]
    shard_count = work.shard.count if work.shard is not None else work.shard_count
    owner = assign_units(plan.unit_seconds or [float(len(rows)) for rows in plan.units], shard_count) \
        if shard_count else None
    if work.shard is not None:
        mine = owner == work.shard.index
        done = {i for i in done if mine[i]}
        pending = [(i, rows) for i, rows in pending if mine[i]]
        log.info("%s: shard %s holds %d of %d units, %d already committed", plan.name, work.shard,
                 int(mine.sum()), len(plan.units), len(done))
    elif done:
        log.info("%s: resuming, %d of %d units already committed", plan.name, len(done), len(plan.units))
    if pending and not work.compute_missing:
        unfinished = "every `extract --shard i/n`"
        if owner is not None:
            shards = sorted({int(owner[i]) for i, _ in pending})
            unfinished = ", ".join(f"`extract --shard {k}/{shard_count}`" for k in shards)
        raise ShardsUnfinished(f"{plan.name}: {len(pending)} of {len(plan.units)} units are not committed yet; "
                               f"finish {unfinished} first (each resumes where it stopped)")
    if pending:
        check_free_space(cache_path, plan, publishes=work.shard is None)
    shard_failures: list[Failure] = []
    durations = manifest["duration_s"].fill_null(0.0).to_numpy()
    by_rows = any(plan.units)  # units of rows count files; other units (the state's updaters) count themselves
    size = (lambda unit: len(plan.units[unit])) if by_rows else (lambda unit: 1)
    with StageProgress(plan.name, sum(size(u) for u in range(len(plan.units))), "files" if by_rows else "units") \
            as progress:
        progress.advance(sum(size(u) for u in done if u < len(plan.units)))
        for unit, result in stage.compute(pending):
            parts.commit(unit, result)
            shard_failures += result.failures
            progress.advance(size(unit), float(durations[result.rows].sum()))
            if on_error == "fail" and result.failures:
                first = result.failures[0]
                raise StageFailed(f"{first.path}: {first.reason} (stage {plan.name}, --on-error fail)")
    if work.shard is not None:
        return shard_failures  # publishing waits until every shard is done
    provenance = {**stage.provenance, "created_utc": utc_now()}
    if stage.assemble is not None:
        arrays, failures, extra = stage.assemble((parts.load(unit) for unit in range(len(plan.units))), manifest.height)
        add_stage(cache_path, plan.name, {**arrays, **plan.constants}, {**provenance, **extra}, failures)
    else:
        base = KeptRows.of(cache_path, plan.name, plan.update_rows) if plan.update_rows is not None else None
        blocks, arrays, failures = stage_row_blocks(parts, len(plan.units), manifest.height,
                                                    work.write_block_bytes or window_budget(), base,
                                                    set(plan.constants))
        add_stage(cache_path, plan.name, {**arrays, **plan.constants}, provenance, failures,
                  manifest=manifest if base is not None else None,  # re-read files: current durations
                  blocks=blocks, in_place=base is None)  # an update reads the cache while it writes: rewritten
    parts.remove()
    return failures


def check_free_space(cache_path: str, plan: StagePlan, publishes: bool) -> None:
    """Refuse to start a stage that cannot finish for lack of disk space: its parts take about the stage's size,
    and publishing adds as much to the cache, in place, or rewrites the whole cache beside the old one when it
    replaces a large group (``cache.writer``)."""
    path = Path(cache_path)
    rewrite = publishes and path.exists() and \
        (plan.update_rows is not None or not adds_in_place(path, {plan.name, FAILURES_GROUP}))
    needed = plan.stage_bytes * (2 if publishes else 1) + (path.stat().st_size if rewrite else 0)
    free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    if needed > free:
        what = "its work parts and a rewritten cache" if rewrite else "its work parts and its place in the cache"
        raise InputError(f"{path.resolve().parent}: {_size(free)} free, but the {plan.name} stage of {path.name} needs "
                         f"about {_size(needed)} ({what}); free some space or use another --cache")


def _size(count: int) -> str:
    """Bytes in the unit that shows them: ``1.25 GB``, ``310 MB``, ``12 kB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}" if unit == "GB" else f"{count / scale:.0f} {unit}"
    return f"{count} bytes"
