"""Long recordings: which segmentation gives cleaner segments, and does `predict --segment` memory grow with length.

    .venv/bin/python benchmarks/bench_long.py [--steps split,memory] [--recordings 20] [--minutes 10,120]

Audio: EmoDB utterances (../shared/corpora/emodb) in a random order (seeded; never the file names' order, which
encodes the emotion), joined by pauses of 0.3-2.0 s of quiet noise (-60 dBFS), so the true utterance bounds
are known.

* ``split``: on ``--recordings`` such recordings of ~40 utterances each, the segments of ``--split fixed`` and
  ``--split energy`` at 4 s / 2 s hop: how many segments mix two utterances (more than 10 % of the segment's
  speech from a second one; two utterances = possibly two emotions in one prediction), the share of segment
  time that is pause, and the share of utterance time no segment covers.
* ``memory``: one recording of each length in ``--minutes`` (utterances repeated), predicted with
  ``cli.py predict --segment 4 --hop 2`` in a fresh process with an exported model (random tiny WavLM,
  a head trained on 60 EmoDB files; the point is the pipeline, not the model): time and peak resident memory
  of the largest process. Memory must not grow with duration.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RATE = 16000


def emodb_waves(limit: int | None = None) -> list[np.ndarray]:
    from demo import SHARED_EMODB

    files = sorted((SHARED_EMODB / "wav").glob("*.wav"))
    if not files:
        raise SystemExit(f"bench_long needs the EmoDB corpus at {SHARED_EMODB}")
    order = np.random.default_rng(0).permutation(len(files))  # not the names' order: they encode the emotion
    return [soundfile.read(files[i], dtype="float32")[0] for i in order[:limit]]


def join_with_pauses(waves: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(recording [S], utterance bounds [K, 2] seconds)``: pauses of 0.3-2.0 s of -60 dBFS noise between."""
    pieces, bounds, t = [], [], 0
    for wave in waves:
        pause = rng.normal(0, 1e-3, int(rng.uniform(0.3, 2.0) * RATE)).astype(np.float32)
        pieces += [pause, wave]
        bounds.append(((t + len(pause)) / RATE, (t + len(pause) + len(wave)) / RATE))
        t += len(pause) + len(wave)
    return np.concatenate(pieces), np.array(bounds)


def split_quality(segments: np.ndarray, utterances: np.ndarray, duration_s: float) -> dict[str, float]:
    """Mixed segments (share), pause share of segment time, utterance time left uncovered (share)."""
    overlap = np.clip(np.minimum(segments[:, None, 1], utterances[None, :, 1])
                      - np.maximum(segments[:, None, 0], utterances[None, :, 0]), 0, None)  # [segments, utterances]
    speech = overlap.sum(1)
    second = np.sort(overlap, axis=1)[:, -2] if overlap.shape[1] > 1 else np.zeros(len(segments))
    mixed = float(np.mean(second > 0.1 * np.maximum(speech, 1e-9)))
    pause = float(1 - speech.sum() / (segments[:, 1] - segments[:, 0]).sum())
    grid = np.arange(0, duration_s, 0.01)
    in_speech = ((grid[:, None] >= utterances[None, :, 0]) & (grid[:, None] < utterances[None, :, 1])).any(1)
    covered = ((grid[:, None] >= segments[None, :, 0]) & (grid[:, None] < segments[None, :, 1])).any(1)
    return {"segments": len(segments), "mixed": mixed, "pause": pause,
            "uncovered": float(1 - (in_speech & covered).sum() / in_speech.sum())}


def step_split(recordings: int) -> None:
    from pipeline.features.segments import energy_segments, fixed_segments, frame_energy_db

    waves = emodb_waves()
    rng = np.random.default_rng(1)
    results: dict[str, list[dict]] = {"fixed": [], "energy": []}
    for _ in range(recordings):
        chosen = [waves[i] for i in rng.choice(len(waves), 40, replace=False)]
        wave, utterances = join_with_pauses(chosen, rng)
        duration = len(wave) / RATE
        results["fixed"].append(split_quality(fixed_segments(duration, 4.0, 2.0), utterances, duration))
        energy = energy_segments(frame_energy_db(wave, RATE), duration, 4.0, 2.0)
        results["energy"].append(split_quality(energy, utterances, duration))
    print(f"{recordings} recordings of 40 EmoDB utterances with 0.3-2.0 s pauses; segments 4 s, hop 2 s")
    print(f"{'split':8} {'segments':>9} {'mixed':>8} {'pause':>8} {'uncovered':>10}")
    for name, rows in results.items():
        mean = {k: np.mean([row[k] for row in rows]) for k in rows[0]}
        print(f"{name:8} {mean['segments']:9.1f} {mean['mixed']:8.1%} {mean['pause']:8.1%} {mean['uncovered']:10.1%}")


def write_long(path: Path, minutes: float, waves: list[np.ndarray], rng: np.random.Generator) -> None:
    """A recording of ``minutes`` written piece by piece (the benchmark never holds it whole either)."""
    with soundfile.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as f:
        written = 0
        while written < minutes * 60 * RATE:
            wave = waves[rng.integers(len(waves))]
            pause = rng.normal(0, 1e-3, int(rng.uniform(0.3, 2.0) * RATE)).astype(np.float32)
            f.write(np.concatenate([pause, wave]))
            written += len(pause) + len(wave)


def model_folder(work: Path) -> Path:
    """An exported model: random tiny WavLM, a separate-attn head trained on 60 EmoDB files (fold 1)."""
    from bench_model import train_random_model

    from demo import SHARED_EMODB
    from heads.deployment.export import export_model
    from pipeline.corpora import build_manifest

    manifest, _ = build_manifest("emodb", root=str(SHARED_EMODB))
    run, _ = train_random_model(manifest.sample(60, seed=0), work, "tiny", "layer", fold=1, epochs=5)
    return export_model(run, work / "model", None)


def run_measured(args: list[str]) -> tuple[float, float]:
    """``(seconds, peak resident GiB of the largest process)`` of ``python cli.py ARGS`` in its own process."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"cli.py {' '.join(args)} failed:\n{errors[-3000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 2**20


def step_memory(minutes: list[float], work: Path) -> None:
    import torch

    model = model_folder(work)
    waves = emodb_waves(200)
    rng = np.random.default_rng(2)
    print(f"predict --segment 4 --hop 2, random tiny WavLM, CPU, {torch.get_num_threads()} threads")
    print(f"{'minutes':>8} {'segments':>9} {'seconds':>8} {'x real time':>12} {'peak GiB':>9}")
    for length in minutes:
        path = work / f"long_{length:g}min.wav"
        write_long(path, length, waves, rng)
        out = work / f"long_{length:g}min.csv"
        seconds, peak = run_measured(["predict", "--model", str(model), str(path), "--segment", "4", "--hop", "2",
                                      "--out", str(out), "--device", "cpu"])
        rows = sum(1 for _ in open(out)) - 1
        print(f"{length:8g} {rows:9d} {seconds:8.0f} {length * 60 / seconds:12.1f} {peak:9.2f}", flush=True)
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="split,memory")
    parser.add_argument("--recordings", type=int, default=20)
    parser.add_argument("--minutes", default="10,120")
    args = parser.parse_args()
    steps = args.steps.split(",")
    if "split" in steps:
        step_split(args.recordings)
    if "memory" in steps:
        with tempfile.TemporaryDirectory(prefix="bench_long-") as work:
            step_memory([float(m) for m in args.minutes.split(",")], Path(work))


if __name__ == "__main__":
    main()
