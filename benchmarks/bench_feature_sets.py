"""Compute cost per hour of audio of the two hand-crafted feature sets, measured side by side in one run.

    .venv/bin/python benchmarks/bench_feature_sets.py [--files 100] [--rounds 3]

The same N EmoDB files (evenly spaced over the sorted list), decoded and resampled to 16 kHz once as the
stages do (``pipeline.features.audio.load_audio``), then ``prosody_features`` (Praat, ``praat-v2``) and
``egemaps_functionals`` (openSMILE eGeMAPS v02) on each file, in one process, one core. The order alternates
(file by file and round by round) so that drift in the machine's load falls on both sets alike. Reported:
seconds of compute per hour of audio, CPU (process time) and wall clock, median over rounds, and the ratio.
One warm-up call of each set comes first; its cost (imports, openSMILE's configuration) is printed apart,
since a worker pays it once, not per file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.features.audio import load_audio  # noqa: E402
from pipeline.features.egemaps import egemaps_functionals  # noqa: E402
from pipeline.features.prosody import prosody_features  # noqa: E402

EMODB_WAV = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "emodb" / "wav"  # ../shared beside the repo
RATE_HZ = 16000  # the stages' analysis rate
SETS = {"praat": prosody_features, "egemaps": egemaps_functionals}


def spread(files: list[Path], count: int) -> list[Path]:
    """``count`` files evenly spaced over the sorted list (several speakers and emotions, deterministic)."""
    step = max(1, len(files) // count)
    return files[::step][:count]


def timed(function, audio: np.ndarray) -> tuple[float, float]:  # noqa: ANN001
    """(CPU seconds of this process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    function(audio, RATE_HZ)
    return time.process_time() - cpu, time.perf_counter() - wall


def one_round(waves: list[np.ndarray], round_index: int) -> dict[str, tuple[float, float]]:
    """Total (CPU, wall) seconds per set over all files; which set goes first alternates per file and round."""
    totals = {name: [0.0, 0.0] for name in SETS}
    names = list(SETS)
    for i, wave in enumerate(waves):
        for name in names if (i + round_index) % 2 == 0 else names[::-1]:
            cpu, wall = timed(SETS[name], wave)
            totals[name][0] += cpu
            totals[name][1] += wall
    return {name: (cpu, wall) for name, (cpu, wall) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wav-dir", type=Path, default=EMODB_WAV)
    args = parser.parse_args()

    files = spread(sorted(args.wav_dir.glob("*.wav")), args.files)
    waves = [load_audio(str(f), RATE_HZ) for f in files]
    audio_h = sum(len(w) for w in waves) / RATE_HZ / 3600
    print(f"{len(waves)} files, {audio_h * 3600:.1f} s of audio at {RATE_HZ} Hz, {args.rounds} rounds")
    for name, function in SETS.items():
        cpu, wall = timed(function, waves[0])
        print(f"first call of {name} (imports, setup, one file): {cpu:.2f} s CPU, {wall:.2f} s wall")

    rounds = [one_round(waves, r) for r in range(args.rounds)]
    per_hour = {}
    for name in SETS:
        cpu = [r[name][0] / audio_h for r in rounds]
        wall = [r[name][1] / audio_h for r in rounds]
        per_hour[name] = statistics.median(cpu), statistics.median(wall)
        print(f"{name}: {per_hour[name][0]:.0f} s CPU / h of audio (rounds: {', '.join(f'{c:.0f}' for c in cpu)}), "
              f"{per_hour[name][1]:.0f} s wall / h")
    print(f"ratio praat / egemaps: {per_hour['praat'][0] / per_hour['egemaps'][0]:.2f}x CPU, "
          f"{per_hour['praat'][1] / per_hour['egemaps'][1]:.2f}x wall")


if __name__ == "__main__":
    main()
