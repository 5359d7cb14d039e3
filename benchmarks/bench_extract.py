"""Extraction speed on this machine's CPU, measured side by side in one run.

    .venv/bin/python benchmarks/bench_extract.py [--utterances 40] [--prosody-files 48]

1. Speech stage, same random-weight WavLM of wavlm-base-plus size (~95 M parameters, group-norm encoder),
   on utterances of varied length: length-bucketed batches (the stage's plan) vs one utterance at a time.
   Rounds alternate A/B and the best of each is kept. Also prints the largest difference between the two
   (padding must not change results).
2. Prosody stage: 1 worker process vs all cores, same files.

Audio: real EmoDB speech cut to random lengths of 0.6-2.0 s when ../shared/corpora/emodb is present
(every EmoDB file here is 2.0 s long), otherwise the synthetic corpus of ``pipeline.corpora.synthetic``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# torch and the stages are imported in main(): the prosody pool's spawned workers re-import this file.


def corpus(n: int, out: Path, seed: int = 0) -> list[Path]:
    from demo import SHARED_EMODB
    from pipeline.features.audio import load_audio

    rng = np.random.default_rng(seed)
    paths = []
    if SHARED_EMODB.is_dir():
        files = sorted((SHARED_EMODB / "wav").glob("*.wav"))
        for i, f in enumerate(rng.choice(files, n, replace=False)):
            wave = load_audio(str(f), 16000)[: int(rng.uniform(0.6, 2.0) * 16000)]
            paths.append(out / f"u{i:03d}.wav")
            soundfile.write(paths[-1], wave, 16000)
        return paths
    from pipeline.corpora.synthetic import synth_utterance

    for i in range(n):
        wave = synth_utterance(3.0, 3.0, 150.0, rng, seconds=float(rng.uniform(0.6, 2.0)))
        paths.append(out / f"u{i:03d}.wav")
        soundfile.write(paths[-1], wave, 16000)
    return paths


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the prosody pool's workers), seconds."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def best_of(fns: dict, rounds: int, cpu: dict | None = None) -> dict[str, float]:
    """Best wall time of each function over alternating rounds; ``cpu`` (if given) gets the CPU seconds of
    that best round."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            started, cpu_started = time.perf_counter(), cpu_seconds()
            fn()
            times[name].append(time.perf_counter() - started)
            if cpu is not None and times[name][-1] == min(times[name]):
                cpu[name] = cpu_seconds() - cpu_started
    return {k: min(v) for k, v in times.items()}


def main() -> None:
    from pipeline.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # as cli.py does, so the numbers are what users get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--prosody-files", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-seconds", type=float, default=0.0, help="0 = the stage's CPU default")
    parser.add_argument("--skip-prosody", action="store_true")
    parser.add_argument("--norm", default="group", help="group (as wavlm-base-plus) or layer (as wavlm-large)")
    args = parser.parse_args()
    import torch

    from pipeline.features.audio import load_audio
    from pipeline.models.speech_model import SpeechEmbedder
    from pipeline.stages.batching import plan_fixed_chunks, plan_length_buckets
    from pipeline.stages.feature_table import feature_table_units
    from pipeline.stages.prosody import PRAAT, ProsodyConfig
    from pipeline.stages.speech import SpeechConfig, resolve_batch_seconds
    from testing.random_wavlm import save_random_wavlm

    work = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    (work / "audio").mkdir()
    paths = corpus(max(args.utterances, args.prosody_files), work / "audio")
    waves = [load_audio(str(p), 16000) for p in paths[: args.utterances]]
    audio_s = sum(len(w) for w in waves) / 16000
    model_dir = save_random_wavlm(work / "wavlm-base-plus-random", "base-plus", norm=args.norm)
    embedder = SpeechEmbedder(str(model_dir), torch.device("cpu"))
    params = sum(p.numel() for p in embedder.model.parameters()) / 1e6
    config = resolve_batch_seconds(SpeechConfig(model=str(model_dir), batch_seconds=args.batch_seconds),
                                   torch.device("cpu"))
    batches = plan_length_buckets(np.array([len(w) / 16000 for w in waves]), config.batch_seconds,
                                  config.max_batch_size, config.window_s, config.max_length_ratio)
    print(f"speech: {len(waves)} utterances, {audio_s:.1f} s of audio, random WavLM base-plus size "
          f"({params:.1f} M parameters, policy {embedder.info.padding_policy}), {len(batches)} length buckets "
          f"(--batch-seconds {config.batch_seconds:g}), "
          f"{torch.get_num_threads()} threads")
    results = {}

    def bucketed():
        results["bucketed"] = {r: v for b in batches for r, v in zip(b, embedder.embed([waves[i] for i in b])[0])}

    def one_at_a_time():
        results["single"] = {i: embedder.embed([w])[0][0] for i, w in enumerate(waves)}

    t = best_of({"bucketed": bucketed, "one at a time": one_at_a_time}, args.rounds)
    diff = max(np.abs(results["bucketed"][i] - results["single"][i]).max() for i in range(len(waves)))
    print(f"  bucketed: {t['bucketed']:.2f} s ({audio_s / t['bucketed']:.1f}x real time); one at a time: "
          f"{t['one at a time']:.2f} s ({audio_s / t['one at a time']:.1f}x real time)")
    print(f"  speed ratio bucketed / one-at-a-time = {t['one at a time'] / t['bucketed']:.2f}x (target >= 1.3x); "
          f"max |difference| = {diff:.2e}")

    if args.skip_prosody:
        return
    files = [str(p) for p in paths[: args.prosody_files]]
    ids = [p.stem for p in paths[: args.prosody_files]]
    units = list(enumerate(plan_fixed_chunks(len(files), ProsodyConfig().chunk_size)))
    cores = os.cpu_count() or 1

    def prosody(workers: int):
        return lambda: list(feature_table_units(PRAAT, ProsodyConfig(workers=workers), files, ids, units))

    cpu: dict[str, float] = {}
    t = best_of({"1": prosody(1), "all": prosody(cores)}, args.rounds, cpu)
    busy = {k: cpu[k] / t[k] for k in t}  # cores kept busy on average
    print(f"prosody: {len(files)} files; 1 worker {t['1']:.2f} s, {cores} workers {t['all']:.2f} s; "
          f"scaling = {t['1'] / t['all']:.2f}x (target >= 1.7x on 2 cores)")
    print(f"  CPU time: 1 worker {cpu['1']:.1f} s ({busy['1']:.2f} cores busy: Praat runs its pitch analysis on "
          f"several threads), {cores} workers {cpu['all']:.1f} s ({busy['all']:.2f} of {cores} cores busy); "
          f"the most scaling the 1-worker baseline allows is {cores / busy['1']:.2f}x")


if __name__ == "__main__":
    main()
