"""``extract``: run the stages a cache does not hold yet, refusing to mix outputs of different settings."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from cache.lock import CacheLock
from cache.parts import PartStore, remove_empty_parts_dir
from cache.reader import CacheReader
from cache.schema import Failure
from cache.writer import create_cache, remove_leftover_temp_files
from pipeline.audio import file_stats
from pipeline.problems import InputError
from pipeline.prosody_stage import ProsodyConfig, run_prosody_stage
from pipeline.sharding import Shard
from pipeline.speech_stage import SpeechConfig, resolve_batch_seconds, run_speech_stage
from pipeline.stage_runner import StageWork
from pipeline.state_model import StateModelConfig
from pipeline.state_stage import StateConfig, run_state_stage

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


def resolve_device(device: str) -> torch.device:
    """``auto`` = CUDA when available (the local rank's GPU under torchrun), else CPU."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here (use --device cpu or auto)")
    return torch.device(device)


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


def _check_existing(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig
                    ) -> tuple[list[str], dict[str, np.ndarray]]:
    """Stages still to run, and rows to redo in stages already there (their audio files changed).
    Raises when the cache was made from another manifest or other settings."""
    reader = CacheReader(cache_path)
    PartStore.remove_finished(cache_path, reader.stages)
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
    device: str = "auto", on_error: str = "skip", force: bool = False, shard: Shard | None = None,
    compute_missing: bool = True, shard_count: int = 0,
) -> dict[str, list[Failure]]:
    """Run the missing ``stages`` into ``cache_path``. Returns the failures of each stage that ran.

    With ``shard``, compute only that shard's part of the speech and prosody stages (see
    ``pipeline.sharding``); the state stage and the publishing into the cache wait for a run without a
    shard (or ``merge_shards``). ``compute_missing=False`` refuses to compute anything shards left undone.
    """
    cache_path = Path(cache_path)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise InputError(f"unknown stage(s): {', '.join(unknown)} (available: {', '.join(STAGES)})")
    if on_error not in ("skip", "fail"):
        raise InputError(f"--on-error must be skip or fail, not {on_error}")
    # Settings that depend on the device are fixed first, so the cache records what was actually used.
    config = replace(config, speech=resolve_batch_seconds(config.speech, resolve_device(device)))
    if shard is not None:
        with CacheLock(f"{cache_path}.{shard.file_tag}"):  # the same shard twice is refused; others run
            return _extract_shard(cache_path, manifest, stages, config, device, on_error, shard)
    with CacheLock(cache_path):
        return _extract_locked(cache_path, manifest, stages, config, device, on_error, force,
                               StageWork(compute_missing=compute_missing, shard_count=shard_count))


RUN_DIR = "run"  # <cache>.parts/run: what a sharded extraction was asked to do, for `cache merge`


def _describe_sharded_run(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                          on_error: str, shard: Shard) -> None:
    """Write (first shard) or check (the others) the manifest and settings every shard must share."""
    run_dir = Path(f"{cache_path}.parts") / RUN_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    description = json.dumps({"config": asdict(config), "stages": stages, "on_error": on_error,
                              "shards": shard.count}, sort_keys=True)
    for name, write, same in (
        ("extract.json", lambda f: Path(f).write_text(description), lambda f: Path(f).read_text() == description),
        ("manifest.parquet", manifest.write_parquet, lambda f: pl.read_parquet(f).equals(manifest)),
    ):
        path = run_dir / name
        if not path.is_file():
            tmp = run_dir / f".{name}.tmp-{os.getpid()}"
            write(tmp)
            os.replace(tmp, path)
        elif not same(path):
            raise InputError(f"{path}: another shard of this cache was started with a different "
                             f"{name.split('.')[0]} (every shard needs the same corpus, stages, settings and "
                             "shard count)")


def _extract_shard(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                   device: str, on_error: str, shard: Shard) -> dict[str, list[Failure]]:
    todo = [s for s in ("speech", "prosody") if s in stages]
    if cache_path.exists():
        _check_existing(cache_path, manifest, stages, config)  # refuses another manifest or other settings
        # stages the cache holds are not sharded again; changed files there are redone by the merge
        todo = [s for s in todo if s not in CacheReader(cache_path).stages]
    _describe_sharded_run(cache_path, manifest, stages, config, on_error, shard)
    work = StageWork(shard=shard)
    failures: dict[str, list[Failure]] = {}
    if "speech" in todo:
        failures["speech"] = run_speech_stage(str(cache_path), manifest, config.speech, resolve_device(device),
                                              on_error, work=work)
    if "prosody" in todo:
        failures["prosody"] = run_prosody_stage(str(cache_path), manifest, config.prosody, on_error, work=work)
    return failures


def merge_shards(cache_path: str | Path, device: str = "auto") -> dict[str, list[Failure]]:
    """Publish what every ``extract --shard i/n`` of ``cache_path`` committed, then run the state stage.

    Raises ``ShardsUnfinished`` (naming the first missing unit) while any shard still has work to do.
    """
    run_dir = Path(f"{cache_path}.parts") / RUN_DIR
    try:
        description = json.loads((run_dir / "extract.json").read_text())
        manifest = pl.read_parquet(run_dir / "manifest.parquet")
    except Exception as err:  # noqa: BLE001 - missing, or damaged (polars raises its own types)
        raise InputError(f"{run_dir}: no sharded extraction of {cache_path} to merge ({err})") from err
    config = extract_config_from_dict(description["config"])
    return extract(cache_path, manifest, description["stages"], config, device=device,
                   on_error=description["on_error"], compute_missing=False, shard_count=description["shards"])


def _extract_locked(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                    device: str, on_error: str, force: bool, work: StageWork) -> dict[str, list[Failure]]:
    if leftovers := remove_leftover_temp_files(cache_path):
        log.info("removed %d temporary file(s) left by an interrupted run", len(leftovers))
    if force:
        cache_path.unlink(missing_ok=True)
        shutil.rmtree(f"{cache_path}.parts", ignore_errors=True)
    redo: dict[str, np.ndarray] = {}
    if cache_path.exists():
        todo, redo = _check_existing(cache_path, manifest, stages, config)
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
    shutil.rmtree(Path(f"{cache_path}.parts") / RUN_DIR, ignore_errors=True)  # a sharded run is complete
    remove_empty_parts_dir(cache_path)
    return failures
