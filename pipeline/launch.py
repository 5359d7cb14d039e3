"""How an ``extract`` command runs: in one process, as one shard of a job array, or as torchrun ranks.

Shards split each stage's unit plan (``pipeline.runtime.sharding``) and commit their units into the
cache's shared parts folder; nothing is published until every unit is there. Then ``merge_shards`` (job
arrays: ``cache merge``) or rank 0 (torchrun) publishes the stages and runs the state stage, exactly as
a resumed single-process run would. torch.distributed (gloo, CPU-only collectives) is used for one thing:
a barrier between the sharded work and the publishing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import polars as pl

from cache.lock import CacheLock
from cache.paths import CachePaths, temp_for
from cache.reader import CacheReader
from cache.schema import Failure
from core.errors import InputError
from pipeline.extract import (
    ExtractConfig,
    check_existing,
    check_request,
    extract,
    extract_config_from_dict,
    stored_stages,
    with_device_settings,
)
from pipeline.runtime.device import resolve_device
from pipeline.runtime.sharding import Shard, parse_shard, torchrun_shard
from pipeline.stages.registry import STAGES, StageCall, run_order
from pipeline.stages.runner import StageWork

# Ranks that finish early wait for the slowest one; shards are balanced, but corpora can take hours.
BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class Launched:
    """What an ``extract`` command did: its failures per stage, its shard (None: one process), and
    whether this process published the cache (False: a shard waits for ``cache merge`` or rank 0)."""

    failures: dict[str, list[Failure]]
    shard: Shard | None
    published: bool
    torchrun: bool


def launch_extract(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                   device: str = "auto", on_error: str = "skip", force: bool = False,
                   shard_text: str | None = None, update_manifest: bool = False,
                   write_block_bytes: int = 0) -> Launched:
    """Dispatch by how the command was started: under torchrun each rank takes its shard; with
    ``--shard i/n`` compute that shard only; otherwise everything in this process. ``write_block_bytes``: memory
    for writing a stage into the cache (0: from the machine, ``pipeline.stages.row_blocks``)."""
    rank_shard = torchrun_shard()
    if (shard_text or rank_shard) and force:
        raise InputError("--force cannot be combined with sharding: delete the cache and its .parts folder first")
    if rank_shard is not None:
        if shard_text:
            raise InputError("--shard is for job arrays; under torchrun every rank takes its shard by itself")
        failures = extract_on_all_ranks(cache_path, manifest, stages, config, rank_shard, device, on_error,
                                        update_manifest, write_block_bytes)
        return Launched(failures, rank_shard, published=rank_shard.index == 0, torchrun=True)
    if shard_text:
        shard = parse_shard(shard_text)
        failures = extract_shard(cache_path, manifest, stages, config, shard, device, on_error, update_manifest)
        return Launched(failures, shard, published=False, torchrun=False)
    failures = extract(cache_path, manifest, stages, config, device=device, on_error=on_error, force=force,
                       update_manifest=update_manifest, work=StageWork(write_block_bytes=write_block_bytes))
    return Launched(failures, None, published=True, torchrun=False)


def _describe_sharded_run(cache_path: Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                          on_error: str, shard: Shard, update_manifest: bool = False) -> None:
    """Write (first shard) or check (the others) the manifest and settings every shard must share."""
    run_dir = CachePaths(cache_path).run_description
    run_dir.mkdir(parents=True, exist_ok=True)
    description = json.dumps({"config": config.to_dict(), "stages": stages, "on_error": on_error,
                              "shards": shard.count, "update_manifest": update_manifest}, sort_keys=True)
    for name, write, same in (
        ("extract.json", lambda f: Path(f).write_text(description), lambda f: Path(f).read_text() == description),
        ("manifest.parquet", manifest.write_parquet, lambda f: pl.read_parquet(f).equals(manifest)),
    ):
        path = run_dir / name
        if not path.is_file():
            tmp = temp_for(path)
            write(tmp)
            os.replace(tmp, path)
        elif not same(path):
            raise InputError(f"{path}: another shard of this cache was started with a different "
                             f"{name.split('.')[0]} (every shard needs the same corpus, stages, settings and "
                             "shard count)")


def extract_shard(cache_path: str | Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                  shard: Shard, device: str = "auto", on_error: str = "skip",
                  update_manifest: bool = False) -> dict[str, list[Failure]]:
    """Compute shard ``shard`` of the per-utterance stages; publishing (and the derived stages, which run once) waits
    for ``merge_shards``."""
    cache_path = Path(cache_path)
    check_request(stages, on_error, manifest, config, stored_stages(cache_path))
    config = with_device_settings(config, device)
    with CacheLock(cache_path, shard_tag=shard.file_tag):  # the same shard twice is refused; others run
        todo = [s for s in run_order(stages) if STAGES[s].per_utterance]
        if cache_path.exists():
            # refuses another manifest or other settings; the rows keep the cache's order
            manifest = check_existing(cache_path, manifest, stages, config, update_manifest).manifest
            # stages the cache holds are not sharded again; changed files there are redone by the merge
            todo = [s for s in todo if s not in CacheReader(cache_path).stages]
        _describe_sharded_run(cache_path, manifest, stages, config, on_error, shard, update_manifest)
        work = StageWork(shard=shard)
        return {name: STAGES[name].run(StageCall(str(cache_path), manifest, config.of(name), resolve_device(device),
                                                 on_error, work=work)) for name in todo}


def merge_shards(cache_path: str | Path, device: str = "auto") -> dict[str, list[Failure]]:
    """Publish what every ``extract --shard i/n`` of ``cache_path`` committed, then run the derived stages.

    Raises ``ShardsUnfinished`` (naming the first missing unit) while any shard still has work to do.
    """
    run_dir = CachePaths(cache_path).run_description
    try:
        description = json.loads((run_dir / "extract.json").read_text())
        manifest = pl.read_parquet(run_dir / "manifest.parquet")
    except Exception as err:  # noqa: BLE001 - missing, or damaged (polars raises its own types)
        raise InputError(f"{run_dir}: no sharded extraction of {cache_path} to merge ({err})") from err
    config = extract_config_from_dict(description["config"])
    return extract(cache_path, manifest, description["stages"], config, device=device,
                   on_error=description["on_error"], update_manifest=description.get("update_manifest", False),
                   work=StageWork(compute_missing=False, shard_count=description["shards"]))


def extract_on_all_ranks(cache_path: str | Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                         shard: Shard, device: str = "auto", on_error: str = "skip",
                         update_manifest: bool = False, write_block_bytes: int = 0) -> dict[str, list[Failure]]:
    """Run by every torchrun process. Returns this rank's shard failures, and on rank 0 the published
    stages' failures as well (keyed by stage; rank 0's entries replace its shard's)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        failures = extract_shard(cache_path, manifest, stages, config, shard, device=device, on_error=on_error,
                                 update_manifest=update_manifest)
        dist.barrier()  # every unit of every shard is committed past this point
        if shard.index == 0:
            failures = extract(cache_path, manifest, stages, config, device=device, on_error=on_error,
                               update_manifest=update_manifest,
                               work=StageWork(compute_missing=False, shard_count=shard.count,
                                              write_block_bytes=write_block_bytes))
        dist.barrier()  # everyone returns once the cache is whole, so the launcher's exit means "done"
        return failures
    finally:
        dist.destroy_process_group()
