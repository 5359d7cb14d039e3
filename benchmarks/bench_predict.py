"""`predict` against `extract` + the heads on the same files, side by side in one run.

    .venv/bin/python benchmarks/bench_predict.py [--files 535] [--size base-plus]

Files: the EmoDB utterances in ../shared/corpora/emodb (all 535 by default). Speech model: a randomly
initialised WavLM of wavlm-base-plus size (~95 M parameters) saved like a checkpoint; CPU.

1. A model to predict with: speech + prosody extracted once into a cache, a `separate-attn` head trained
   on fold 1 (10 epochs; its quality is beside the point), exported (`heads.deployment.export.export_model`).
2. Timed, in this order: **A** `extract` (speech + prosody) of the files into a new cache, then the exported
   heads applied to that cache (`heads.deployment.predict.predict_cached`); **B** `predict` on the same files
   (`load_model(...).predict`: extraction into a temporary cache, then the heads). Both include loading
   the speech model. Prints both times and B / A; `predict` must not be slower than A (ratio <= ~1).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# torch and the stages are imported in main(): the prosody pool's spawned workers re-import this file.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=535)
    parser.add_argument("--size", default="base-plus", help="testing.random_wavlm size")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch
    from bench_model import train_random_model

    from cache import CacheReader
    from demo import SHARED_EMODB
    from heads.deployment.export import export_model
    from heads.deployment.predict import load_model, predict_cached
    from pipeline.corpora import build_manifest
    from pipeline.extract import ExtractConfig, extract
    from pipeline.runtime.allocator import keep_freed_memory
    from pipeline.stages.speech import SpeechConfig

    if not SHARED_EMODB.is_dir():
        raise SystemExit(f"bench_predict needs the EmoDB corpus at {SHARED_EMODB}")
    keep_freed_memory()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_predict-"))
    manifest, _ = build_manifest("emodb", root=str(SHARED_EMODB))
    manifest = manifest.head(args.files)
    hours = float(manifest["duration_s"].sum()) / 3600
    print(f"{manifest.height} EmoDB files ({hours * 60:.1f} min of audio), random WavLM {args.size}, CPU, "
          f"{torch.get_num_threads()} threads")

    run, model_dir = train_random_model(manifest, work, args.size, "group", fold=1, epochs=10)
    config = ExtractConfig(speech=SpeechConfig(model=str(model_dir)))
    model = export_model(run, work / "model", None)

    started = time.perf_counter()
    extract(work / "a.h5", manifest, ["speech", "prosody"], config, device="cpu")
    a_predictions = predict_cached(load_model(model), CacheReader(work / "a.h5"))
    a_seconds = time.perf_counter() - started

    listing = work / "files.csv"
    manifest.select("utt_id", "path", "speaker", "dialog_id", "start_s").write_csv(listing)
    started = time.perf_counter()
    b_predictions = load_model(model).predict(manifest=str(listing), device="cpu")
    b_seconds = time.perf_counter() - started

    joined = a_predictions.join(b_predictions, on="utt_id", suffix="_b")
    largest = float(max((joined["valence"] - joined["valence_b"]).abs().max(),
                        (joined["arousal"] - joined["arousal_b"]).abs().max()))
    print(f"A  extract + heads: {a_seconds:.1f} s ({manifest.height / a_seconds:.2f} files/s)")
    print(f"B  predict:         {b_seconds:.1f} s ({manifest.height / b_seconds:.2f} files/s)")
    print(f"B / A = {b_seconds / a_seconds:.2f}; {joined.height} files predicted by both, largest difference "
          f"{largest:.2e}")


if __name__ == "__main__":
    main()
