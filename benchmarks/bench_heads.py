"""Head training speed at IEMOCAP scale on this machine's CPU, from a synthetic cache of the real shape.

    .venv/bin/python benchmarks/bench_heads.py [--utterances 10039] [--out /tmp/bench_heads] [--spread-seeds N]

Cache: 10,039 utterances in 5 folds of 2 speakers, speech [N, 25, 1024] float16 (wavlm-large shape),
67 prosody features, 64-d states per fold, with planted structure so training runs its normal course.
Prints: one fold of train-heads (as the `cli.py train-heads` command, and in this process), five folds of one
variant, the 3-variant x 5-fold ablation, and loading a fold's arrays from the cache vs reading the same bytes
from a raw .npy file in the same run. Early stopping decides how many epochs a fold trains (it varies with the
fold and the seed), so the epochs and the time per epoch are printed beside each time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache import CacheReader, add_stage, create_cache  # noqa: E402
from heads.studies.ablation import run_ablation  # noqa: E402
from heads.training.experiment import train_fold  # noqa: E402
from heads.training.features import load_corpus_arrays  # noqa: E402
from heads.training.runs import read_run  # noqa: E402
from heads.training.train import TrainConfig  # noqa: E402
from heads.training.variants import parse_variant  # noqa: E402
from pipeline.corpora.manifest import normalise_manifest  # noqa: E402


def build_cache(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    speakers = np.arange(n) * 10 // n
    valence, arousal = rng.standard_normal(n), rng.standard_normal(n)
    speech = rng.standard_normal((n, 25, 1024), dtype=np.float32).astype(np.float16)
    speech[:, 12:, :8] += (arousal[:, None, None] * 1.5).astype(np.float16)
    prosody = rng.standard_normal((n, 67)).astype(np.float32)
    prosody[:, :4] += valence[:, None]
    manifest = normalise_manifest(pl.DataFrame({
        "utt_id": [f"u{i:06d}" for i in range(n)], "path": [f"/bench/u{i:06d}.wav" for i in range(n)],
        "duration_s": np.full(n, 4.5), "sample_rate": np.full(n, 16000), "speaker": [f"s{s}" for s in speakers],
        "dialog_id": [f"d{i // 66:04d}" for i in range(n)], "start_s": np.arange(n, dtype=float),
        "fold": speakers // 2 + 1, "valence": 3 + 0.7 * valence, "arousal": 3 + 0.7 * arousal}))
    create_cache(path, manifest, {"benchmark": True})
    ok = np.ones(n, bool)
    add_stage(path, "speech", {"pooled": speech, "ok": ok}, {"model": {"model_id": "synthetic"}}, [])
    add_stage(path, "prosody", {"values": prosody, "defined": np.ones_like(prosody, bool), "ok": ok,
                                "names": np.array([f"p{i}" for i in range(67)], dtype=object)}, {}, [])
    states = {f"fold_{k}": rng.standard_normal((n, 64)).astype(np.float32) for k in range(1, 6)}
    add_stage(path, "state", {**states, "ok": ok}, {}, [])
    np.save(path.with_suffix(".raw_speech.npy"), speech)
    np.save(path.with_suffix(".raw_prosody.npy"), prosody)
    np.save(path.with_suffix(".raw_state.npy"), np.stack(list(states.values())))


def epochs_summary(runs: list[Path]) -> str:
    """Early stopping decides how many epochs a fold trains, so print them with the time per epoch."""
    seeds = [record for run in runs for record in read_run(run)[0]["metrics_per_seed"].values()]
    epochs = [s["epochs_trained"] for s in seeds]
    per_epoch = sum(s["train_seconds"] for s in seeds) / sum(epochs)
    return f"epochs trained {epochs}, {per_epoch:.2f} s per epoch (saving and predicting included)"


def timed(fn):  # noqa: ANN001, ANN201
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def main() -> None:
    from pipeline.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # as cli.py does, so the numbers are what users get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=10039)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_heads"))
    parser.add_argument("--spread-seeds", type=int, default=0,
                        help="also train folds 1-5 with seeds 1..N and print the spread of epochs and fold times")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "bench.h5"
    build_seconds, _ = timed(lambda: build_cache(cache, args.utterances))
    print(f"synthetic cache: {args.utterances} utterances, speech [N, 25, 1024] float16 ({build_seconds:.1f} s to write)")

    # Loading: the cache reader vs np.load of the same bytes, alternated three times, best of each.
    reader = CacheReader(cache)
    cache_times, raw_times = [], []
    for _ in range(3):
        cache_times.append(timed(lambda: load_corpus_arrays(reader))[0])
        raw_times.append(timed(lambda: [np.load(cache.with_suffix(s)) for s in
                                        (".raw_speech.npy", ".raw_prosody.npy", ".raw_state.npy")])[0])
    arrays = load_corpus_arrays(reader)
    ratio = min(raw_times) / min(cache_times)
    print(f"load all arrays: cache {min(cache_times):.2f} s, raw .npy {min(raw_times):.2f} s; "
          f"speed ratio raw/cache = {ratio:.2f} (target >= 0.5)")

    config = TrainConfig(variant="separate-attn")
    command = [sys.executable, str(Path(__file__).resolve().parents[1] / "cli.py"), "train-heads", "--cache", str(cache),
               "--fold", "1", "--out", str(args.out / "cli_run"), "--overwrite"]
    cli_seconds, _ = timed(lambda: subprocess.run(command, check=True, capture_output=True))
    print(f"train-heads, one fold, separate-attn, as a command (new process: imports, reading the cache, training, "
          f"writing the run): {cli_seconds:.1f} s (target <= 10 s); {epochs_summary([args.out / 'cli_run'])}")
    one_fold, _ = timed(lambda: train_fold(arrays, 1, config, [0], args.out / "one", overwrite=True))
    print(f"  the same fold in this process: {one_fold:.1f} s")
    five, _ = timed(lambda: [train_fold(arrays, k, config, [0], args.out / f"five{k}", overwrite=True)
                             for k in range(1, 6)])
    print(f"five folds, separate-attn: {five:.1f} s (target <= 60 s); "
          f"{epochs_summary([args.out / f'five{k}' for k in range(1, 6)])}")
    if args.spread_seeds:
        seeds = list(range(1, args.spread_seeds + 1))
        for k in range(1, 6):
            train_fold(arrays, k, config, seeds, args.out / f"spread{k}", overwrite=True)
        records = [r for k in range(1, 6) for run in (args.out / f"five{k}", args.out / f"spread{k}")
                   for r in read_run(run)[0]["metrics_per_seed"].values()]
        epochs, seconds = [r["epochs_trained"] for r in records], [r["train_seconds"] for r in records]
        print(f"spread over folds 1-5 x seeds 0-{seeds[-1]} ({len(records)} runs, in this process): epochs "
              f"{min(epochs)}-{max(epochs)} (mean {np.mean(epochs):.1f}), one fold {min(seconds):.1f}-{max(seconds):.1f} s "
              f"(mean {np.mean(seconds):.1f})")
    configs = [parse_variant(v, TrainConfig()) for v in ("shared", "separate", "separate-attn")]
    ablation, (markdown, _, _) = timed(lambda: run_ablation(cache, configs, [1, 2, 3, 4, 5], [0], args.out / "ablation",
                                                            overwrite=True))
    print(f"ablation, 3 variants x 5 folds (cache loaded once, evaluation and plots included): {ablation:.1f} s "
          f"(target <= 180 s)")
    print(markdown)


if __name__ == "__main__":
    main()
