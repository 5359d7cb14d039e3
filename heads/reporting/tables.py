"""The evaluation as tables and files: markdown and CSV of ``heads.evaluation.evaluate.summarise``'s results, its one-sentence
headline, and ``write_evaluation`` (results.md/.csv, per_fold.csv, comparisons.csv, metrics.json and the plots)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from core.files import write_atomically
from heads.evaluation.evaluate import (
    COMPARED,
    MEANING,
    Evaluation,
    experiment_title,
    learning_histories,
    run_warnings,
    summarise,
)
from heads.evaluation.stats import StatsConfig

TABLE_COLUMNS = {"CCC-V": "ccc_v", "CCC-A": "ccc_a", "CCC-Avg": "ccc_avg", "MSE-V": "mse_v", "MSE-A": "mse_a"}


def warnings_markdown(evaluation: Evaluation) -> str:
    lines = run_warnings(evaluation)
    return "\n".join(["**Warnings**:", ""] + [f"* {line}" for line in lines]) if lines else ""


def results_table(results: dict) -> pl.DataFrame:
    """One row per run label: each metric's mean over folds, interval, fold sd and seed sd."""
    rows = []
    for label, s in results["runs"].items():
        row = {"run": label, "folds": len(s["folds"]), "seeds": len(s["seeds"])}
        for column, key in TABLE_COLUMNS.items():
            ci = s.get("mean_ci", {}).get(key) or [None, None]
            row.update({column: s["mean"][key], f"{column}_lo": ci[0], f"{column}_hi": ci[1],
                        f"{column}_sd": s["sd_folds"][key], f"{column}_seed_sd": s["sd_seeds"][key]})
        rows.append(row)
    return pl.DataFrame(rows)


def _cell(value: float | None, low: float | None = None, high: float | None = None, sd: float | None = None) -> str:
    if value is None:
        return "undefined"
    text = f"{value:.3f}"
    if low is not None and high is not None:
        text += f" [{low:.3f}, {high:.3f}]"
    if sd is not None:
        text += f" ± {sd:.3f}"
    return text


def interval_note(results: dict) -> str:
    """The sentence under a results table: which interval it prints and what the calibration measured for it at
    this shape, or why it prints none."""
    info = next(iter(results["runs"].values())).get("interval")
    if not info:
        return ""
    if info["withheld"]:
        return f"Intervals: none printed: {info['withheld']}."
    measured = info["calibration"]
    if not measured:
        return (f"Intervals: 95 % {info['words']}; its coverage at this shape is unknown (no calibrated shape has "
                "this many folds: benchmarks/bench_stats.py --calibration covers 5 folds and single test sets).")
    return (f"Intervals: 95 % {info['words']}; at the nearest calibrated shape ({measured['shape']}) it covered the "
            f"true value in at least {measured['coverage']:.1%} of simulated experiments (benchmarks/bench_stats.py "
            "--calibration).")


def markdown_table(table: pl.DataFrame, results: dict | None = None) -> str:
    lines = [f"Each cell: {MEANING}.", "",
             "| run | folds | seeds | " + " | ".join(TABLE_COLUMNS) + " |", "|---|---|---|" + "---|" * len(TABLE_COLUMNS)]
    for r in table.iter_rows(named=True):
        cells = [_cell(r[c], r[f"{c}_lo"], r[f"{c}_hi"], r[f"{c}_sd"]) for c in TABLE_COLUMNS]
        lines.append(f"| {r['run']} | {r['folds']} | {r['seeds']} | " + " | ".join(cells) + " |")
    if results is not None and (note := interval_note(results)):
        lines += ["", note]
    if (table["seeds"] > 1).any():
        lines += ["", "Spread over seeds (sd of the mean over folds, ddof=1):", "",
                  "| run | " + " | ".join(TABLE_COLUMNS) + " |", "|---|" + "---|" * len(TABLE_COLUMNS)]
        for r in table.filter(pl.col("seeds") > 1).iter_rows(named=True):
            lines.append(f"| {r['run']} | " + " | ".join(_cell(r[f"{c}_seed_sd"]) for c in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def headline(results: dict) -> str:
    """The answer in one sentence, computed: the best run on each CCC, by how much over the baseline, and
    whether the comparison can tell them apart."""
    runs, comparisons = results["runs"], results.get("comparisons")
    parts = []
    for column, key in COMPARED.items():
        scored = [label for label in runs if runs[label]["mean"].get(key) is not None]
        if not scored:
            continue
        best = max(scored, key=lambda label: runs[label]["mean"][key])
        text = f"{column}: best {best} ({runs[best]['mean'][key]:.3f})"
        if comparisons and best != comparisons["baseline"]:
            row = next(r for r in comparisons["rows"] if r["label"] == best and r["metric"] == column)
            verdict = "a real difference" if row["reading"] != "not distinguishable" else "not distinguishable"
            text += (f", {row['delta']:+.3f} over {comparisons['baseline']} {interval_text(row['ci'])}: "
                     f"{verdict}")
        elif comparisons:
            text += ", the baseline itself"
        parts.append(text)
    return "; ".join(parts) + "." if parts else ""


def p_text(p: float | None) -> str:
    return f"{p:.3f}" if p is not None else "undefined"


def interval_text(ci: list | None) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci and None not in ci else "n/a"


def comparison_markdown(results: dict) -> str:
    """Differences from the baseline, one row per label and metric, with the reading in words, the methods, the
    Holm family, the interval's measured coverage and what the design cannot do."""
    comparisons = results.get("comparisons")
    if not comparisons or not comparisons["rows"]:
        return ""
    stats = results["stats"]
    lines = [f"Differences from `{comparisons['baseline']}` on the same utterances (mean over folds). Interval: "
             f"paired {stats['confidence']:.0%} {comparisons.get('interval_words', 'speaker-bootstrap interval')}. "
             f"p: {comparisons.get('p_method', 'paired speaker-permutation test')}, "
             f"{comparisons.get('family', 'Holm-adjusted')}. Reading: better/worse only when the interval excludes 0 "
             f"and the adjusted p < {stats['alpha']:g}.", "",
             "| run | metric | Δ | interval | p (Holm) | Δ per fold | reading |", "|---|---|---|---|---|---|---|"]
    for r in comparisons["rows"]:
        folds = " ".join(f"{v:+.2f}" if v is not None else "n/a" for v in r["per_fold"].values())
        delta = f"{r['delta']:+.3f}" if r["delta"] is not None else "undefined"
        lines.append(f"| {r['label']} | {r['metric']} | {delta} | {interval_text(r['ci'])} | {p_text(r['p_holm'])} | "
                     f"{folds} | {r['reading']} |")
    if comparisons.get("coverage"):
        lines += ["", f"Calibration: {comparisons['coverage']}"]
    lines += [f"Note: {note}" for note in comparisons.get("notes", [])]
    return "\n".join(lines)


def per_test_set_markdown(evaluation: Evaluation, results: dict) -> str:
    """With predefined partitions each test set is a result of its own (MSP-Podcast papers report Test1 and
    Test2 apart): one row per run and test set, with its speaker-bootstrap interval. Empty for k folds."""
    if not any(r.get("protocol") == "partitions" for recs in evaluation.records.values() for r in recs):
        return ""
    lines = ["Per test set (mean over seeds [95 % speaker-bootstrap interval]; the table above averages the test "
             "sets):", "", "| run | test set | n | CCC-V | CCC-A | MSE-V | MSE-A |", "|---|---|---|---|---|---|---|"]
    for label, records in evaluation.records.items():
        for record in sorted(records, key=lambda r: r["fold"]):
            cell = results["runs"][label]["folds"][str(record["fold"])]
            ci = cell.get("ci", {})
            values = [_cell(cell[k], *(ci.get(k) or [None, None])) for k in ("ccc_v", "ccc_a", "mse_v", "mse_a")]
            lines.append(f"| {label} | {experiment_title(record)} | {cell['n_test']} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def per_group_markdown(results: dict) -> str:
    """Per group (gender, corpus, ``--group-by``): each group's CCC with its interval and the gap between groups."""
    rows = [(label, r) for label, s in results["runs"].items() for r in s.get("per_group", [])]
    if not rows:
        return ""
    lines = ["Per group (mean over folds [95 % interval]; gap: the first group minus the second, with its interval):",
             "", "| run | column | group | n | speakers | CCC-V | CCC-A |", "|---|---|---|---|---|---|---|"]
    for label, r in rows:
        ci = r.get("ci") or {}
        cells = [_cell(r.get(k), *(ci.get(k) or [None, None])) for k in ("ccc_v", "ccc_a")]
        lines.append(f"| {label} | {r['column']} | {r['group']} | {r['n'] if r['n'] is not None else ''} | "
                     f"{r['speakers'] if r['speakers'] is not None else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_evaluation(evaluation: Evaluation, out_dir: str | Path, json_path: str | Path | None = None,
                     stats: StatsConfig = StatsConfig(), baseline: str | None = None) -> tuple[str, dict]:
    """Write ``results.md``, ``results.csv``, ``per_fold.csv``, ``comparisons.csv``, ``metrics.json`` and
    plots; return the markdown (results, then comparisons) and the results. Each file appears whole or not at all
    (``core.files``); a folder this call created and could not fill is removed again."""
    from heads.reporting.plots import plot_attention, plot_forest, plot_learning_curves, plot_per_fold, plot_scatter

    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    results = summarise(evaluation, stats, baseline)
    table = results_table(results)
    markdown = "\n\n".join(part for part in (warnings_markdown(evaluation), markdown_table(table, results),
                                              per_test_set_markdown(evaluation, results), comparison_markdown(results),
                                              per_group_markdown(results))
                           if part)
    payload = json.dumps(results, indent=2, sort_keys=True)
    writes = [("results.md", lambda tmp: tmp.write_text(markdown + "\n")), ("results.csv", table.write_csv),
              ("per_fold.csv", evaluation.per_fold.write_csv), ("metrics.json", lambda tmp: tmp.write_text(payload)),
              ("per_fold.png", lambda tmp: plot_per_fold(evaluation.per_fold, evaluation.seed_sd, tmp,
                                                         labels=list(results["runs"]))),
              ("scatter.png", lambda tmp: plot_scatter(evaluation.predictions, tmp)),
              ("attention.png", lambda tmp: plot_attention(evaluation.predictions, tmp))]
    if results["comparisons"]:
        comparisons = pl.DataFrame([{k: v for k, v in r.items() if k not in ("ci", "per_fold")} | {
            "ci_low": (r["ci"] or [None, None])[0], "ci_high": (r["ci"] or [None, None])[1]}
            for r in results["comparisons"]["rows"]])
        writes += [("comparisons.csv", comparisons.write_csv),
                   ("forest.png", lambda tmp: plot_forest(results["comparisons"], tmp))]
    if histories := learning_histories(evaluation):
        writes.append(("learning_curves.png", lambda tmp: plot_learning_curves(histories, tmp)))
    try:
        for name, write in writes:
            write_atomically(out_dir / name, write)
        if json_path:
            write_atomically(Path(json_path), lambda tmp: tmp.write_text(payload))
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    return markdown, results


def matrix_markdown(rows: list[dict], test_partition: str | None = None) -> str:
    """The matrix as text: per run label, a table with the training corpus per row and the test corpus per
    column, each cell ``CCC-V / CCC-A`` with their intervals (the diagonal is the corpus's own folds or test
    sets; ``test_partition``: the test set a partitioned corpus was tested on)."""
    def cell(value: float | None, ci: list | None) -> str:
        if value is None:
            return "undefined"
        return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else "")

    corpora = list(dict.fromkeys(r["train"] for r in rows))
    tested = "every usable row of the test corpus" if test_partition is None else (
        f"a partitioned test corpus's test set {test_partition}, every usable row of the others")
    parts = []
    for label in dict.fromkeys(r["run"] for r in rows):
        lines = [f"`{label}`: CCC-V / CCC-A, rows trained on, columns tested on (the diagonal: the corpus's own "
                 f"folds or test sets; off it: {tested}, the interval a speaker bootstrap):", "",
                 "| trained on \\ tested on | " + " | ".join(corpora) + " |", "|---|" + "---|" * len(corpora)]
        for train in corpora:
            found = {r["test"]: r for r in rows if r["run"] == label and r["train"] == train}
            lines.append(f"| {train} | " + " | ".join(
                f"{cell(found[t]['ccc_v'], found[t]['ccc_v_ci'])} / {cell(found[t]['ccc_a'], found[t]['ccc_a_ci'])}"
                for t in corpora) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
