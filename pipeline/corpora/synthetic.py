"""A synthetic dialogue corpus generated with numpy, for the demo when no real corpus is at hand.

Each utterance is a glottal pulse train (Rosenberg pulses) through three formant resonators, cut into
syllables. Its emotion controls the acoustics so that valence and arousal are actually recoverable:

* arousal (1-5) raises F0 (+2 semitones per point), loudness (+3 dB per point), syllable rate and F0 range;
* valence (1-5) sets the F0 contour slope within syllables (rising for positive, falling for negative)
  and the brightness of the source (steeper spectral tilt for negative valence);
* each dialogue's emotion follows a sticky Markov chain, so context helps (the dialogue-state stage).

Files are 16 kHz PCM16 WAVs; the manifest is a generic CSV (``pipeline.corpora.generic``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

RATE = 16000
EMOTIONS = {"happy": (4.3, 4.0), "angry": (1.6, 4.4), "sad": (1.7, 1.7), "calm": (4.0, 1.8), "neutral": (3.0, 3.0)}


def rosenberg_pulse_train(f0_hz: np.ndarray, open_quotient: float, rate: int = RATE) -> np.ndarray:
    """Glottal flow derivative-like source: one Rosenberg pulse per period of the ``f0_hz`` contour [S]."""
    phase = np.cumsum(f0_hz / rate) % 1.0
    rise = open_quotient * 0.6
    pulse = np.where(phase < rise, 0.5 * (1 - np.cos(np.pi * phase / rise)),
                     np.where(phase < open_quotient, np.cos(0.5 * np.pi * (phase - rise) / (open_quotient - rise)), 0.0))
    return np.diff(pulse, prepend=0.0)


def resonator(x: np.ndarray, freq_hz: float, bandwidth_hz: float, rate: int = RATE) -> np.ndarray:
    """Two-pole resonance (a formant): ``y[i] = x[i] + a1 y[i-1] + a2 y[i-2]``, float64 (an IIR filter)."""
    r = np.exp(-np.pi * bandwidth_hz / rate)
    a1, a2 = 2 * r * np.cos(2 * np.pi * freq_hz / rate), -r * r
    y = torchaudio.functional.lfilter(torch.from_numpy(np.asarray(x, np.float64)),
                                      torch.tensor([1.0, -a1, -a2], dtype=torch.float64),
                                      torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), clamp=False)
    return y.numpy()


def synth_utterance(valence: float, arousal: float, speaker_f0_hz: float, rng: np.random.Generator,
                    seconds: float = 1.6) -> np.ndarray:
    """One utterance of syllables and short pauses whose prosody encodes (valence, arousal)."""
    f0_base = speaker_f0_hz * 2 ** ((arousal - 3) * 2 / 12)
    syllable_s = 0.26 - 0.03 * (arousal - 3)
    level = 10 ** ((arousal - 3) * 3 / 20) * 0.08
    slope_st = (valence - 3) * 2.0  # semitones across a syllable
    pieces, total = [], 0
    n_total = int(seconds * RATE)
    while total < n_total:
        n = int(syllable_s * RATE * rng.uniform(0.8, 1.2))
        start_st = rng.normal(0, 0.6 + 0.4 * arousal)
        contour = f0_base * 2 ** ((start_st + np.linspace(0, slope_st, n)) / 12)
        source = rosenberg_pulse_train(contour, open_quotient=0.5 + 0.06 * (3 - valence))
        envelope = np.sin(np.linspace(0, np.pi, n)) ** 0.5
        vowel = rng.choice([(700, 1200), (400, 2000), (300, 2300), (500, 900)])
        voiced = sum(resonator(source, f, 80 + 0.1 * f) for f in (*vowel, 2600))
        pieces.append(level * envelope * voiced / (np.abs(voiced).max() + 1e-9))
        pause = int(RATE * rng.uniform(0.03, 0.08) * (1.6 - 0.15 * arousal))
        pieces.append(np.zeros(pause))
        total += n + pause
    wave = np.concatenate(pieces)[:n_total]
    return (wave + 0.002 * rng.standard_normal(len(wave))).astype(np.float32)


def write_synthetic_corpus(root: str | Path, dialogs_per_fold: int = 4, turns: int = 12, stay: float = 0.8,
                           seed: int = 0, scale: tuple[float, float] = (1.0, 5.0), name: str = "") -> Path:
    """Write WAVs and ``manifest.csv`` (5 folds x 2 speakers, one female and one male) under ``root``; returns the
    manifest path. The acoustics follow valence/arousal on 1-5; the labels are written on ``scale`` (its ends in
    ``scale_low``/``scale_high``), so two corpora can rate the same emotions on different scales. ``name`` prefixes
    the speakers and dialogues (two corpora then share none)."""
    root = Path(root)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(EMOTIONS)
    low, high = scale
    lines = ["utt_id,path,speaker,fold,valence,arousal,dialog_id,start_s,emotion,gender,scale_low,scale_high"]
    for fold in range(1, 6):
        speakers = {f"{name}s{fold}f": rng.uniform(190, 230), f"{name}s{fold}m": rng.uniform(100, 130)}
        for d in range(dialogs_per_fold):
            dialog = f"{name}fold{fold}_dialog{d}"
            emotion = rng.choice(names)
            for t in range(turns):
                if rng.random() > stay:
                    emotion = rng.choice(names)
                speaker = list(speakers)[t % 2]
                valence, arousal = np.clip(np.array(EMOTIONS[emotion]) + rng.normal(0, 0.3, 2), 1, 5)
                utt = f"{dialog}_t{t:02d}"
                wave = synth_utterance(valence, arousal, speakers[speaker], rng)
                soundfile.write(root / "wav" / f"{utt}.wav", wave, RATE, subtype="PCM_16")
                v, a = (low + (x - 1) * (high - low) / 4 for x in (valence, arousal))  # 1-5 -> the corpus's scale
                gender = "female" if speaker.endswith("f") else "male"
                lines.append(f"{utt},wav/{utt}.wav,{speaker},{fold},{v:.3f},{a:.3f},{dialog},{t * 2.0},{emotion},"
                             f"{gender},{low:g},{high:g}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
