"""Flip bits in copies of a cache and count the outcomes: an error, the same data, or different data.

    .venv/bin/python scripts/damage_sweep.py --copies 4000 --flips 1 --seed 0

The cache is the one ``tests/test_damaged_cache.py`` uses (the planted cache of 12 utterances per speaker
plus a state stage and a failure). Each copy gets ``--flips`` random single-bit flips anywhere in the file;
then everything a user can read from it (manifest, failures, config, every stage's provenance and
datasets, through ``CacheReader``) is compared with the original. "different" is the outcome that must
never happen: data read without an error that differs from what was written.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--flips", type=int, default=1, help="bit flips per copy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from cache import CacheReader, Failure, add_stage
    from core.errors import InputError
    from tests.synth_cache import planted_cache
    from tests.test_damaged_cache import everything, same

    with tempfile.TemporaryDirectory() as tmp:
        original = planted_cache(Path(tmp) / "c.h5", n_per_speaker=12)
        n = len(CacheReader(original))
        add_stage(original, "state", {"fold_1": np.ones((n, 4), np.float32), "ok": np.ones(n, bool)},
                  {"note": "a state"}, [Failure("u00001", "state", "/x.wav", "a reason")])
        reference, data = everything(original), original.read_bytes()
        rng = np.random.default_rng(args.seed)
        damaged = Path(tmp) / "damaged.h5"
        outcomes = {"error": 0, "same": 0, "different": 0}
        for _ in range(args.copies):
            copy = bytearray(data)
            for offset in rng.integers(0, len(copy), args.flips):
                copy[offset] ^= 1 << int(rng.integers(0, 8))
            damaged.write_bytes(bytes(copy))
            try:
                outcome = "same" if same(everything(damaged), reference) else "different"
            except InputError:
                outcome = "error"
            outcomes[outcome] += 1
    print(f"cache of {len(data)} bytes, {args.copies} copies x {args.flips} bit flip(s), seed {args.seed}: "
          + ", ".join(f"{k} {v}" for k, v in outcomes.items()))


if __name__ == "__main__":
    main()
