"""What a cache holds, for people: rows, hours, speakers, folds with their sizes, label ranges, stages with
their models and settings, prosody features that are often undefined, failures (``cache info``)."""

from __future__ import annotations

import numpy as np

from cache.reader import CacheReader
from core.columns import manifest_splits


def cache_summary(reader: CacheReader) -> dict:
    """The facts ``cache info`` prints, as a JSON-serialisable dict (``--json`` adds the full provenance)."""
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
        provenance = reader.provenance(stage)
        facts: dict = {"ok": int(ok.sum()), "rows": len(ok)}
        if stage == "speech":
            model = provenance.get("model", {})
            facts.update(model=model.get("model_id"), weights_sha256=model.get("weights_sha256"),
                         hidden_states=model.get("num_hidden_states"), hidden_size=model.get("hidden_size"),
                         padding=model.get("padding_policy"), precision=provenance.get("config", {}).get("precision"),
                         device=provenance.get("device_type"))
        elif stage == "prosody":
            values = reader.read("prosody", "values")[ok]
            names = list(reader.read("prosody", "names"))
            undefined = np.isnan(values).mean(0) if len(values) else np.zeros(len(names))
            facts.update(feature_set=provenance.get("feature_set_version"), features=len(names),
                         undefined_share={n: float(u) for n, u in zip(names, undefined) if u > 0})
        elif stage == "state":
            config = provenance.get("config", {})
            facts.update(kind=config.get("kind", "mamba"), grouping=config.get("grouping"),
                         width=provenance.get("width", config.get("model", {}).get("d_state")),
                         folds=provenance.get("folds"), partitions=bool(provenance.get("partitions")),
                         backend=provenance.get("backend"),
                         units=len(provenance.get("units", provenance.get("updaters", []))))
        stages[stage] = facts
    return {
        "path": str(reader.path), "schema_version": reader.schema_version, "created_utc": reader.created_utc,
        "utterances": m.height, "hours": float(m["duration_s"].fill_null(0.0).sum()) / 3600,
        "speakers": m["speaker"].n_unique(), "dialogues": m["dialog_id"].n_unique(), "folds": folds, "partitioned": partitioned,
        "labels": labels, "emotions": dict(zip(emotions["emotion"].to_list(), emotions["count"].to_list())),
        "stages": stages, "failures": len(reader.failures),
    }


def format_summary(summary: dict, failures: list, most_undefined: int = 8) -> str:
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
        head = f"[{stage}] {facts['ok']} of {facts['rows']} ok"
        if stage == "speech":
            lines.append(f"{head}; model {facts['model']} (weights sha256 {str(facts['weights_sha256'])[:12]}...), "
                         f"{facts['hidden_states']} hidden states x {facts['hidden_size']}, {facts['precision']} on "
                         f"{facts['device']}, padding {facts['padding']}")
        elif stage == "prosody":
            worst = sorted(facts["undefined_share"].items(), key=lambda kv: -kv[1])[:most_undefined]
            lines.append(f"{head}; {facts['feature_set']}, {facts['features']} features; most often undefined: "
                         + (", ".join(f"{n} {share:.0%}" for n, share in worst) or "none"))
        elif stage == "state":
            fitted = "on the train partition" if facts["partitions"] else "per fold"
            trained = f"{facts['units']} updaters" if facts["kind"] == "mamba" else f"projection fitted {fitted}"
            experiments = "test sets" if facts["partitions"] else "folds"
            lines.append(f"{head}; {facts['kind']} over {facts['grouping']}, width {facts['width']}, {experiments} "
                         f"{facts['folds']}, {trained}, {facts['backend']}")
        else:
            lines.append(head)
    if failures:
        lines.append(f"failures ({len(failures)}):")
        lines += [f"  [{f.stage}] {f.utt_id} {f.path}: {f.reason}" for f in failures[:50]]
        if len(failures) > 50:
            lines.append(f"  ... and {len(failures) - 50} more (cache info --json lists all)")
    return "\n".join(lines)
