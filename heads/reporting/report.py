"""One self-contained HTML report of head results: results first, comparisons, figures (inline PNG), fold /
speaker / category tables, and the provenance collapsed."""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from core.files import write_atomically  # noqa: E402
from core.provenance import code_version  # noqa: E402
from heads.evaluation.evaluate import MEANING, Evaluation, experiment_title, learning_histories, run_warnings, summarise  # noqa: E402
from heads.evaluation.stats import StatsConfig  # noqa: E402
from heads.reporting.plots import plot_attention, plot_forest, plot_learning_curves, plot_per_fold, plot_scatter  # noqa: E402
from heads.reporting.tables import (  # noqa: E402
    TABLE_COLUMNS,
    comparison_markdown,
    headline,
    interval_note,
    interval_text,
    p_text,
    results_table,
)


def _png_data_uri(draw, *args, **options) -> str:  # noqa: ANN001, ANN003 - a heads.reporting.plots function
    """Render a ``heads.reporting.plots`` figure into memory as a ``data:`` URI."""
    buffer = io.BytesIO()
    draw(*args, buffer, **options)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _layer_weights_png(summaries: dict) -> str | None:
    weighted = {k: v["layer_weights"] for k, v in summaries.items() if v.get("layer_weights")}
    if not weighted:
        return None
    fig, ax = plt.subplots(figsize=(8, 3))
    for label, weights in weighted.items():
        ax.plot(range(len(weights)), weights, marker="o", label=label)
    ax.set_xlabel("hidden state (0 = CNN output)")
    ax.set_ylabel("softmax weight")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _table_html(table, element_id: str = "results") -> str:  # noqa: ANN001 - polars DataFrame
    """The results table; the best value of each column (highest CCC, lowest MSE) is highlighted."""
    head = "".join(f"<th>{c}</th>" for c in ("run", "folds", "seeds", *TABLE_COLUMNS))
    best = {}
    for c in TABLE_COLUMNS:
        values = [v for v in table[c].to_list() if v is not None]
        if len(values) > 1:
            best[c] = min(values) if c.startswith("MSE") else max(values)
    rows = []
    for r in table.iter_rows(named=True):
        cells = [html.escape(r["run"]), str(r["folds"]), str(r["seeds"])]
        for c in TABLE_COLUMNS:
            if r[c] is None:
                cells.append("undefined")
                continue
            interval = f" <small>[{r[f'{c}_lo']:.3f}, {r[f'{c}_hi']:.3f}]</small>" if r[f"{c}_lo"] is not None else ""
            sd = f" <small>± {r[f'{c}_sd']:.3f}</small>" if r[f"{c}_sd"] is not None else ""
            value = f"<b>{r[c]:.3f}</b>" if best.get(c) == r[c] else f"{r[c]:.3f}"
            cells.append((value + interval + sd, best.get(c) == r[c]))
        rows.append("<tr>" + "".join(f'<td class="best">{c[0]}</td>' if isinstance(c, tuple) and c[1]
                                     else f"<td>{c[0] if isinstance(c, tuple) else c}</td>" for c in cells) + "</tr>")
    return f'<table id="{element_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _rows_html(rows: list[dict], element_id: str) -> str:
    """A plain table of records (per speaker, per category, comparisons)."""
    if not rows:
        return ""
    columns = list(rows[0])
    def fmt(v) -> str:  # noqa: ANN001
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, list):
            return ", ".join(fmt(x) for x in v)
        return html.escape("" if v is None else str(v))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r[c])}</td>" for c in columns) + "</tr>" for r in rows)
    return f'<table id="{element_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_BULKY = ("names", "unit_summaries", "updater_summaries", "packages", "file_mtime_ns", "file_size")


def _trim(provenance: dict) -> dict:
    """Cache provenance without its bulky lists (feature names, per-unit summaries, packages listed once)."""
    return {stage: {k: v for k, v in facts.items() if k not in _BULKY} if isinstance(facts, dict) else facts
            for stage, facts in (provenance or {}).items()}


def _corpus_fingerprint(cache: str | None) -> str:
    """The manifest fingerprint of the runs' cache (utterances, files, speakers, folds, labels), if it is here."""
    from cache import CacheReader
    from core.errors import InputError
    from core.provenance import table_fingerprint

    try:
        m = CacheReader(cache).manifest if cache else None
    except (InputError, OSError):
        m = None
    if m is None:
        return "unknown (the cache is not here)"
    columns = ("utt_id", "path", "speaker", "fold", "valence", "arousal")
    return f"{table_fingerprint(m.select(columns).rows())} ({m.height} utterances)"


def _with_interval(value: float | None, ci: list | None) -> str:
    if value is None:
        return "undefined"
    return f"{value:.3f}" if ci is None or None in ci else f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _warnings_html(lines: list[str]) -> str:
    """A visible box of the runs' protocol warnings (nothing when there are none)."""
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f'<div class="warning" id="warnings"><b>Warnings</b><ul>{items}</ul></div>'


def fold_table(evaluation: Evaluation) -> list[dict]:
    """Per fold (of the first label): test speakers, utterance counts, validation speakers and dialogues."""
    label, records = next(iter(evaluation.records.items()))
    predictions = evaluation.predictions[label]
    rows = []
    for record in sorted(records, key=lambda r: r["fold"]):
        test = predictions.filter(predictions["fold"] == record["fold"])
        sizes = record.get("split_sizes", {})
        validation = record.get("validation", {})
        rows.append({"fold": record["fold"], "test set": record.get("test_set") or f"fold {record['fold']}",
                     "test speakers": ", ".join(sorted(set(test["speaker"].cast(str)))),
                     "n test": sizes.get("test"), "n train": sizes.get("train"), "n validation": sizes.get("validation"),
                     "validation speakers": ", ".join(record.get("validation_speakers", [])),
                     "validation dialogues": validation.get("dialogues"), "validation rule": validation.get("rule")})
    return rows


def gate_table(evaluation: Evaluation) -> list[dict]:
    """Per run label and fold, what the state gate chose and on what: the mean validation CCC with and without
    the state, on how many validation dialogues. Empty when no run used the gate."""
    rows = []
    for label, records in evaluation.records.items():
        for record in sorted(records, key=lambda r: r["fold"]):
            gate = record.get("state_gate")
            if gate:
                rows.append({"run": label, "fold": experiment_title(record), "kept": gate["chosen"].replace("_", " "),
                             "validation CCC with state": gate["with_state"],
                             "without": gate["without_state"],
                             "validation dialogues": record.get("validation", {}).get("dialogues")})
    return rows


def write_report(evaluation: Evaluation, path: str | Path, title: str = "Valence / arousal heads", notes: str = "",
                 stats: StatsConfig = StatsConfig(), baseline: str | None = None, results: dict | None = None) -> Path:
    """Write the HTML report to ``path`` (images embedded, no external files): results first, then the
    comparisons, figures, per-fold / per-speaker / per-category tables, and the provenance collapsed.
    ``results`` from ``heads.reporting.tables.write_evaluation`` avoids computing the intervals twice."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    results = results or summarise(evaluation, stats, baseline)
    table = results_table(results)
    figures = [
        ("Per-fold CCC (n = test utterances)",
         _png_data_uri(plot_per_fold, evaluation.per_fold, evaluation.seed_sd, labels=list(results["runs"]))),
        ("Predicted vs true (test utterances of all folds)", _png_data_uri(plot_scatter, evaluation.predictions)),
        ("Attention weights by true valence / arousal", _png_data_uri(plot_attention, evaluation.predictions)),
    ]
    if histories := learning_histories(evaluation):
        figures.append(("Learning curves", _png_data_uri(plot_learning_curves, histories)))
    if results["comparisons"]:
        figures.insert(0, (f"Differences from {results['comparisons']['baseline']}",
                           _png_data_uri(plot_forest, results["comparisons"])))
    runs = results["runs"]
    layer_png = _layer_weights_png(runs)
    if layer_png:
        figures.append(("Learned layer weights (--layer weighted)", layer_png))
    attention_lines = "".join(
        f"<li><b>{html.escape(k)}</b>: valence branch gives prosody {v['attention_mean']['attn_valence_prosody']:.2f} "
        f"(other {v['attention_mean']['attn_valence_other']:.2f}); arousal branch gives speech "
        f"{v['attention_mean']['attn_arousal_speech']:.2f} (other {v['attention_mean']['attn_arousal_other']:.2f})</li>"
        for k, v in runs.items() if v["attention_mean"])
    first = next(iter(evaluation.records.values()))[0]
    provenance = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "code version": code_version(),
        "corpus fingerprint": _corpus_fingerprint(first.get("cache")), "cache": first.get("cache"),
        "packages": first.get("packages"), "cache provenance": _trim(first.get("cache_provenance")),
        "run configs": {k: v[0]["config"] for k, v in evaluation.records.items()},
    }
    comparison_rows = [{"run": r["label"], "metric": r["metric"],
                        "Δ": f"{r['delta']:+.3f}" if r["delta"] is not None else "undefined",
                        "interval": interval_text(r["ci"]), "p (Holm)": p_text(r["p_holm"]),
                        "Δ per fold": " ".join(f"{v:+.2f}" if v is not None else "n/a" for v in r["per_fold"].values()),
                        "reading": r["reading"]}
                       for r in (results["comparisons"] or {"rows": []})["rows"]]
    compared = results["comparisons"] or {}
    comparison_notes = ([f"Calibration: {compared['coverage']}"] if compared.get("coverage") else []) + [
        f"Note: {note}" for note in compared.get("notes", [])]
    speakers = [{"run": label, **row} for label, v in runs.items() for row in v["per_speaker"]]
    categories = [{"run": label, **row} for label, v in runs.items() for row in v["per_category"]]
    groups = [{"run": label, "column": row["column"], "group": row["group"], "n": row["n"], "speakers": row["speakers"],
               "CCC-V": _with_interval(row.get("ccc_v"), (row.get("ci") or {}).get("ccc_v")),
               "CCC-A": _with_interval(row.get("ccc_a"), (row.get("ci") or {}).get("ccc_a")),
               "interval": row.get("interval")}
              for label, v in runs.items() for row in v.get("per_group", [])]
    per_fold = evaluation.per_fold.select("label", "fold", "test_set", "n_test", "seeds", "ccc_v", "ccc_a", "mse_v", "mse_a")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(notes)}</p>" if notes else "",
        _warnings_html(run_warnings(evaluation)),
        f'<p id="answer"><b>In short</b>: {html.escape(headline(results))}</p>',
        "<h2>Results</h2>", _table_html(table),
        f"<p><small>{html.escape(MEANING)}. {html.escape(interval_note(results))} Best value of each column in "
        "bold.</small></p>",
        *([f"<h2>Comparisons with {html.escape(results['comparisons']['baseline'])}</h2>",
           f"<p><small>{html.escape(comparison_markdown(results).split(chr(10))[0])}</small></p>",
           _rows_html(comparison_rows, "comparisons"),
           *(f"<p><small>{html.escape(line)}</small></p>" for line in comparison_notes)]
          if comparison_rows else []),
        f"<h2>Attention</h2><ul>{attention_lines or '<li>no attention heads among these runs</li>'}</ul>",
        *(f'<h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" src="{uri}">' for t, uri in figures),
        "<h2>Folds</h2>", _rows_html(fold_table(evaluation), "folds"),
        *(["<h2>State gate</h2><p><small>Per fold, the heads trained with and without the dialogue state and the one "
           "kept: the better mean validation CCC on held-out dialogue groups (never the test fold).</small></p>",
           _rows_html(gates, "state-gate")] if (gates := gate_table(evaluation)) else []),
        "<h2>Per fold</h2>", _rows_html(per_fold.to_dicts(), "per-fold"),
        "<h2>Per speaker (test utterances, mean over seeds)</h2>", _rows_html(speakers, "per-speaker"),
        *(["<h2>Per category (error = predicted - true)</h2>", _rows_html(categories, "per-category")]
          if categories else []),
        *(["<h2>Per group</h2><p><small>Each group's CCC (mean over folds) with its 95 % interval; a gap row is the "
           "first group minus the second.</small></p>", _rows_html(groups, "per-group")] if groups else []),
        "<h2>Provenance</h2>",
        f"<p>code {html.escape(provenance['code version'])}; corpus fingerprint "
        f"{html.escape(provenance['corpus fingerprint'])}</p>",
        f'<details id="provenance"><summary>command line, packages, cache and run settings</summary>'
        f"<pre>{html.escape(json.dumps(provenance, indent=2, default=str))}</pre></details>",
    ]
    style = ("body{font-family:sans-serif;max-width:1300px;margin:1em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}td:first-child{text-align:left}img{max-width:100%}"
             "pre{background:#f6f6f6;padding:8px;overflow:auto}h1{font-size:22px}h2{font-size:18px}"
             ".warning{background:#fff3cd;border:1px solid #e0b000;padding:4px 10px;margin:8px 0}"
             "td.best{background:#e6f4ea}#answer{font-size:15px;background:#f0f4ff;padding:6px 10px}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    return write_atomically(path, lambda tmp: tmp.write_text(page))  # whole or not at all


def write_cross_report(cells: list, rows: list[dict], path: str | Path, title: str = "Does it transfer?",
                       scale: str = "common", test_partition: str | None = None) -> Path:
    """The cross-corpus report (``heads.studies.cross``): the matrix of every run label as a table and a heatmap, then
    each cell's answer, results table and per-group breakdown. ``cells``: ``heads.studies.cross.CrossCell``; ``rows``:
    ``heads.studies.cross.matrix``; ``test_partition``: the test set partitioned corpora were tested on."""
    from heads.reporting.plots import plot_matrix
    from heads.reporting.tables import matrix_markdown

    path = Path(path)
    labels = list(dict.fromkeys(r["run"] for r in rows))
    scale_words = ("the common scale -1..1 (each corpus's ratings mapped from its own ends: core.labels)"
                   if scale == "common" else "each test corpus's own rating scale")
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>Trained on the row's corpus, tested on the column's; scores on {html.escape(scale_words)}. CCC is "
            "unchanged by the mapping; MSE is not comparable across scales.</p>",
            f"<pre>{html.escape(matrix_markdown(rows, test_partition))}</pre>",
            *(f'<h2>{html.escape(label)}</h2><img alt="matrix {html.escape(label)}" '
              f'src="{_png_data_uri(plot_matrix, rows, label)}">' for label in labels)]
    for cell in cells:
        body += [f"<h2>Trained on {html.escape(cell.train)}, tested on {html.escape(cell.test)}</h2>",
                 _warnings_html(run_warnings(cell.evaluation)),
                 f"<p><b>In short</b>: {html.escape(headline(cell.results))}</p>",
                 _table_html(results_table(cell.results), f"results-{cell.train}-{cell.test}")]
        groups = [{"run": label, "column": r["column"], "group": r["group"], "n": r["n"],
                   "CCC-V": _with_interval(r.get("ccc_v"), (r.get("ci") or {}).get("ccc_v")),
                   "CCC-A": _with_interval(r.get("ccc_a"), (r.get("ci") or {}).get("ccc_a"))}
                  for label, v in cell.results["runs"].items() for r in v.get("per_group", [])]
        if groups:
            body.append(_rows_html(groups, f"groups-{cell.train}-{cell.test}"))
    style = ("body{font-family:sans-serif;max-width:1300px;margin:1em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}td:first-child{text-align:left}img{max-width:100%}"
             ".warning{background:#fff3cd;border:1px solid #e0b000;padding:4px 10px;margin:8px 0}"
             "td.best{background:#e6f4ea}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda tmp: tmp.write_text(page))
