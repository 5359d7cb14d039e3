"""What a cache holds, for people: rows, hours, speakers, folds with their sizes, label ranges, stages with
their models and settings, failures (``cache info``). What each stage reports about itself (its model, the
features often undefined, ...) is given by the caller: the pipeline's stage registry knows the stages."""

from __future__ import annotations

from collections.abc import Mapping

from cache.reader import CacheReader
from core.columns import manifest_splits


def cache_summary(reader: CacheReader, stage_facts: Mapping[str, tuple[dict, str]] = {}) -> dict:  # noqa: B006
    """The facts ``cache info`` prints, as a JSON-serialisable dict (``--json`` adds the full provenance).
    ``stage_facts``: stage -> (its own facts, the text that describes them) (``pipeline.stages.registry``)."""
    m = reader.manifest
    folds = {}
    partitioned = manifest_splits(m) is not None  # then by partition name (train, dev, Test1, ...)
    for (fold,), rows in m.group_by("split" if partitioned else "fold", maintain_order=True):
        folds[str(fold)] = {"utterances": rows.height, "speakers": sorted(rows["speaker"].unique().to_list()),
                            "hours": float(rows["duration_s"].fill_null(0.0).sum()) / 3600}
    labels = {}
    for column in ("valence", "arousal", "dominance"):
        values = m[column].drop_nulls()
        if len(values):
            labels[column] = {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}
    emotions = m["emotion"].drop_nulls().value_counts(sort=True)
    stages = {}
    for stage in reader.stages:
        ok = reader.read(stage, "ok")
        stages[stage] = {"ok": int(ok.sum()), "rows": len(ok), **stage_facts.get(stage, ({}, ""))[0],
                         "text": stage_facts.get(stage, ({}, ""))[1]}
    return {
        "path": str(reader.path), "schema_version": reader.schema_version, "created_utc": reader.created_utc,
        "utterances": m.height, "hours": float(m["duration_s"].fill_null(0.0).sum()) / 3600,
        "speakers": m["speaker"].n_unique(), "dialogues": m["dialog_id"].n_unique(), "folds": folds, "partitioned": partitioned,
        "labels": labels, "emotions": dict(zip(emotions["emotion"].to_list(), emotions["count"].to_list())),
        "stages": stages, "failures": len(reader.failures),
    }


def format_summary(summary: dict, failures: list) -> str:
    """``cache_summary`` as lines of text."""
    lines = [f"{summary['path']}: {summary['utterances']} utterances, {summary['hours']:.2f} h of audio, "
             f"{summary['speakers']} speakers, {summary['dialogues']} dialogues; schema {summary['schema_version']}, "
             f"created {summary['created_utc']}"]
    lines.append(("partitions: " if summary.get("partitioned") else "folds: ") + "; ".join(f"{k}: {v['utterances']} ({', '.join(v['speakers'])})"
                                       for k, v in summary["folds"].items()))
    lines.append("labels: " + "; ".join(f"{k} {v['min']:.2f}-{v['max']:.2f} (mean {v['mean']:.2f})"
                                        for k, v in summary["labels"].items()))
    if summary["emotions"]:
        lines.append("categories: " + ", ".join(f"{k} {v}" for k, v in summary["emotions"].items()))
    for stage, facts in summary["stages"].items():
        lines.append(f"[{stage}] {facts['ok']} of {facts['rows']} ok" + (f"; {facts['text']}" if facts["text"] else ""))
    if failures:
        lines.append(f"failures ({len(failures)}):")
        lines += [f"  [{f.stage}] {f.utt_id} {f.path}: {f.reason}" for f in failures[:50]]
        if len(failures) > 50:
            lines.append(f"  ... and {len(failures) - 50} more (cache info --json lists all)")
    return "\n".join(lines)
