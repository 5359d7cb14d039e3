"""Manifests of new, unlabelled audio for ``predict``: a list of files, or a table with at least ``path``.

A prediction manifest has the cache schema's columns with null labels and fold 1 (no experiment uses it).
``dialog_id`` and ``start_s`` give dialogue order when the table has them; without them each file is its own
dialogue (no context).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.errors import InputError, Problem
from pipeline.corpora.audio_info import audio_header
from pipeline.corpora.manifest import normalise_manifest, read_text_table


def prediction_manifest(audio: list[str] | None = None, manifest: str | None = None
                        ) -> tuple[pl.DataFrame, list[Problem]]:
    """Rows for ``audio`` files or a CSV/Parquet ``manifest`` (columns ``path`` and optionally ``utt_id``,
    ``speaker``, ``dialog_id``, ``start_s``; relative paths are relative to the manifest). Missing or
    unreadable files are problems (the rest is returned)."""
    if bool(audio) == bool(manifest):
        raise InputError("give either audio files or --manifest, not both or neither")
    if manifest:
        source = Path(manifest)
        if not source.is_file():
            raise InputError(f"{source}: no such manifest")
        table = read_text_table(source, ("path", "utt_id", "speaker", "dialog_id", "start_s"))
        if "path" not in table.columns:
            raise InputError(f"{source}: a prediction manifest needs a 'path' column")
        records = table.to_dicts()
        base = source.parent
    else:
        records, base, source = [{"path": a} for a in audio or []], Path.cwd(), None
    rows, problems, seen = [], [], set()
    for line, record in enumerate(records, start=2 if source else 1):
        where = str(source) if source else str(record["path"])
        path = Path(str(record["path"]))
        path = path if path.is_absolute() else (base / path)
        if not path.is_file():
            problems.append(Problem(where, f"missing audio file {path}", line if source else None))
            continue
        try:
            start_s = float(record.get("start_s") or 0.0)
        except ValueError:
            problems.append(Problem(where, f"start_s is not a number: {record.get('start_s')!r}", line if source else None))
            continue
        duration, rate = audio_header(path)
        utt_id = str(record.get("utt_id") or path.stem)
        if utt_id in seen:
            utt_id = f"{utt_id}#{line}"  # two files with one name in different folders
        seen.add(utt_id)
        dialog = record.get("dialog_id")
        rows.append({"utt_id": utt_id, "path": str(path.resolve()), "duration_s": duration, "sample_rate": rate,
                     "speaker": str(record.get("speaker") or "unknown"),
                     "dialog_id": str(dialog) if dialog not in (None, "") else f"file:{utt_id}",
                     "start_s": start_s, "fold": 1, "valence": None, "arousal": None})
    if not rows:
        raise InputError("no audio to predict" + (f": {problems[0].reason}" if problems else ""))
    return normalise_manifest(pl.DataFrame(rows, infer_schema_length=None)), problems
