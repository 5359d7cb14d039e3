"""Speed of the statistics behind eval and ablate: speaker-bootstrap intervals and paired comparisons.

    .venv/bin/python benchmarks/bench_stats.py [--utterances 10000] [--speakers 50] [--variants 8] [--seeds 3]

Synthetic test predictions of the given size (5 folds, speakers split evenly among them), then
``heads.evaluation.evaluate.summarise`` with 2000 resamples: every label's intervals (per fold, mean over folds,
pooled) and every other label's paired comparison with the first (bootstrap interval and speaker-permutation
p-value, 10,000 sampled swaps at 50 speakers). Target: <= 5 s on the 2-core CPU. Plots are not included.

``--calibration`` instead measures every candidate interval and the permutation test on simulated experiments
(``heads.evaluation.calibration``: 5 folds of 2/4/10 speakers with 1 and 3 seeds, one test set of 10/50 speakers; null,
heterogeneous null, a fixed effect, and ridge heads trained leave-one-fold-out) and prints, per shape and
method, the false-positive rate at 5 %, the coverage of the truth and the power; ``--write
heads/evaluation/calibration.csv`` stores the table the evaluation quotes under its tables.

    .venv/bin/python benchmarks/bench_stats.py --calibration --experiments 1000 --write heads/evaluation/calibration.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heads.evaluation.calibration import (  # noqa: E402
    DIFFERENCE_METHODS,
    MEAN_METHODS,
    SCENARIOS,
    Shape,
    matched_speaker_noise,
    measure,
    point_estimates,
    simulate,
)
from heads.evaluation.evaluate import Evaluation, summarise  # noqa: E402
from heads.evaluation.stats import StatsConfig  # noqa: E402


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


def calibration_shapes() -> list[tuple[Shape, tuple[str, ...]]]:
    """The shapes users have and the scenarios run at each: 5 folds of 2 (IEMOCAP, EmoDB), 4 and 10 speakers
    with 1 and 3 seeds; one test set of 10 and 50 speakers (predefined partitions). Trained heads are
    deterministic here (ridge), so ``trained-null`` runs with one seed."""
    shapes = []
    for speakers in (2, 4, 10):
        for seeds in (1, 3):
            scenarios = SCENARIOS if seeds == 1 else tuple(s for s in SCENARIOS if s != "trained-null")
            shapes.append((Shape(5, speakers, seeds), scenarios))
    shapes += [(Shape(1, speakers, 1), SCENARIOS) for speakers in (2, 10, 50)]
    return shapes


def calibration(experiments: int, seed: int = 0, write: Path | None = None, quick: bool = False,
                only: set[str] | None = None) -> pl.DataFrame:
    """Every candidate at every shape and scenario: share of experiments whose interval excludes 0 (a false
    positive under a null, power under the effect), share that covers the truth, mean width; the permutation
    test's share of p < 0.05; the rule of the tables (fold-t interval excludes 0 and permutation p < 0.05)."""
    rows = []
    shapes = calibration_shapes()
    if quick:
        shapes = [(Shape(5, 2, 1), ("null",))]
    if only:  # "FxG" shapes, e.g. {"1x2"}; rows of other shapes already in ``write`` are kept
        shapes = [(shape, scenarios) for shape, scenarios in shapes if f"{shape.folds}x{shape.speakers_per_fold}" in only]
    for shape, scenarios in shapes:
        started = time.perf_counter()
        noise = matched_speaker_noise(shape) if "null-heterogeneous" in scenarios else 0.4
        for scenario in scenarios:
            truth_rng = np.random.default_rng(10_000 + seed)  # an independent stream for the truth
            truths = np.array([point_estimates(simulate(truth_rng, shape, scenario, noise))
                               for _ in range(experiments * 3)])
            truth = {"mean": truths[:, 0].mean(), "difference": truths[:, 1].mean()}
            if "null" in scenario and scenario != "trained-null" and scenario != "null-heterogeneous":
                truth["difference"] = 0.0  # exchangeable variants: exactly 0
            rng = np.random.default_rng(seed)
            outcomes = [measure(simulate(rng, shape, scenario, noise), rng, resamples=1000) for _ in range(experiments)]
            base = {"scenario": scenario, "folds": shape.folds, "speakers_per_fold": shape.speakers_per_fold,
                    "seeds": shape.seeds, "experiments": experiments}
            for quantity, methods in (("difference", DIFFERENCE_METHODS), ("mean", MEAN_METHODS)):
                for method in methods:
                    bounds = np.array([o[quantity].get(method, (np.nan, np.nan)) for o in outcomes], dtype=float)
                    if np.isnan(bounds).all():
                        continue
                    low, high = bounds[:, 0], bounds[:, 1]
                    rows.append({**base, "quantity": quantity, "method": method, "truth": float(truth[quantity]),
                                 "rejected": float(np.mean((low > 0) | (high < 0))),
                                 "covered": float(np.mean((low <= truth[quantity]) & (truth[quantity] <= high))),
                                 "width": float(np.mean(high - low))})
            p = np.array([o["p_permutation"] for o in outcomes])
            rows.append({**base, "quantity": "difference", "method": "permutation", "truth": float(truth["difference"]),
                         "rejected": float(np.mean(p < 0.05)), "covered": None, "width": None})
            if shape.folds > 1:
                t_bounds = np.array([o["difference"]["fold-t"] for o in outcomes], dtype=float)
                excludes = (t_bounds[:, 0] > 0) | (t_bounds[:, 1] < 0)
                rows.append({**base, "quantity": "difference", "method": "rule: fold-t and permutation",
                             "truth": float(truth["difference"]), "rejected": float(np.mean(excludes & (p < 0.05))),
                             "covered": None, "width": None})
        print(f"  {shape}: {time.perf_counter() - started:.0f} s (speaker-level error sd {noise:.3f} matches a's "
              "utterance-level 0.4)", flush=True)
    table = pl.DataFrame(rows)
    if write is not None:
        if only and write.is_file():
            kept = pl.read_csv(write, schema=table.schema)
            kept = kept.filter(~pl.concat_str([pl.col("folds"), pl.lit("x"), pl.col("speakers_per_fold")]).is_in(only))
            table = pl.concat([kept, table]).sort(["folds", "speakers_per_fold", "seeds"], descending=[True, False, False],
                                                  maintain_order=True)
        table.write_csv(write)
    return table


def print_calibration(table: pl.DataFrame) -> None:
    """The calibration as markdown: per shape and method, false positives (nulls), coverage, power."""
    for quantity in ("difference", "mean"):
        print(f"\n### {'Difference of two variants (ΔCCC, mean over folds)' if quantity == 'difference' else 'One variant (CCC, mean over folds)'}\n")
        print("| shape | method | false positives: null / heterogeneous / trained | coverage: null / heterogeneous / "
              "effect / trained | power (effect) | mean width (null) |")
        print("|---|---|---|---|---|---|")
        part = table.filter(pl.col("quantity") == quantity)
        for (folds, speakers, seeds), shape_rows in part.group_by(["folds", "speakers_per_fold", "seeds"],
                                                                    maintain_order=True):
            for (method,), rows in shape_rows.group_by(["method"], maintain_order=True):
                by = {r["scenario"]: r for r in rows.iter_rows(named=True)}

                def cell(scenario: str, key: str, by: dict = by) -> str:
                    value = by.get(scenario, {}).get(key)
                    return f"{value:.1%}" if value is not None else "-"

                fp = " / ".join(cell(s, "rejected") for s in ("null", "null-heterogeneous", "trained-null"))
                cover = " / ".join(cell(s, "covered") for s in ("null", "null-heterogeneous", "effect", "trained-null"))
                width = by.get("null", {}).get("width")
                where = f"{folds} folds" if folds > 1 else "1 test set"
                print(f"| {where} x {speakers}, {seeds} seed(s) | {method} | {fp if quantity == 'difference' else '-'} | "
                      f"{cover} | {cell('effect', 'rejected') if quantity == 'difference' else '-'} | "
                      f"{f'{width:.3f}' if width is not None else '-'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=10000)
    parser.add_argument("--speakers", type=int, default=50)
    parser.add_argument("--variants", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration", action="store_true", help="calibration of the intervals instead of speed")
    parser.add_argument("--experiments", type=int, default=1000, help="simulated experiments per shape and scenario")
    parser.add_argument("--write", type=Path, default=None, help="also write the calibration table (CSV) here, "
                        "e.g. heads/evaluation/calibration.csv (what the tables quote)")
    parser.add_argument("--shapes", default=None, help="only these shapes, as folds x speakers, e.g. 1x2,5x2 "
                        "(with --write, their rows replace the file's rows of those shapes)")
    args = parser.parse_args()
    if args.calibration:
        started = time.perf_counter()
        only = set(args.shapes.split(",")) if args.shapes else None
        table = calibration(args.experiments, write=args.write, only=only)
        print_calibration(table)
        print(f"\n{time.perf_counter() - started:.0f} s in all")
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
