"""The HTML page of ``predict --report``: the predictions plotted (over time for segmented files), the first
rows as a table, and which model made them."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import polars as pl

from core.files import write_atomically
from heads.deployment.model_folder import ExportedModel
from heads.reporting.plots import plot_over_time, plot_prediction_scatter

SHOWN_ROWS = 50


def write_prediction_report(frame: pl.DataFrame, path: str | Path, model: ExportedModel) -> Path:
    """Write the page for ``frame`` (``heads.deployment.predict`` rows) to ``path`` (atomically); returns the path."""
    buffer = io.BytesIO()
    segmented = "start_s" in frame.columns
    if segmented:
        plot_over_time(frame, buffer, model.record.get("target_range"))
        caption = ("Valence and arousal of each segment against time (the first 12 files); the shaded bands are the "
                   "training labels' range")
    else:
        plot_prediction_scatter(frame, buffer)
        caption = "Each file's prediction in the valence/arousal plane"
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    columns = [c for c in ("utt_id", "segment", "start_s", "end_s", "valence", "arousal") if c in frame.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row[c])}</td>" for c in columns) + "</tr>"
                   for row in frame.head(SHOWN_ROWS).select(columns).to_dicts())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Predictions</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:1em auto}}td,th{{padding:2px 8px;text-align:right}}
img{{max-width:100%}}</style></head><body>
<h1>Predictions of model <code>{html.escape(str(model.record.get('label')))}</code></h1>
<p>{frame.height} prediction(s) from {frame['utt_id'].n_unique()} file(s); the model's card is in
<code>{html.escape(str(model.folder))}/README.md</code>.</p>
<figure><img alt="predictions" src="{image}"><figcaption>{caption}</figcaption></figure>
<h2>First {min(SHOWN_ROWS, frame.height)} rows</h2><table><tr>{head}</tr>{body}</table></body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda target: Path(target).write_text(page))
    return path


def _cell(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))
