"""``extract`` under torchrun: every rank computes its shard, then rank 0 publishes and runs the state stage.

torch.distributed (gloo, CPU-only collectives) is used for one thing: a barrier between the sharded
work and the publishing; the arrays travel through the shared file system as committed unit files.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import torch.distributed as dist

from cache.schema import Failure
from pipeline.extract import ExtractConfig, extract
from pipeline.sharding import Shard

# Ranks that finish early wait for the slowest one; shards are balanced, but corpora can take hours.
BARRIER_TIMEOUT = timedelta(hours=48)


def extract_on_all_ranks(cache_path: str | Path, manifest: pl.DataFrame, stages: list[str], config: ExtractConfig,
                         shard: Shard, device: str = "auto", on_error: str = "skip") -> dict[str, list[Failure]]:
    """Run by every torchrun process. Returns this rank's shard failures, and on rank 0 the published
    stages' failures as well (keyed by stage; rank 0's entries replace its shard's)."""
    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        failures = extract(cache_path, manifest, stages, config, device=device, on_error=on_error, shard=shard)
        dist.barrier()  # every unit of every shard is committed past this point
        if shard.index == 0:
            failures = extract(cache_path, manifest, stages, config, device=device, on_error=on_error,
                               compute_missing=False, shard_count=shard.count)
        dist.barrier()  # everyone returns once the cache is whole, so the launcher's exit means "done"
        return failures
    finally:
        dist.destroy_process_group()
