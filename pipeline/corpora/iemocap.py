"""IEMOCAP read natively from ``IEMOCAP_full_release/``: summary lines of ``EmoEvaluation/*.txt``.

A summary line (tab separated)::

    [6.2901 - 8.2357]	Ses01F_impro01_F000	neu	[2.5000, 2.5000, 2.5000]

gives start/end (seconds), utterance id, category and mean [valence, arousal, dominance] ratings (1-5).
Header lines (``%``), annotator lines (``C-E2:``, ``A-E3:``) and blank lines are ignored. Sub-folders of
EmoEvaluation and macOS ``._*.txt`` files are not summary files. ``fold`` = session number (1-5).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from core.columns import ALL_COLUMNS
from core.errors import Problem
from pipeline.corpora.audio_info import audio_header
from pipeline.corpora.manifest import normalise_manifest

_SUMMARY = re.compile(r"^\[\s*(\S+)\s*-\s*(\S+)\s*\]\t(\S+)\t(\S+)\t\[([^\]]*)\]\s*$")
_SESSION_DIR = re.compile(r"^Session(\d+)$")


def speaker_of(utt_id: str) -> str:
    """``Ses01F_impro01_M003`` -> ``Ses01M``: the session plus the letter opening the last id segment."""
    return utt_id[:5] + utt_id.rsplit("_", 1)[1][0]


def parse_summary_line(line: str) -> tuple[float, float, str, str, list[float]] | str:
    """Parse one ``[start - end]`` line into ``(start_s, end_s, utt_id, category, [v, a, d])``.

    Returns a reason string instead when the line cannot be read.
    """
    m = _SUMMARY.match(line.rstrip("\r\n"))
    if not m:
        return "unreadable label line"
    start, end, utt_id, category, vad = m.groups()
    try:
        start_s, end_s = float(start), float(end)
        values = [float(v) for v in vad.split(",")]
    except ValueError:
        return f"label not a number: [{vad}]"
    if len(values) != 3:
        return f"expected [valence, arousal, dominance], got [{vad}]"
    return start_s, end_s, utt_id, category, values


def read_iemocap(root: str | Path) -> tuple[pl.DataFrame, list[Problem]]:
    """Manifest of an ``IEMOCAP_full_release`` tree (``root`` holds ``Session1`` ... ``Session5``)."""
    root = Path(root).resolve()
    sessions = sorted(
        (int(m.group(1)), d) for d in root.iterdir() if d.is_dir() and (m := _SESSION_DIR.match(d.name))
    ) if root.is_dir() else []
    if not sessions:
        return normalise_manifest(pl.DataFrame(schema=ALL_COLUMNS)), [
            Problem(str(root), "no Session<n> folders: not an IEMOCAP_full_release tree")
        ]
    rows: list[dict] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for session, session_dir in sessions:
        label_dir = session_dir / "dialog" / "EmoEvaluation"
        for label_file in sorted(label_dir.glob("*.txt")):
            if label_file.name.startswith("._") or not label_file.is_file():
                continue
            dialog_id = label_file.stem
            for line_no, line in enumerate(label_file.read_text(errors="replace").splitlines(), start=1):
                if not line.startswith("["):
                    continue  # header, annotator or blank line
                parsed = parse_summary_line(line)
                if isinstance(parsed, str):
                    problems.append(Problem(str(label_file), parsed, line_no))
                    continue
                start_s, _end_s, utt_id, category, (val, aro, dom) = parsed
                where = f"{label_file}:{line_no}"
                if utt_id in seen:
                    problems.append(Problem(str(label_file), f"duplicate utterance id {utt_id} (first at {seen[utt_id]})", line_no))
                    continue
                seen[utt_id] = where
                wav = session_dir / "sentences" / "wav" / dialog_id / f"{utt_id}.wav"
                if not wav.is_file():
                    problems.append(Problem(str(label_file), f"missing wav {wav}", line_no))
                    continue
                duration_s, sample_rate = audio_header(wav)
                rows.append(
                    dict(
                        utt_id=utt_id, path=str(wav), duration_s=duration_s, sample_rate=sample_rate,
                        speaker=speaker_of(utt_id), dialog_id=dialog_id, start_s=start_s, fold=session,
                        valence=val, arousal=aro, dominance=dom, emotion=category,
                        gender={"F": "female", "M": "male"}.get(speaker_of(utt_id)[-1]),
                        scale_low=1.0, scale_high=5.0,
                    )
                )
    return normalise_manifest(pl.DataFrame(rows, schema=ALL_COLUMNS)), problems

