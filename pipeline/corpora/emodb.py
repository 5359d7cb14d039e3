"""EmoDB (Berlin Database of Emotional Speech): file names -> speaker, emotion, and a documented V/A point.

EmoDB has categorical labels only. Each category is mapped to a point on the 1-5 valence/arousal scale
used by IEMOCAP, placed by its position on Russell's circumplex (Russell 1980): a convention, not a
measurement, listed in ``EMOTION_TO_VALENCE_AROUSAL`` and the README.

``fold`` groups the ten speakers into five speaker-disjoint pairs of one male and one female speaker,
mirroring IEMOCAP's five sessions.

EmoDB has no dialogues and no recording order: each utterance is its own dialogue (``dialog_id`` = ``utt_id``,
``start_s`` = 0), so the dialogue-state stage sees no context. An order invented from the file names would
leak the label: ``03a01Fa`` is speaker 03, text a01, emotion F, and in name order the previous file's emotion
carries 1.27 of the 2.74 bits of the current one's.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from core.columns import ALL_COLUMNS
from core.errors import Problem
from pipeline.corpora.audio_info import audio_header
from pipeline.corpora.manifest import normalise_manifest

# German initial -> (English name, valence 1-5, arousal 1-5)
EMOTION_TO_VALENCE_AROUSAL: dict[str, tuple[str, float, float]] = {
    "W": ("anger", 1.5, 4.5),
    "A": ("fear", 2.0, 4.0),
    "E": ("disgust", 1.75, 3.25),
    "T": ("sadness", 1.75, 1.75),
    "L": ("boredom", 2.5, 1.5),
    "N": ("neutral", 3.0, 3.0),
    "F": ("happiness", 4.5, 4.0),
}

# speaker code -> fold; each fold pairs one male (03 10 11 12 15) and one female (08 09 13 14 16) speaker.
SPEAKER_FOLD: dict[str, int] = {
    "03": 1, "08": 1,
    "10": 2, "09": 2,
    "11": 3, "13": 3,
    "12": 4, "14": 4,
    "15": 5, "16": 5,
}

MALE_SPEAKERS = {"03", "10", "11", "12", "15"}  # the corpus documentation; the others are female

_FILE_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z])\.wav$")


def read_emodb(root: str | Path) -> tuple[pl.DataFrame, list[Problem]]:
    """Manifest of an EmoDB folder (``root/wav/SSTTTEV.wav``, e.g. ``03a01Fa.wav``)."""
    root = Path(root).resolve()
    wav_dir = root / "wav"
    if not wav_dir.is_dir():
        return normalise_manifest(pl.DataFrame(schema=ALL_COLUMNS)), [
            Problem(str(root), "no wav/ folder: not an EmoDB tree")
        ]
    rows: list[dict] = []
    problems: list[Problem] = []
    for wav in sorted(wav_dir.glob("*.wav")):
        m = _FILE_NAME.match(wav.name)
        if not m:
            problems.append(Problem(str(wav), "file name is not EmoDB's SSTTTEV.wav pattern"))
            continue
        speaker, _sentence, emotion_code, _version = m.groups()
        if speaker not in SPEAKER_FOLD:
            problems.append(Problem(str(wav), f"unknown speaker {speaker}"))
            continue
        if emotion_code not in EMOTION_TO_VALENCE_AROUSAL:
            problems.append(Problem(str(wav), f"unknown emotion code {emotion_code}"))
            continue
        emotion, valence, arousal = EMOTION_TO_VALENCE_AROUSAL[emotion_code]
        duration_s, sample_rate = audio_header(wav)
        rows.append(
            dict(
                utt_id=wav.stem, path=str(wav), duration_s=duration_s, sample_rate=sample_rate,
                speaker=speaker, dialog_id=wav.stem, start_s=0.0, fold=SPEAKER_FOLD[speaker],
                valence=valence, arousal=arousal, dominance=None, emotion=emotion,
                gender="male" if speaker in MALE_SPEAKERS else "female", scale_low=1.0, scale_high=5.0,
            )
        )
    return normalise_manifest(pl.DataFrame(rows, schema=ALL_COLUMNS)), problems
