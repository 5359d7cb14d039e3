"""How evenly sharded extraction spreads the speech stage's work, by audio seconds vs by count.

    .venv/bin/python benchmarks/bench_shards.py [--utterances 10039] [--batch-seconds 120]

Durations: EmoDB's real ones when ../shared/corpora/emodb is there, and an IEMOCAP-like log-normal
sample (median ~3.5 s, 0.6-35 s). The speech plan is the GPU one (120 padded seconds per batch). For each
shard count, the slowest shard's padded audio seconds over the mean (1.00 = perfect) for three splits:
units balanced by padded seconds (what `extract` does), units dealt round-robin, and the manifest's rows
cut into equal-count contiguous pieces, each planning its own batches. The slowest shard sets the time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.runtime.sharding import assign_units  # noqa: E402
from pipeline.stages.batching import plan_length_buckets  # noqa: E402

EMODB = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "emodb"


def padded_seconds(durations: np.ndarray, units: list[list[int]]) -> np.ndarray:
    return np.array([len(u) * durations[u].max() for u in units])


def imbalance(durations: np.ndarray, shards: int, batch_seconds: float) -> tuple[float, float, float]:
    """Slowest shard / mean shard for: balanced by seconds, round-robin units, contiguous rows by count."""
    units = plan_length_buckets(durations, batch_seconds, 32, 30.0)
    cost = padded_seconds(durations, units)
    by_seconds = np.bincount(assign_units(cost.tolist(), shards), weights=cost, minlength=shards)
    round_robin = np.bincount(np.arange(len(units)) % shards, weights=cost, minlength=shards)
    pieces = np.array_split(np.arange(len(durations)), shards)
    by_rows = np.array([padded_seconds(durations[p], plan_length_buckets(durations[p], batch_seconds, 32, 30.0)).sum()
                        for p in pieces])
    return tuple(float(x.max() / x.mean()) for x in (by_seconds, round_robin, by_rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=10039)
    parser.add_argument("--batch-seconds", type=float, default=120.0)
    args = parser.parse_args()
    corpora = {}
    if EMODB.is_dir():
        import soundfile

        corpora["EmoDB (real durations)"] = np.array([soundfile.info(str(p)).duration
                                                      for p in sorted(EMODB.rglob("*.wav"))])
    rng = np.random.default_rng(0)
    # IEMOCAP's rows are sorted by dialogue and time, so long and short turns are interleaved, not sorted
    corpora["IEMOCAP-like"] = np.clip(rng.lognormal(np.log(3.5), 0.7, args.utterances), 0.6, 35.0)
    for name, durations in corpora.items():
        print(f"{name}: {len(durations)} utterances, {durations.sum() / 3600:.2f} h, "
              f"batches of {args.batch_seconds:g} padded s")
        print("  shards  slowest/mean: by seconds   round-robin units   contiguous rows by count")
        for shards in (2, 4, 8, 16):
            seconds, robin, rows = imbalance(durations, shards, args.batch_seconds)
            print(f"  {shards:6d}                {seconds:6.3f}              {robin:6.3f}                {rows:6.3f}")


if __name__ == "__main__":
    main()
