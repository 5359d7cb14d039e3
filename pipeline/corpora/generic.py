"""A user's own corpus described by a CSV or Parquet manifest.

Required columns: ``utt_id, path, speaker, valence, arousal`` and either ``fold`` (k folds, 1..k, leave one out)
or ``split`` (predefined partitions: ``train``, ``dev`` and test sets by name, e.g. ``Test1``; ``Train``,
``Development``, ``validation`` are read as ``train``/``dev``; with a filled ``split`` column, ``fold`` is
derived from it: the test set's number, 0 on train and dev rows); optional: ``dialog_id, start_s, dominance,
emotion, gender`` and the rating scale's ends ``scale_low, scale_high`` (both or neither; cross-corpus work
needs them). Relative paths are resolved against the manifest's folder. Without ``dialog_id``
each utterance is its own dialogue (no context, no order invented); without ``start_s`` (left empty) a
dialogue's rows keep the file's order, and ``--state-grouping speaker``, which orders by ``start_s`` alone, is
refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from core.columns import ALL_COLUMNS
from core.errors import InputError, Problem
from core.protocol import canonical_split, partition_folds, unusable_test_set_name
from pipeline.corpora.audio_info import audio_header
from pipeline.corpora.manifest import normalise_manifest, read_text_table

REQUIRED = ("utt_id", "path", "speaker", "fold", "valence", "arousal")  # "split" may stand in for "fold"
_NUMERIC = ("valence", "arousal", "dominance", "start_s", "scale_low", "scale_high")
MAX_RATING = 1e6  # no rating scale comes near; beyond it, squares in the statistics overflow float64


def _as_float(value: object) -> float | None:
    """A finite float, ``None`` for an empty cell; raises ``ValueError`` for anything else."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    number = float(value)  # ValueError for "high", "n/a", ...
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _read_table(manifest: Path) -> tuple[pl.DataFrame, int]:
    """The file as text columns, and the line number of its first data row (Parquet has no header line)."""
    return read_text_table(manifest, REQUIRED), 1 if manifest.suffix == ".parquet" else 2


def read_generic_manifest(manifest: str | Path) -> tuple[pl.DataFrame, list[Problem]]:
    """Normalised manifest of a user CSV/Parquet file; problems name the file and the 1-based line."""
    manifest = Path(manifest).resolve()
    if not manifest.is_file():
        raise InputError(f"{manifest}: manifest file not found")
    raw, first_line = _read_table(manifest)
    # A split column with a value in it means partitions; an empty one (a k-fold manifest written by
    # `cli.py manifest`) is no column at all.
    partitioned = "split" in raw.columns and raw["split"].str.strip_chars().fill_null("").ne("").any()
    missing = [c if c != "fold" else "fold (or split)" for c in REQUIRED
               if c not in raw.columns and not (c == "fold" and partitioned)]
    if missing:
        header = ",".join(raw.columns)
        hint = (f"; the header reads '{header[:80]}': columns must be separated by commas"
                if len(raw.columns) == 1 and any(sep in header for sep in ";\t|") else "")
        raise InputError(f"{manifest}: missing required column(s): {', '.join(missing)}{hint}")
    rows: list[dict] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, rec in enumerate(raw.iter_rows(named=True)):
        line = i + first_line
        utt_id = (rec.get("utt_id") or "").strip()
        if not utt_id:
            problems.append(Problem(str(manifest), "empty utt_id", line))
            continue
        if utt_id in seen:
            problems.append(Problem(str(manifest), f"duplicate utterance id {utt_id} (first at line {seen[utt_id]})", line))
            continue
        seen[utt_id] = line
        try:
            numbers = {k: _as_float(rec.get(k)) for k in _NUMERIC}
        except ValueError as err:
            problems.append(Problem(str(manifest), f"label not a number: {err.args[0]!r}", line))
            continue
        if numbers["valence"] is None or numbers["arousal"] is None:
            problems.append(Problem(str(manifest), "valence/arousal missing", line))
            continue
        absurd = [k for k in ("valence", "arousal", "dominance") if numbers[k] is not None and abs(numbers[k]) > MAX_RATING]
        scale = (numbers["scale_low"], numbers["scale_high"])
        if (scale[0] is None) != (scale[1] is None) or (scale[0] is not None and not scale[0] < scale[1]):
            problems.append(Problem(str(manifest), f"scale_low {scale[0]} / scale_high {scale[1]}: give both, low < high",
                                    line))
            continue
        if absurd:
            problems.append(Problem(str(manifest), f"{absurd[0]} {numbers[absurd[0]]:g} is not a rating (larger than "
                                                   f"{MAX_RATING:g} in magnitude)", line))
            continue
        split, fold = None, 0
        if partitioned:
            split = canonical_split(rec.get("split") or "")
            if not split:
                problems.append(Problem(str(manifest), "empty split (expected train, dev or a test set's name)", line))
                continue
            if reason := unusable_test_set_name(split):
                problems.append(Problem(str(manifest), reason, line))
                continue
        else:
            try:
                fold = int(str(rec.get("fold")).strip())
            except ValueError:
                problems.append(Problem(str(manifest), f"fold is not an integer: {rec.get('fold')!r}", line))
                continue
            if fold < 1:
                problems.append(Problem(str(manifest), f"fold must be a positive integer (1, 2, ...), not {fold}", line))
                continue
        if not (rec.get("speaker") or "").strip():
            problems.append(Problem(str(manifest), "empty speaker", line))
            continue
        wav = Path(rec["path"] or "")
        wav = wav if wav.is_absolute() else manifest.parent / wav
        if not wav.is_file():
            problems.append(Problem(str(manifest), f"missing audio file {wav}", line))
            continue
        duration_s, sample_rate = audio_header(wav)
        rows.append(
            dict(
                utt_id=utt_id, path=str(wav.resolve()), duration_s=duration_s, sample_rate=sample_rate,
                speaker=str(rec["speaker"]).strip(), dialog_id=rec.get("dialog_id") or utt_id,
                start_s=numbers["start_s"], fold=fold,
                valence=numbers["valence"], arousal=numbers["arousal"], dominance=numbers["dominance"],
                emotion=rec.get("emotion"), split=split, gender=(rec.get("gender") or "").strip().lower() or None,
                scale_low=scale[0], scale_high=scale[1],
            )
        )
    if partitioned:  # the fold of a partitioned row is its test set's number (core.protocol)
        for row, fold in zip(rows, partition_folds([r["split"] for r in rows])):
            row["fold"] = int(fold)
    return normalise_manifest(pl.DataFrame(rows, schema=ALL_COLUMNS)), problems
