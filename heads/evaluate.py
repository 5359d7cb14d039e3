"""Aggregate head runs: metrics per fold (mean over seeds), mean +- sd over folds, pooled over all test
predictions, mean attention weights, and the research note's table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from core.errors import InputError
from core.metrics import dimension_metrics
from heads.runs import read_run

ATTENTION_COLUMNS = ("attn_valence_prosody", "attn_valence_other", "attn_arousal_speech", "attn_arousal_other")
TABLE_COLUMNS = ("CCC-V", "CCC-A", "CCC-Avg", "MSE-V", "MSE-A")


@dataclass
class Evaluation:
    per_fold: pl.DataFrame  # label, fold, n_test, seeds, ccc_v, ..., rmse_a (mean over seeds)
    predictions: dict[str, pl.DataFrame]  # label -> all test predictions of all folds and seeds
    records: dict[str, list[dict]]  # label -> run.json of each fold


def evaluate_runs(run_dirs: list[str | Path]) -> Evaluation:
    """Read runs (one folder per fold and configuration) and compute per-fold metrics."""
    if not run_dirs:
        raise InputError("no runs given")
    rows, predictions, records = [], {}, {}
    for run_dir in run_dirs:
        record, preds = read_run(run_dir)
        label = record["label"]
        if any(r["fold"] == record["fold"] for r in records.get(label, [])):
            raise InputError(f"{run_dir}: a second run of '{label}' for fold {record['fold']}; give each once")
        records.setdefault(label, []).append(record)
        predictions[label] = pl.concat([predictions[label], preds]) if label in predictions else preds
        per_seed = [dimension_metrics(preds.filter(pl.col("seed") == s)) for s in record["seeds"]]
        means = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
        rows.append({"label": label, "fold": record["fold"], "n_test": preds.height // len(record["seeds"]),
                     "seeds": len(record["seeds"]), **means})
    per_fold = pl.DataFrame(rows).sort("label", "fold")
    return Evaluation(per_fold, predictions, records)


def summary(evaluation: Evaluation) -> dict[str, dict]:
    """Per label: per-fold metrics, mean and sd over folds, pooled metrics, mean attention weights."""
    out = {}
    for label, group in evaluation.per_fold.group_by("label", maintain_order=True):
        label = label[0]
        metric_names = [c for c in group.columns if c not in ("label", "fold", "n_test", "seeds")]
        preds = evaluation.predictions[label]
        pooled_per_seed = [dimension_metrics(preds.filter(pl.col("seed") == s)) for s in preds["seed"].unique().sort()]
        out[label] = {
            "folds": {str(r["fold"]): {k: r[k] for k in ("ccc_v", "ccc_a", "mse_v", "mse_a", "pearson_v", "pearson_a",
                                                          "rmse_v", "rmse_a", "n_test")}
                      for r in group.iter_rows(named=True)},
            "mean": {k: float(group[k].mean()) for k in metric_names},
            "sd": {k: float(group[k].std(ddof=0)) for k in metric_names},
            "pooled": {k: float(np.mean([m[k] for m in pooled_per_seed])) for k in pooled_per_seed[0]},
            "attention_mean": {c: float(preds[c].mean()) for c in ATTENTION_COLUMNS if c in preds.columns},
            "layer_weights": _mean_layer_weights(evaluation.records[label]),
        }
        out[label]["mean"]["ccc_avg"] = (out[label]["mean"]["ccc_v"] + out[label]["mean"]["ccc_a"]) / 2
    return out


def _mean_layer_weights(records: list[dict]) -> list[float] | None:
    weights = [m["layer_weights"] for r in records for m in r["metrics_per_seed"].values() if m.get("layer_weights")]
    return np.mean(weights, axis=0).tolist() if weights else None


def results_table(summaries: dict[str, dict]) -> pl.DataFrame:
    """The research note's table: one row per run label, mean over folds (sd in the ``*_sd`` columns)."""
    rows = []
    for label, s in summaries.items():
        m, sd = s["mean"], s["sd"]
        rows.append({"run": label, "folds": len(s["folds"]), "CCC-V": m["ccc_v"], "CCC-A": m["ccc_a"],
                     "CCC-Avg": m["ccc_avg"], "MSE-V": m["mse_v"], "MSE-A": m["mse_a"],
                     "CCC-V_sd": sd["ccc_v"], "CCC-A_sd": sd["ccc_a"], "MSE-V_sd": sd["mse_v"], "MSE-A_sd": sd["mse_a"]})
    return pl.DataFrame(rows)


def markdown_table(table: pl.DataFrame) -> str:
    lines = ["| run | folds | " + " | ".join(TABLE_COLUMNS) + " |", "|---|---|" + "---|" * len(TABLE_COLUMNS)]
    for r in table.iter_rows(named=True):
        cells = []
        for c in TABLE_COLUMNS:
            sd = r.get(f"{c}_sd")
            cells.append(f"{r[c]:.3f} ± {sd:.3f}" if sd is not None else f"{r[c]:.3f}")
        lines.append(f"| {r['run']} | {r['folds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_evaluation(evaluation: Evaluation, out_dir: str | Path, json_path: str | Path | None = None) -> tuple[str, dict]:
    """Write ``results.md``, ``results.csv``, ``per_fold.csv``, ``metrics.json`` and plots; return the markdown."""
    from heads.plots import plot_attention, plot_per_fold, plot_scatter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = summary(evaluation)
    table = results_table(summaries)
    markdown = markdown_table(table)
    (out_dir / "results.md").write_text(markdown + "\n")
    table.write_csv(out_dir / "results.csv")
    evaluation.per_fold.write_csv(out_dir / "per_fold.csv")
    # Per label: per fold ccc_v, ccc_a, mse_v, mse_a (and more), the means, sds and pooled metrics.
    payload = json.dumps(summaries, indent=2, sort_keys=True)
    (out_dir / "metrics.json").write_text(payload)
    if json_path:
        Path(json_path).write_text(payload)
    plot_per_fold(evaluation.per_fold, out_dir / "per_fold.png")
    plot_scatter(evaluation.predictions, out_dir / "scatter.png")
    plot_attention(evaluation.predictions, out_dir / "attention.png")
    return markdown, summaries
