"""MSP-Podcast read natively from its release layout: ``Audios/*.wav`` and ``Labels/labels_consensus.csv``.

The consensus labels come as CSV (``labels_consensus.csv``, preferred when both are present)::

    FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set
    MSP-PODCAST_0001_0008.wav,N,2.2,4.0,2.6,30,Male,Test1

or as JSON (``labels_consensus.json``): an object keyed by file name whose values carry the same fields
(``{"MSP-PODCAST_0001_0008.wav": {"EmoClass": "N", "EmoAct": 2.2, ..., "Split_Set": "Test1"}, ...}``); a list
of objects that carry ``FileName`` is read too. Releases up to 1.8 spelled the file ``labels_concensus``; that
name is read when the current one is absent.

Ratings are the corpus's 1-7 scales: ``valence`` = EmoVal, ``arousal`` = EmoAct, ``dominance`` = EmoDom (may be
empty). ``emotion`` = the EmoClass code as a word (``X`` = the raters did not agree; unknown codes are kept).

Speakers: ``SpkrID`` as written, but segments whose speaker is ``Unknown`` become one pseudo-speaker per podcast,
``unknown-<podcast>``. Many thousand segments of different podcasts have no speaker id; as one speaker they would
dominate the speaker bootstrap and make any speaker-disjoint choice move them all together.

Dialogues: ``dialog_id`` = ``MSP-PODCAST_<podcast>``. MSP-Podcast gives no times, so ``start_s`` is an order
key, not seconds: the segment number of ``MSP-PODCAST_<podcast>_<segment>.wav``, plus part/10000 for names with
a third number (``MSP-PODCAST_<podcast>_<segment>_<part>.wav``); segments of a podcast follow one another in
that order.

Partitions: ``split`` = ``core.protocol.canonical_split`` of Split_Set (Train -> train, Development -> dev,
Test1 / Test2 / Test3 kept; older releases' ``Validation`` -> dev); ``fold`` numbers the test sets
(``core.protocol.partition_folds``) and is 0 on train and dev rows.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import polars as pl

from core.columns import ALL_COLUMNS
from core.errors import InputError, Problem
from core.protocol import canonical_split, partition_folds
from pipeline.corpora.audio_info import audio_header
from pipeline.corpora.manifest import normalise_manifest, read_text_table

EMOTION_CODES: dict[str, str] = {
    "A": "anger",
    "S": "sadness",
    "H": "happiness",
    "U": "surprise",
    "F": "fear",
    "D": "disgust",
    "C": "contempt",
    "N": "neutral",
    "O": "other",
    "X": "no agreement",
}
SPLIT_SETS = ("Train", "Development", "Test1", "Test2", "Test3")
_SPLIT_SPELLING = {name.lower(): name for name in SPLIT_SETS} | {"validation": "Development"}  # <= 1.8: Validation
REQUIRED = ("FileName", "EmoClass", "EmoAct", "EmoVal", "SpkrID", "Split_Set")  # EmoDom and Gender may be absent
LABEL_FILES = ("labels_consensus.csv", "labels_consensus.json", "labels_concensus.csv", "labels_concensus.json")

_FILE_NAME = re.compile(r"^MSP-PODCAST_(\d+)_(\d+)(?:_(\d+))?\.wav$")


def _empty() -> pl.DataFrame:
    return normalise_manifest(pl.DataFrame(schema=ALL_COLUMNS))


def _text(value: object) -> str:
    """A cell as stripped text: ``None`` -> ``""``, a whole JSON number -> its digits (``127.0`` -> ``127``)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _rating(value: object, field: str, required: bool) -> float | None:
    """A finite rating, ``None`` for an empty optional one; raises ``ValueError(reason)`` otherwise."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if required:
            raise ValueError(f"{field} is missing")
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{field} is not a finite number: {value!r}")
    return number


def _order_key(segment: str, part: str | None) -> float:
    return int(segment) + (int(part) / 10000 if part is not None else 0.0)


def _row(name: str, rec: dict, audio_dir: Path) -> dict | str:
    """The manifest row of one label record (``fold`` filled in later), or the reason it cannot be one."""
    m = _FILE_NAME.match(name)
    if not m:
        return f"file name {name!r} is not MSP-PODCAST_<podcast>_<segment>[_<part>].wav"
    podcast, segment, part = m.groups()
    try:
        arousal = _rating(rec.get("EmoAct"), "EmoAct", required=True)
        valence = _rating(rec.get("EmoVal"), "EmoVal", required=True)
        dominance = _rating(rec.get("EmoDom"), "EmoDom", required=False)
    except ValueError as err:
        return str(err)
    split_set = _SPLIT_SPELLING.get(_text(rec.get("Split_Set")).lower())
    if split_set is None:
        return f"Split_Set {_text(rec.get('Split_Set'))!r} is not one of {', '.join(SPLIT_SETS)}"
    wav = audio_dir / name
    if not wav.is_file():
        return f"missing audio file {wav}"
    speaker = _text(rec.get("SpkrID"))
    if speaker == "" or speaker.lower() == "unknown":
        speaker = f"unknown-{podcast}"
    code = _text(rec.get("EmoClass"))
    duration_s, sample_rate = audio_header(wav)
    return dict(
        utt_id=wav.stem, path=str(wav), duration_s=duration_s, sample_rate=sample_rate,
        speaker=speaker, dialog_id=f"MSP-PODCAST_{podcast}", start_s=_order_key(segment, part), fold=0,
        valence=valence, arousal=arousal, dominance=dominance,
        emotion=EMOTION_CODES.get(code, code) if code else None, split=canonical_split(split_set),
        gender={"female": "female", "male": "male"}.get(_text(rec.get("Gender")).lower()),
        scale_low=1.0, scale_high=7.0,
    )


def _csv_records(label_file: Path) -> list[tuple[int, str, dict]]:
    """``(line, file name, record)`` of every data row; line 1 is the header."""
    raw = read_text_table(label_file, REQUIRED)
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise InputError(f"{label_file}: missing required column(s): {', '.join(missing)}")
    return [(i + 2, _text(rec["FileName"]), rec) for i, rec in enumerate(raw.iter_rows(named=True))]


class _Object(list):
    """A JSON object as its ``(key, value)`` pairs in file order, so that repeated keys stay visible."""


def _json_records(label_file: Path) -> list[tuple[int, str, dict | None]]:
    """``(entry number, file name, record)`` of every entry (1-based, file order); record ``None`` when the entry
    is not an object."""
    try:
        data = json.loads(label_file.read_text(encoding="utf-8"), object_pairs_hook=_Object)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{label_file}: cannot be read as JSON ({err})") from None
    if isinstance(data, _Object):
        entries = [(name, value) for name, value in data]
    elif isinstance(data, list):
        entries = [(_text(dict(value).get("FileName")) if isinstance(value, _Object) else "", value) for value in data]
    else:
        raise InputError(f"{label_file}: expected a JSON object keyed by file name or a list of objects, "
                         f"not {type(data).__name__}")
    return [(n, name, dict(value) if isinstance(value, _Object) else None)
            for n, (name, value) in enumerate(entries, start=1)]


def read_msp_podcast(root: str | Path) -> tuple[pl.DataFrame, list[Problem]]:
    """Manifest of an MSP-Podcast release (``root`` holds ``Audios/`` and ``Labels/``).

    Problems name the label file and, for CSV, the 1-based line (header = line 1); for JSON the line is ``None``
    and the reason opens with the entry's file name. A problem skips its row only.
    """
    root = Path(root).resolve()
    label_file = next((root / "Labels" / name for name in LABEL_FILES if (root / "Labels" / name).is_file()), None)
    if label_file is None:
        return _empty(), [Problem(str(root), "no Labels/labels_consensus.csv or Labels/labels_consensus.json: "
                                             "not an MSP-Podcast release tree")]
    audio_dir = root / "Audios"
    if not audio_dir.is_dir():
        return _empty(), [Problem(str(root), "no Audios/ folder: not an MSP-Podcast release tree")]
    is_json = label_file.suffix == ".json"
    records = _json_records(label_file) if is_json else _csv_records(label_file)

    def problem(where: int, name: str, reason: str) -> Problem:
        if is_json:
            return Problem(str(label_file), f"{name or f'entry {where}'}: {reason}")
        return Problem(str(label_file), reason, where)

    rows: list[dict] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for where, name, rec in records:
        if rec is None:
            problems.append(problem(where, name, "entry is not an object"))
            continue
        if not name:
            problems.append(problem(where, name, "empty FileName"))
            continue
        if name in seen:
            first = f"entry {seen[name]}" if is_json else f"line {seen[name]}"
            named = "" if is_json else f" {name}"  # a JSON reason opens with the name already
            problems.append(problem(where, name, f"duplicate file name{named} (first at {first})"))
            continue
        seen[name] = where
        row = _row(name, rec, audio_dir)
        if isinstance(row, str):
            problems.append(problem(where, name, row))
            continue
        rows.append(row)
    df = pl.DataFrame(rows, schema=ALL_COLUMNS)
    df = df.with_columns(pl.Series("fold", partition_folds(df["split"].to_list()), dtype=pl.Int64))
    return normalise_manifest(df), problems
