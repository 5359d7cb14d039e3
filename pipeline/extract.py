"""``extract``: run the stages a cache does not hold yet, refusing to mix outputs of different settings.

This module runs stages in one process under the cache's lock. How a command is spread over processes
(job-array shards, torchrun ranks) and how shards are merged is ``pipeline.launch``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from cache.journal import recover
from cache.lock import CacheLock
from cache.paths import CachePaths
from cache.reader import CacheReader
from cache.schema import Failure
from cache.writer import create_cache, replace_manifest
from core.columns import manifest_splits
from core.errors import InputError
from core.protocol import partition_folds
from pipeline.features.audio import file_stats
from pipeline.runtime.device import resolve_device
from pipeline.stages.registry import (
    STAGES,
    ExtractConfig,
    StageCall,
    identity_changes,
    missing_requirements,
    run_order,
    stage_config_dict,
)
from pipeline.stages.runner import StageWork
from pipeline.stages.speech import resolve_batch_seconds

log = logging.getLogger(__name__)


def extract_config_from_dict(data: dict) -> ExtractConfig:
    """Inverse of ``ExtractConfig.to_dict`` (as stored in a cache or a sharded run's description)."""
    return ExtractConfig.from_dict(data)


def check_request(stages: list[str], on_error: str, manifest: pl.DataFrame,
                  config: ExtractConfig | None = None, stored: list[str] | tuple[str, ...] = ()) -> None:
    """Refuse unknown stages, ``--on-error`` values, folds that contradict the partitions, a manifest a stage
    cannot run on (``StageSpec.check_request``) and a derived stage whose inputs are neither asked for nor among
    the ``stored`` stages, before any expensive work."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise InputError(f"unknown stage(s): {', '.join(unknown)} (available: {', '.join(STAGES)})")
    if on_error not in ("skip", "fail"):
        raise InputError(f"--on-error must be skip or fail, not {on_error}")
    splits = manifest_splits(manifest)
    if splits is not None and not np.array_equal(manifest["fold"].to_numpy(), partition_folds(splits)):
        raise InputError("the manifest's fold column does not follow its split column (with partitions the fold is "
                         "the test set's number, 0 on train and dev): read the manifest with read_generic_manifest, "
                         "or set fold = core.protocol.partition_folds(split)")
    config = config or ExtractConfig()
    for name in stages:
        STAGES[name].check_request(config.of(name), manifest)
    for name, missing in missing_requirements(stages, list(stored)).items():
        hint = " (the Praat set: --prosody praat,...)" if "prosody" in missing else ""
        raise InputError(f"the {name} stage reads {', '.join(missing)}{hint}, which is neither asked for nor in the "
                         f"cache: add it to --stages, or leave {name} out")


def stored_stages(cache_path: Path) -> list[str]:
    """The stages an existing cache holds (none for a new one)."""
    return CacheReader(cache_path).stages if cache_path.is_file() else []


def with_device_settings(config: ExtractConfig, device: str) -> ExtractConfig:
    """Settings that depend on the device, fixed first so the cache records what was actually used."""
    return config.replace(speech=resolve_batch_seconds(config.speech, resolve_device(device)))


def changed_files(reader: CacheReader, stage: str) -> np.ndarray:
    """Rows whose audio file's size or modification time differs from when ``stage`` processed it."""
    shapes = reader.dataset_shapes(stage)
    if "file_size" not in shapes:
        return np.zeros(0, dtype=np.int64)
    now = np.array([file_stats(p) for p in reader.manifest["path"].to_list()], dtype=np.int64).reshape(-1, 2)
    before = np.stack([reader.read(stage, "file_size"), reader.read(stage, "file_mtime_ns")], 1)
    return np.flatnonzero((now != before).any(1))


# duration_s and sample_rate are read from the audio files (a changed file is re-extracted and its row updated).
DERIVED_COLUMNS = ("duration_s", "sample_rate")


@dataclass
class Existing:
    """What an existing cache needs: stages to run, rows to redo in stages it holds (their audio files changed),
    and the new manifest in the cache's row order when its columns changed (``changed``)."""

    todo: list[str]
    redo: dict[str, np.ndarray]
    manifest: pl.DataFrame  # the given manifest, rows in the cache's order
    changed: list[str] = field(default_factory=list)


def manifest_changes(stored: pl.DataFrame, given: pl.DataFrame) -> list[str]:
    """Columns whose values differ between the stored manifest and ``given`` (the same utterances, matched by
    ``utt_id``), except the derived ``duration_s`` and ``sample_rate``."""
    joined = stored.join(given, on="utt_id", how="left", suffix="_given")
    changed = []
    for column in stored.columns:
        if column in ("utt_id", "path", *DERIVED_COLUMNS):
            continue
        old, new = joined[column], joined[f"{column}_given"]
        differ = (old.is_null() != new.is_null()) | (old != new).fill_null(False)
        if differ.any():
            changed.append(column)
    return changed


def _reduced_precision_cpu_before_fix(provenance: dict) -> bool:
    """A CPU bf16/fp16 speech stage from before convolutions were kept in fp32 (its provenance lacks the marker)."""
    precision = provenance.get("config", {}).get("precision")
    return provenance.get("device_type") == "cpu" and precision in ("bf16", "fp16") and \
        "cpu_convolutions" not in provenance


def stage_dependencies(reader: CacheReader) -> dict[str, tuple[str, ...]]:
    """The manifest columns each stored stage depends on (a derived stage's protocol and labels), by stage."""
    return {name: STAGES[name].manifest_columns(reader.provenance(name)) for name in reader.stages if name in STAGES}


def check_existing(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                   update_manifest: bool = False) -> Existing:
    """What is left to do in an existing cache for ``manifest`` and ``config``. Never writes (it runs before the
    cache's lock is held). Raises when the cache was made from other utterances, other files or other settings,
    and when a manifest column a stored stage depends on changed, unless ``update_manifest`` (the derived stages
    are then recomputed)."""
    reader = CacheReader(cache_path)
    stored = reader.manifest
    if sorted(stored["utt_id"].to_list()) != sorted(manifest["utt_id"].to_list()) or not \
            stored.select("utt_id", "path").join(manifest.select("utt_id", "path"), on="utt_id") \
            .filter(pl.col("path") != pl.col("path_right")).is_empty():
        raise InputError(f"{cache_path}: cache was built from another manifest (utterances or paths differ); "
                         "use another --cache path, or --force to replace it")
    aligned = stored.select("utt_id").join(manifest, on="utt_id", how="left", maintain_order="left")
    changed = manifest_changes(stored, manifest)
    hit_by_stage = {name: [c for c in changed if c in columns] for name, columns in stage_dependencies(reader).items()}
    hit = sorted({c for columns in hit_by_stage.values() for c in columns})
    if hit and not update_manifest:
        raise InputError(f"{cache_path}: the manifest changed since extraction in column(s) {', '.join(changed)}; the "
                         f"stored dialogue states depend on {', '.join(hit)} (folds, speakers and dialogue order decide "
                         "them, and labels train the cross-fitted kinds), so they would have to be recomputed: pass "
                         "--update-manifest to store the new manifest and recompute the state stage (speech and "
                         "prosody are kept), or use another --cache")
    todo, redo = [], {}
    for stage in stages:
        spec = STAGES[stage]
        if stage not in reader.stages:
            todo.append(stage)
            continue
        changed_identity = identity_changes(stage, reader.provenance(stage))
        if changed_identity:
            key, (was, now) = next(iter(changed_identity.items()))
            what = f"{was} -> {now}" if key != "names" else "its feature names changed"
            raise InputError(f"{cache_path}: '{stage}' was computed by another version of its feature set ({key}: "
                             f"{what}); refusing to mix rows of both: extract into another --cache, or --force to "
                             "replace this one")
        stored_config = reader.provenance(stage).get("config")
        same = stored_config == json.loads(json.dumps(stage_config_dict(stage, config)))  # as stored: tuples are lists
        if not same and not spec.per_utterance:
            log.info("%s: settings changed; recomputing it only (the stages it reads are kept)", stage)
            todo.append(stage)  # derived from the cached features in seconds to minutes: replacing it loses nothing
            continue
        if not same:
            raise InputError(f"{cache_path}: '{stage}' was extracted with other settings ({stored_config}); "
                             "refusing to mix them; use another --cache path, or --force to replace it")
        if stage == "speech" and _reduced_precision_cpu_before_fix(reader.provenance("speech")):
            raise InputError(f"{cache_path}: the speech stage was extracted in {stored_config['precision']} on a CPU "
                             "before its convolutions were kept in fp32 (on Intel CPUs with AMX they came out wrong); "
                             "extract it again: --force (or --precision fp32 into another --cache)")
        if spec.per_utterance and len(rows := changed_files(reader, stage)):
            log.info("%s: %d audio file(s) changed since extraction; re-extracting them", stage, len(rows))
            todo.append(stage)
            redo[stage] = rows
    for name in reader.stages:  # derived stages depend on every utterance's features, and on the columns hit
        spec = STAGES.get(name)
        if spec is not None and not spec.per_utterance and name not in todo and \
                (hit_by_stage.get(name) or any(r in redo for r in spec.requires)):
            todo.append(name)
    return Existing(run_order(todo), redo, aligned, changed)


def extract(
    cache_path: str | Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
    device: str = "auto", on_error: str = "skip", force: bool = False, work: StageWork = StageWork(),
    update_manifest: bool = False,
) -> dict[str, list[Failure]]:
    """Run the missing ``stages`` into ``cache_path`` under its lock. Returns the failures of each stage
    that ran. ``work`` (from ``pipeline.launch``) publishes what shards committed instead of computing. A manifest
    whose labels changed is stored in place; one whose changes invalidate the stored states is refused unless
    ``update_manifest`` (``check_existing``)."""
    cache_path = Path(cache_path)
    check_request(stages, on_error, manifest, config, [] if force else stored_stages(cache_path))
    config = with_device_settings(config, device)
    if cache_path.exists() and not force:
        existing = check_existing(cache_path, manifest, stages, config, update_manifest)
        if not existing.todo and not existing.changed:
            return {}  # complete: nothing to write, so no lock either (a read-only file system is fine)
    with CacheLock(cache_path):
        return _extract_locked(cache_path, manifest, stages, config, device, on_error, force, work, update_manifest)


def _extract_locked(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                    device: str, on_error: str, force: bool, work: StageWork,
                    update_manifest: bool = False) -> dict[str, list[Failure]]:
    paths = CachePaths(cache_path)
    if leftovers := paths.remove_leftover_temp_files():
        log.info("removed %d temporary file(s) left by an interrupted run", len(leftovers))
    recover(cache_path)  # a stage an interrupted run was adding in place is undone (its parts are kept)
    if force:
        paths.remove_all()
    redo: dict[str, np.ndarray] = {}
    if cache_path.exists():
        for stage in CacheReader(cache_path).stages:  # a kill can land between publishing a stage and deleting
            paths.remove_stage_parts(stage)  # its parts; only now, under the lock, may they be removed
        existing = check_existing(cache_path, manifest, stages, config, update_manifest)
        todo, redo, manifest = existing.todo, existing.redo, existing.manifest  # rows in the cache's order
        if existing.changed:
            replace_manifest(cache_path, manifest)
            derived = [n for n in todo if not STAGES[n].per_utterance]
            log.info("manifest: column(s) %s updated in the cache%s", ", ".join(existing.changed),
                     f"; recomputing {', '.join(derived)}" if derived else " (no stored stage depends on them)")
    else:
        create_cache(cache_path, manifest, config.to_dict())
        todo = list(stages)
    failures: dict[str, list[Failure]] = {}
    for name in run_order(todo):
        spec = STAGES[name]
        rows = redo.get(name) if spec.patchable(config.of(name)) else None  # e.g. ragged frames: rebuilt whole
        failures[name] = spec.run(StageCall(str(cache_path), manifest, config.of(name), resolve_device(device),
                                            on_error, only_rows=rows, work=work))
    paths.remove_run_description()  # a sharded run is complete
    return failures
