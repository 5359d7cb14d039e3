"""One self-contained HTML report of head results: table, figures (inline PNG) and provenance."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from heads.evaluate import (  # noqa: E402
    MEANING,
    TABLE_COLUMNS,
    Evaluation,
    comparison_markdown,
    markdown_table,
    results_table,
    summarise,
)
from heads.plots import plot_attention, plot_forest, plot_per_fold, plot_scatter  # noqa: E402
from heads.stats import StatsConfig  # noqa: E402


def _png_data_uri(draw, *args) -> str:  # noqa: ANN001 - a heads.plots function
    """Render a ``heads.plots`` figure into memory as a ``data:`` URI."""
    buffer = io.BytesIO()
    draw(*args, buffer)
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
    head = "".join(f"<th>{c}</th>" for c in ("run", "folds", "seeds", *TABLE_COLUMNS))
    rows = []
    for r in table.iter_rows(named=True):
        cells = [html.escape(r["run"]), str(r["folds"]), str(r["seeds"])]
        for c in TABLE_COLUMNS:
            if r[c] is None:
                cells.append("undefined")
                continue
            interval = f" <small>[{r[f'{c}_lo']:.3f}, {r[f'{c}_hi']:.3f}]</small>" if r[f"{c}_lo"] is not None else ""
            sd = f" <small>± {r[f'{c}_sd']:.3f}</small>" if r[f"{c}_sd"] is not None else ""
            cells.append(f"{r[c]:.3f}{interval}{sd}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
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


def write_report(evaluation: Evaluation, path: str | Path, title: str = "Valence / arousal heads", notes: str = "",
                 stats: StatsConfig = StatsConfig(), baseline: str | None = None, results: dict | None = None) -> Path:
    """Write the HTML report to ``path`` (images embedded, no external files). ``results`` from
    ``heads.evaluate.write_evaluation`` avoids computing the intervals twice."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    results = results or summarise(evaluation, stats, baseline)
    table = results_table(results)
    figures = [
        ("Per-fold CCC", _png_data_uri(plot_per_fold, evaluation.per_fold)),
        ("Predicted vs true (test utterances of all folds)", _png_data_uri(plot_scatter, evaluation.predictions)),
        ("Attention weights: what valence and arousal lean on", _png_data_uri(plot_attention, evaluation.predictions)),
    ]
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
    provenance = {"cache": first.get("cache"), "cache_provenance": first.get("cache_provenance"),
                  "runs": {k: [r["config"] for r in v][:1] for k, v in evaluation.records.items()},
                  "packages": first.get("packages")}
    comparison_rows = [{"run": r["label"], "metric": r["metric"], "Δ": r["delta"], "interval": r["ci"],
                        "p (Holm)": r["p_holm"], "reading": r["reading"]}
                       for r in (results["comparisons"] or {"rows": []})["rows"]]
    speakers = [{"run": label, **row} for label, v in runs.items() for row in v["per_speaker"]]
    categories = [{"run": label, **row} for label, v in runs.items() for row in v["per_category"]]
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(notes)}</p>" if notes else "",
        "<h2>Results</h2>", f"<p>{html.escape(MEANING)}.</p>", _table_html(table),
        f"<pre>{html.escape(markdown_table(table))}</pre>",
        *([f"<h2>Comparisons</h2><pre>{html.escape(comparison_markdown(results))}</pre>",
           _rows_html(comparison_rows, "comparisons")] if comparison_rows else []),
        f"<h2>Attention</h2><ul>{attention_lines or '<li>no attention heads among these runs</li>'}</ul>",
        *(f'<h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" src="{uri}">' for t, uri in figures),
        "<h2>Per speaker (test utterances, mean over seeds)</h2>", _rows_html(speakers, "per-speaker"),
        *(["<h2>Per category (error = predicted - true)</h2>", _rows_html(categories, "per-category")]
          if categories else []),
        "<h2>Provenance</h2>", f"<pre>{html.escape(json.dumps(provenance, indent=2, default=str))}</pre>",
    ]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "td:first-child{text-align:left}img{max-width:100%}pre{background:#f6f6f6;padding:8px;overflow:auto}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    return path
