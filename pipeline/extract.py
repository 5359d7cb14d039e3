"""``extract``: run the stages a cache does not hold yet, refusing to mix outputs of different settings.

This module runs stages in one process under the cache's lock. How a command is spread over processes
(job-array shards, torchrun ranks) and how shards are merged is ``pipeline.launch``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from cache.lock import CacheLock
from cache.paths import CachePaths
from cache.reader import CacheReader
from cache.schema import Failure
from cache.writer import create_cache, replace_manifest
from core.columns import manifest_splits
from core.errors import InputError
from core.protocol import partition_folds
from pipeline.features.audio import file_stats
from pipeline.models.state_model import StateModelConfig
from pipeline.runtime.device import resolve_device
from pipeline.stages.prosody import ProsodyConfig, run_prosody_stage
from pipeline.stages.runner import StageWork
from pipeline.stages.speech import SpeechConfig, resolve_batch_seconds, run_speech_stage
from pipeline.stages.state import CROSS_FITTED, StateConfig, run_state_stage, state_columns

STAGES = ("speech", "prosody", "state")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractConfig:
    """All settings of ``extract`` (saved in the cache; each stage also stores its own part)."""

    speech: SpeechConfig = field(default_factory=SpeechConfig)
    prosody: ProsodyConfig = field(default_factory=ProsodyConfig)
    state: StateConfig = field(default_factory=StateConfig)


def extract_config_from_dict(data: dict) -> ExtractConfig:
    """Inverse of ``asdict(ExtractConfig)`` (as stored in a cache or a sharded run's description)."""
    speech = {**data["speech"], "frame_layers": tuple(data["speech"]["frame_layers"])}
    state = {**data["state"], "model": StateModelConfig(**data["state"]["model"])}
    return ExtractConfig(SpeechConfig(**speech), ProsodyConfig(**data["prosody"]), StateConfig(**state))


def check_request(stages: list[str], on_error: str, manifest: pl.DataFrame, state_kind: str = "mamba") -> None:
    """Refuse unknown stages, ``--on-error`` values, folds that contradict the partitions, and a corpus the state
    stage cannot cross-fit, before any expensive work (the kinds that learn from labels cross-fit over folds: they need 3)."""
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
    if "state" in stages and state_kind in CROSS_FITTED and splits is None:  # k folds
        folds = sorted(set(manifest["fold"].drop_nulls().to_list()))
        if len(folds) < 3:
            raise InputError(f"--state-kind {state_kind} learns from labels and is cross-fitted over folds: it needs at "
                             f"least 3 folds (the corpus has {len(folds)}); use --state-kind ema-features")


def with_device_settings(config: ExtractConfig, device: str) -> ExtractConfig:
    """Settings that depend on the device, fixed first so the cache records what was actually used."""
    return replace(config, speech=resolve_batch_seconds(config.speech, resolve_device(device)))


def _stage_config(stage: str, config: ExtractConfig) -> dict:
    settings = asdict(getattr(config, stage))
    if stage == "prosody":
        settings.pop("workers")  # the worker count never changes results
    return settings


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


def state_dependencies(reader: CacheReader) -> tuple[str, ...]:
    """The manifest columns the cache's stored state stage depends on (none without one)."""
    if "state" not in reader.stages:
        return ()
    return state_columns(reader.provenance("state").get("kind", "mamba"))


def check_existing(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                   update_manifest: bool = False) -> Existing:
    """What is left to do in an existing cache for ``manifest`` and ``config``. Never writes (it runs before the
    cache's lock is held). Raises when the cache was made from other utterances, other files or other settings,
    and when a manifest column a stored stage depends on changed, unless ``update_manifest`` (the state stage is
    then recomputed)."""
    reader = CacheReader(cache_path)
    stored = reader.manifest
    if sorted(stored["utt_id"].to_list()) != sorted(manifest["utt_id"].to_list()) or not \
            stored.select("utt_id", "path").join(manifest.select("utt_id", "path"), on="utt_id") \
            .filter(pl.col("path") != pl.col("path_right")).is_empty():
        raise InputError(f"{cache_path}: cache was built from another manifest (utterances or paths differ); "
                         "use another --cache path, or --force to replace it")
    aligned = stored.select("utt_id").join(manifest, on="utt_id", how="left", maintain_order="left")
    changed = manifest_changes(stored, manifest)
    hit = [c for c in changed if c in state_dependencies(reader)]
    if hit and not update_manifest:
        raise InputError(f"{cache_path}: the manifest changed since extraction in column(s) {', '.join(changed)}; the "
                         f"stored dialogue states depend on {', '.join(hit)} (folds, speakers and dialogue order decide "
                         "them, and labels train the cross-fitted kinds), so they would have to be recomputed: pass "
                         "--update-manifest to store the new manifest and recompute the state stage (speech and "
                         "prosody are kept), or use another --cache")
    todo, redo = [], {}
    for stage in stages:
        if stage not in reader.stages:
            todo.append(stage)
            continue
        stored_config = reader.provenance(stage).get("config")
        if stored_config != json.loads(json.dumps(_stage_config(stage, config))) and stage == "state":
            log.info("state: settings changed; recomputing the state stage only (speech and prosody are kept)")
            todo.append(stage)  # derived from the cached features in seconds to minutes: replacing it loses nothing
            continue
        if stored_config != json.loads(json.dumps(_stage_config(stage, config))):  # as stored: tuples are lists
            raise InputError(f"{cache_path}: '{stage}' was extracted with other settings ({stored_config}); "
                             "refusing to mix them; use another --cache path, or --force to replace it")
        if stage == "speech" and _reduced_precision_cpu_before_fix(reader.provenance("speech")):
            raise InputError(f"{cache_path}: the speech stage was extracted in {stored_config['precision']} on a CPU "
                             "before its convolutions were kept in fp32 (on Intel CPUs with AMX they came out wrong); "
                             "extract it again: --force (or --precision fp32 into another --cache)")
        if stage in ("speech", "prosody") and len(rows := changed_files(reader, stage)):
            log.info("%s: %d audio file(s) changed since extraction; re-extracting them", stage, len(rows))
            todo.append(stage)
            redo[stage] = rows
    if (redo or hit) and "state" in reader.stages and "state" not in todo:
        todo.append("state")  # states depend on every utterance's features, and on the columns in ``hit``
    return Existing(todo, redo, aligned, changed)


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
    check_request(stages, on_error, manifest, config.state.kind)
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
            log.info("manifest: column(s) %s updated in the cache%s", ", ".join(existing.changed),
                     "; recomputing the state stage" if "state" in todo else " (no stored stage depends on them)")
    else:
        create_cache(cache_path, manifest, asdict(config))
        todo = list(stages)
    if config.speech.frame_layers and "speech" in redo:
        redo.pop("speech")  # ragged frame sequences are rebuilt whole rather than patched
    failures: dict[str, list[Failure]] = {}
    if "speech" in todo:
        failures["speech"] = run_speech_stage(str(cache_path), manifest, config.speech, resolve_device(device), on_error,
                                              only_rows=redo.get("speech"), work=work)
    if "prosody" in todo:
        failures["prosody"] = run_prosody_stage(str(cache_path), manifest, config.prosody, on_error,
                                                only_rows=redo.get("prosody"), work=work)
    if "state" in todo:
        run_state_stage(str(cache_path), config.state, resolve_device(device))
        failures["state"] = []  # rows without speech or prosody get no state (ok = False), nothing new fails
    paths.remove_run_description()  # a sharded run is complete
    return failures
