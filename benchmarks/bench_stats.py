"""Speed of the statistics behind eval and ablate: speaker-bootstrap intervals and paired comparisons.

    .venv/bin/python benchmarks/bench_stats.py [--utterances 10000] [--speakers 50] [--variants 8] [--seeds 3]

Synthetic test predictions of the given size (5 folds, speakers split evenly among them), then
``heads.evaluate.summarise`` with 2000 resamples: every label's intervals (per fold, mean over folds,
pooled) and every other label's paired comparison with the first (bootstrap interval and speaker-permutation
p-value, 10,000 sampled swaps at 50 speakers). Target: <= 5 s on the 2-core CPU. Plots are not included.

``--calibration`` instead simulates experiments in which two variants are equally good (their predictions
exchangeable: a shared prediction plus each its own noise; 5 folds, 2/4/10 speakers per fold, 100 utterances
each) and prints how often the 95 % paired bootstrap interval of ΔCCC excludes 0 and how often the
permutation test's p is below 0.05; both should be 5 %.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heads.evaluate import Evaluation, summarise  # noqa: E402
from heads.stats import StatsConfig  # noqa: E402


def synthetic_predictions(utterances: int, speakers: int, variants: int, seeds: int, seed: int = 0
                          ) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    speaker = np.sort(rng.integers(0, speakers, utterances))
    fold = speaker * 5 // speakers + 1
    truth = rng.normal(3, 1, (utterances, 2)) + rng.normal(0, 0.3, (speakers, 2))[speaker]
    out = {}
    for v in range(variants):
        frames = []
        for s in range(seeds):
            pred = 0.7 * truth + rng.normal(0, 0.6 + 0.02 * v, (utterances, 2))
            frames.append(pl.DataFrame({
                "utt_id": [f"u{i}" for i in range(utterances)], "speaker": [f"s{k}" for k in speaker], "fold": fold,
                "seed": np.full(utterances, s), "valence_true": truth[:, 0], "arousal_true": truth[:, 1],
                "valence_pred": pred[:, 0], "arousal_pred": pred[:, 1]}))
        out[f"variant{v}"] = pl.concat(frames)
    return out


def calibration(experiments: int = 300, seed: int = 0) -> None:
    from heads.evaluate import compare
    from heads.stats import StatsConfig, moments_from_arrays

    rng = np.random.default_rng(seed)
    config = StatsConfig(resamples=1000, permutations=2000)
    print(f"null experiments ({experiments} each): share of 95 % bootstrap intervals of ΔCCC-V excluding 0, "
          "share of permutation p < 0.05")
    for per_fold in (2, 4, 10):
        excluded = rejected = 0
        for _ in range(experiments):
            speaker = np.repeat(np.arange(5 * per_fold), 100)
            true = rng.normal(0, 0.5, 5 * per_fold)[speaker] + rng.normal(0, 1, len(speaker))
            base = 0.7 * true + rng.normal(0, 0.3, 5 * per_fold)[speaker] + rng.normal(0, 0.5, len(speaker))
            moments = {k: moments_from_arrays(np.stack([p, p], -1)[None], np.stack([true, true], -1),
                                              speaker // per_fold + 1, speaker)
                       for k, p in (("a", base + rng.normal(0, 0.4, len(speaker))),
                                    ("b", base + rng.normal(0, 0.4, len(speaker))))}
            row = compare(moments, "a", config)["rows"][0]
            excluded += not row["ci"][0] <= 0 <= row["ci"][1]
            rejected += row["p"] < 0.05
        print(f"  {per_fold:2d} speakers per fold: interval excludes 0 in {excluded / experiments:.1%}, "
              f"permutation p < 0.05 in {rejected / experiments:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=10000)
    parser.add_argument("--speakers", type=int, default=50)
    parser.add_argument("--variants", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration", action="store_true", help="false-positive rates instead of speed")
    args = parser.parse_args()
    if args.calibration:
        calibration()
        return
    predictions = synthetic_predictions(args.utterances, args.speakers, args.variants, args.seeds)
    evaluation = Evaluation(pl.DataFrame(), predictions, {label: [] for label in predictions})
    times = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        results = summarise(evaluation, StatsConfig(resamples=2000))
        times.append(time.perf_counter() - started)
    rows = results["comparisons"]["rows"]
    print(f"{args.utterances} utterances, {args.speakers} speakers, {args.variants} variants, {args.seeds} seeds, "
          f"2000 resamples, {len(rows)} comparisons: {min(times):.2f} s (best of {args.rounds}: "
          f"{', '.join(f'{t:.2f}' for t in times)}; target <= 5 s)")


if __name__ == "__main__":
    main()
