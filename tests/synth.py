"""Synthetic audio and corpus trees with known properties, for tests (numpy only, no real recordings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

RATE = 16000


def harmonic_tone(f0_hz, seconds: float = 1.0, amplitude: float = 0.3, rate: int = RATE, harmonics: int = 8) -> np.ndarray:
    """A sawtooth-like voiced sound: harmonics k*f0 with 1/k amplitudes. ``f0_hz`` scalar or [S] contour."""
    f0 = np.asarray(f0_hz, dtype=np.float64)
    n = f0.shape[0] if f0.ndim else int(round(seconds * rate))
    f0 = np.broadcast_to(f0, (n,))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))
    return (amplitude * wave / np.abs(wave).max()).astype(np.float32)


def glide(f0_start_hz: float, f0_end_hz: float, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    """A tone whose F0 moves linearly in semitones from start to end: slope = 12*log2(end/start)/seconds."""
    n = int(round(seconds * rate))
    contour = f0_start_hz * (f0_end_hz / f0_start_hz) ** (np.arange(n) / n)
    return harmonic_tone(contour, seconds, rate=rate)


def write_wav(path: Path, wave: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave, rate, subtype=subtype)
    return path


def speechlike(seed: int, seconds: float, rate: int = RATE) -> np.ndarray:
    """Voiced syllables (varying F0 and loudness) separated by short pauses, plus a little noise."""
    rng = np.random.default_rng(seed)
    out = []
    total = 0.0
    while total < seconds:
        syllable = min(rng.uniform(0.12, 0.3), seconds - total)
        f0 = rng.uniform(110, 260)
        out.append(harmonic_tone(np.linspace(f0, f0 * rng.uniform(0.85, 1.15), int(syllable * rate)), syllable,
                                 amplitude=rng.uniform(0.1, 0.5), rate=rate))
        total += syllable
        gap = min(rng.uniform(0.03, 0.12), max(seconds - total, 0.0))
        out.append(np.zeros(int(gap * rate), dtype=np.float32))
        total += gap
    n = int(round(seconds * rate))
    wave = np.concatenate(out)[:n]
    wave = np.pad(wave, (0, n - len(wave)))
    return (wave + 0.003 * rng.standard_normal(len(wave))).astype(np.float32)


# --- IEMOCAP-shaped tree -------------------------------------------------------------------------

IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def iemocap_dialogs() -> dict[int, dict[str, list[tuple[str, str, tuple[float, float, float], float]]]]:
    """session -> dialog -> [(utt_id, category, (v, a, d), start_s)], with IEMOCAP's quirks."""
    sessions = {}
    for s in range(1, 6):
        impro = f"Ses0{s}F_impro01"
        script = f"Ses0{s}M_script01_1b" if s == 5 else f"Ses0{s}M_script01_1"
        sessions[s] = {
            impro: [
                (f"{impro}_F000", "neu", (2.5, 2.5, 2.5), 6.2901),
                (f"{impro}_M000", "xxx", (2.3333, 3.6667, 3.0), 1.0),
                (f"{impro}_F001", "ang", (1.5, 4.0 + s / 10, 3.5), 9.5),
            ],
            script: [
                (f"{script}_M000", "hap", (4.0, 3.5, 3.0), 0.5),
                (f"{script}_F000", "sad", (0.9, 1.5, 2.0), 3.25),  # slightly outside 1-5, as in the corpus
            ],
        }
    return sessions


def write_iemocap_tree(root: Path, seconds: float = 0.6) -> Path:
    """``root/IEMOCAP_full_release`` with 5 sessions, annotator lines, junk files and sub-folders."""
    base = root / "IEMOCAP_full_release"
    seed = 0
    for session, dialogs in iemocap_dialogs().items():
        label_dir = base / f"Session{session}" / "dialog" / "EmoEvaluation"
        for sub in ("Categorical", "Attribute", "Self-evaluation"):
            (label_dir / sub).mkdir(parents=True, exist_ok=True)
            (label_dir / sub / f"Ses0{session}F_impro01_e1_cat.txt").write_text("Ses0xF_impro01_F000 :Neutral state; ()\n")
        for dialog, turns in dialogs.items():
            lines = [IEMOCAP_HEADER]
            for utt_id, category, (v, a, d), start in turns:
                lines.append(f"[{start:.4f} - {start + seconds:.4f}]\t{utt_id}\t{category}\t[{v:.4f}, {a:.4f}, {d:.4f}]\n")
                lines.append("C-E2:\tNeutral;\t()\nC-E3:\tAnger;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n")
                seed += 1
                write_wav(base / f"Session{session}" / "sentences" / "wav" / dialog / f"{utt_id}.wav",
                          speechlike(seed, seconds))
            (label_dir / f"{dialog}.txt").write_text("".join(lines))
            (label_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07junk")
    return base


# --- EmoDB-shaped tree ---------------------------------------------------------------------------

EMODB_SPEAKERS = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")


def write_emodb_tree(root: Path, emotions: str = "WN", seconds: float = 0.5) -> Path:
    """``root/wav/SSTTTEV.wav``: every speaker says sentence a01 in each of ``emotions``."""
    for i, speaker in enumerate(EMODB_SPEAKERS):
        for j, emotion in enumerate(emotions):
            write_wav(root / "wav" / f"{speaker}a01{emotion}a.wav", speechlike(100 * i + j, seconds, rate=22050), rate=22050)
    return root


# --- MSP-Podcast-shaped tree ---------------------------------------------------------------------

MSP_FIELDS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")


def msp_record(file_name: str, **fields) -> dict:
    """One consensus-label record (ratings 1-7); ``fields`` override the defaults."""
    return {"FileName": file_name, "EmoClass": "N", "EmoAct": 4.0, "EmoVal": 4.0, "EmoDom": 4.0, "SpkrID": 1,
            "Gender": "Female", "Split_Set": "Train", **fields}


# 5 podcasts, segments listed out of order; podcast 0001 has three-number names; Unknown speakers in four podcasts.
MSP_RECORDS = (
    msp_record("MSP-PODCAST_0001_0008.wav", EmoClass="N", EmoAct=2.2, EmoVal=4.0, EmoDom=2.6, SpkrID=127),
    msp_record("MSP-PODCAST_0001_0003.wav", EmoClass="H", EmoAct=5.5, EmoVal=6.2, EmoDom=5.0, SpkrID=127),
    msp_record("MSP-PODCAST_0001_0011_0002.wav", EmoClass="A", EmoAct=6.4, EmoVal=1.8, EmoDom=5.8, SpkrID="Unknown"),
    msp_record("MSP-PODCAST_0001_0011_0001.wav", EmoClass="S", EmoAct=1.6, EmoVal=2.0, EmoDom=2.2, SpkrID="Unknown",
               Gender="Male"),
    msp_record("MSP-PODCAST_0002_0002.wav", EmoClass="X", EmoAct=3.8, EmoVal=3.6, EmoDom=3.8, SpkrID=45,
               Split_Set="Development"),
    msp_record("MSP-PODCAST_0002_0001.wav", EmoClass="N", EmoAct=4.0, EmoVal=4.2, EmoDom=4.0, SpkrID=45,
               Split_Set="Development"),
    msp_record("MSP-PODCAST_0002_0004.wav", EmoClass="U", EmoAct=5.2, EmoVal=5.0, EmoDom=4.4, SpkrID="unknown",
               Split_Set="Development"),
    msp_record("MSP-PODCAST_0003_0005.wav", EmoClass="C", EmoAct=4.6, EmoVal=2.4, EmoDom=5.2, SpkrID=30,
               Gender="Male", Split_Set="Test1"),
    msp_record("MSP-PODCAST_0003_0002.wav", EmoClass="D", EmoAct=4.2, EmoVal=2.0, EmoDom=4.6, SpkrID="Unknown",
               Split_Set="Test1"),
    msp_record("MSP-PODCAST_0004_0010.wav", EmoClass="F", EmoAct=5.8, EmoVal=2.6, EmoDom=None, SpkrID=31,
               Gender="Male", Split_Set="Test2"),
    msp_record("MSP-PODCAST_0004_0007.wav", EmoClass="O", EmoAct=3.0, EmoVal=3.4, EmoDom=3.2, SpkrID="Unknown",
               Split_Set="Test2"),
    msp_record("MSP-PODCAST_0005_0001.wav", EmoClass="N", EmoAct=3.4, EmoVal=4.4, EmoDom=3.6, SpkrID="Unknown"),
    msp_record("MSP-PODCAST_0005_0002.wav", EmoClass="H", EmoAct=4.8, EmoVal=5.6, EmoDom=4.2, SpkrID=127),
)


def write_msp_tree(root: Path, fmt: str = "csv", seconds: float = 0.3, extra: tuple[dict, ...] = (),
                   missing_audio: tuple[str, ...] = ()) -> Path:
    """``root/Audios/*.wav`` and ``root/Labels/labels_consensus.<csv|json>`` for ``MSP_RECORDS + extra``.

    ``fmt``: ``csv`` (line i+2 = record i), ``json`` (object keyed by file name, written by hand so that a repeated
    name stays repeated) or ``json-list`` (list of objects with FileName). Every record gets a 16 kHz wav but those
    named in ``missing_audio``.
    """
    import json  # imported here: this section is appended to the module

    records = [*MSP_RECORDS, *extra]
    labels = root / "Labels"
    labels.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        lines = [",".join(MSP_FIELDS)] + [",".join("" if r[f] is None else str(r[f]) for f in MSP_FIELDS)
                                          for r in records]
        (labels / "labels_consensus.csv").write_text("\n".join(lines) + "\n")
    elif fmt == "json":
        entries = [f"  {json.dumps(r['FileName'])}: {json.dumps({f: r[f] for f in MSP_FIELDS[1:]})}" for r in records]
        (labels / "labels_consensus.json").write_text("{\n" + ",\n".join(entries) + "\n}\n")
    elif fmt == "json-list":
        (labels / "labels_consensus.json").write_text(json.dumps(records, indent=1))
    else:
        raise ValueError(f"fmt must be csv, json or json-list, not {fmt}")
    (root / "Audios").mkdir(parents=True, exist_ok=True)
    for seed, record in enumerate(records):
        if record["FileName"] not in missing_audio:
            write_wav(root / "Audios" / record["FileName"], speechlike(500 + seed, seconds))
    return root
