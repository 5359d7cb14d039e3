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
from cache.writer import create_cache
from core.columns import manifest_splits
from core.errors import InputError
from pipeline.features.audio import file_stats
from pipeline.models.state_model import StateModelConfig
from pipeline.runtime.device import resolve_device
from pipeline.stages.prosody import ProsodyConfig, run_prosody_stage
from pipeline.stages.runner import StageWork
from pipeline.stages.speech import SpeechConfig, resolve_batch_seconds, run_speech_stage
from pipeline.stages.state import StateConfig, run_state_stage, updater_plan

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


def check_request(stages: list[str], on_error: str, manifest: pl.DataFrame) -> None:
    """Refuse unknown stages, ``--on-error`` values and a corpus the state stage cannot cross-fit, before
    any expensive work."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise InputError(f"unknown stage(s): {', '.join(unknown)} (available: {', '.join(STAGES)})")
    if on_error not in ("skip", "fail"):
        raise InputError(f"--on-error must be skip or fail, not {on_error}")
    if "state" in stages and manifest_splits(manifest) is None:  # k folds (not partitions)
        updater_plan(sorted(set(manifest["fold"].drop_nulls().to_list())))  # needs >= 3 folds


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


def check_existing(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig
                   ) -> tuple[list[str], dict[str, np.ndarray]]:
    """Stages still to run, and rows to redo in stages already there (their audio files changed).
    Raises when the cache was made from another manifest or other settings."""
    reader = CacheReader(cache_path)
    for stage in reader.stages:  # a kill can land between publishing a stage and deleting its parts
        CachePaths(cache_path).remove_stage_parts(stage)
    same_rows = reader.manifest.select("utt_id", "path").equals(manifest.select("utt_id", "path"))
    if not same_rows:
        raise InputError(f"{cache_path}: cache was built from another manifest (utterances or paths differ); "
                         "use another --cache path, or --force to replace it")
    todo, redo = [], {}
    for stage in stages:
        if stage not in reader.stages:
            todo.append(stage)
            continue
        stored = reader.provenance(stage).get("config")
        if stored != json.loads(json.dumps(_stage_config(stage, config))) and stage == "state":
            log.info("state: settings changed; recomputing the state stage only (speech and prosody are kept)")
            todo.append(stage)  # derived from the cached features in seconds to minutes: replacing it loses nothing
            continue
        if stored != json.loads(json.dumps(_stage_config(stage, config))):  # compare as stored: tuples are lists
            raise InputError(f"{cache_path}: '{stage}' was extracted with other settings ({stored}); "
                             "refusing to mix them; use another --cache path, or --force to replace it")
        if stage in ("speech", "prosody") and len(rows := changed_files(reader, stage)):
            log.info("%s: %d audio file(s) changed since extraction; re-extracting them", stage, len(rows))
            todo.append(stage)
            redo[stage] = rows
    if redo and "state" in reader.stages and "state" not in todo:
        todo.append("state")  # states depend on every utterance's features
    return todo, redo


def extract(
    cache_path: str | Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
    device: str = "auto", on_error: str = "skip", force: bool = False, work: StageWork = StageWork(),
) -> dict[str, list[Failure]]:
    """Run the missing ``stages`` into ``cache_path`` under its lock. Returns the failures of each stage
    that ran. ``work`` (from ``pipeline.launch``) publishes what shards committed instead of computing."""
    cache_path = Path(cache_path)
    check_request(stages, on_error, manifest)
    config = with_device_settings(config, device)
    if cache_path.exists() and not force and not check_existing(cache_path, manifest, stages, config)[0]:
        return {}  # complete: nothing to write, so no lock either (a read-only file system is fine)
    with CacheLock(cache_path):
        return _extract_locked(cache_path, manifest, stages, config, device, on_error, force, work)


def _extract_locked(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                    device: str, on_error: str, force: bool, work: StageWork) -> dict[str, list[Failure]]:
    paths = CachePaths(cache_path)
    if leftovers := paths.remove_leftover_temp_files():
        log.info("removed %d temporary file(s) left by an interrupted run", len(leftovers))
    if force:
        paths.remove_all()
    redo: dict[str, np.ndarray] = {}
    if cache_path.exists():
        todo, redo = check_existing(cache_path, manifest, stages, config)
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
