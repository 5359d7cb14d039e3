"""Dialogue-state stage speed at IEMOCAP scale on this machine's CPU.

    .venv/bin/python benchmarks/bench_state.py [--utterances 10039] [--dialogues 151] [--kinds ema-features,mamba]

A synthetic cache of IEMOCAP's shape: 10,039 utterances in 151 dialogues (5 folds of 2 speakers, both
speakers interleaved), speech [N, 25, 1024] float16 and 67 prosody features. Runs the whole stage with its
defaults (15 cross-fitted updaters: d_model 256, 2 Mamba layers, d_state 64) and prints the time of each
part, for each state kind (``--kinds``). The mamba-ssm CUDA kernel is not used on a CPU: this is the PyTorch reference scan.

First it times one training step of one updater (the stage runs 15 updaters x 20 epochs x 3 steps), once
as it is and once with the selective scan replaced by its skip term ``D * x``: no real model, only the
lower bound that any faster scan could reach on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_cache(path: Path, n: int, dialogues: int, seed: int = 0) -> None:
    from cache import add_stage, create_cache
    from pipeline.corpora.manifest import normalise_manifest

    rng = np.random.default_rng(seed)
    dialog = np.sort(rng.integers(0, dialogues, n))
    fold = dialog * 5 // dialogues + 1
    manifest = normalise_manifest(pl.DataFrame({
        "utt_id": [f"u{i:06d}" for i in range(n)], "path": [f"/bench/u{i:06d}.wav" for i in range(n)],
        "duration_s": np.full(n, 4.5), "sample_rate": np.full(n, 16000),
        "speaker": [f"s{f}{'FM'[i % 2]}" for i, f in enumerate(fold)], "dialog_id": [f"d{d:03d}" for d in dialog],
        "start_s": np.arange(n, dtype=float), "fold": fold,
        "valence": rng.uniform(1, 5, n), "arousal": rng.uniform(1, 5, n)}))
    create_cache(path, manifest, {"benchmark": True})
    ok = np.ones(n, bool)
    speech = rng.standard_normal((n, 25, 1024), dtype=np.float32).astype(np.float16)
    add_stage(path, "speech", {"pooled": speech, "ok": ok}, {"model": {"model_id": "synthetic"}}, [])
    prosody = rng.standard_normal((n, 67)).astype(np.float32)
    add_stage(path, "prosody", {"values": prosody, "defined": np.ones_like(prosody, bool), "ok": ok,
                                "names": np.array([f"p{i}" for i in range(67)], dtype=object)}, {}, [])


def time_training_step(d_input: int, repeats: int = 10) -> dict[str, float]:
    """Seconds per updater training step (32 crops x 32 utterances) with the real scan and without it."""
    import torch

    import pipeline.models.mamba as mamba
    from core.metrics import ccc_loss
    from pipeline.models.state_model import DialogueStateUpdater, StateModelConfig
    from pipeline.stages.state import StateConfig

    config = StateConfig(kind="mamba")
    torch.manual_seed(0)
    model = DialogueStateUpdater(d_input, StateModelConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    z, y = torch.randn(config.batch_size, config.window, d_input), torch.randn(config.batch_size * config.window, 2)

    def step() -> None:
        _, aux = model(z)
        loss = ccc_loss(aux.reshape(-1, 2), y).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    real = mamba.selective_scan_reference
    variants = {"with the scan": real,
                "scan removed": lambda x, dt, A, B, C, D: x * D + 0 * (dt.sum() + A.sum() + B.sum() + C.sum())}
    seconds = {}
    try:
        for name, scan in variants.items():
            mamba.selective_scan_reference = scan
            step()
            started = time.perf_counter()
            for _ in range(repeats):
                step()
            seconds[name] = (time.perf_counter() - started) / repeats
    finally:
        mamba.selective_scan_reference = real
    return seconds


def main() -> None:
    from pipeline.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # as cli.py does, so the numbers are what users get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=10039)
    parser.add_argument("--dialogues", type=int, default=151)
    parser.add_argument("--kinds", default="ema-features,ema-features-speaker,mamba")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_state"))
    args = parser.parse_args()
    import logging

    import torch

    from cache import CacheReader
    from cache.paths import CachePaths
    from pipeline.stages.state import StateConfig, run_state_stage

    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "bench_state.h5"
    CachePaths(cache).remove_all()  # the cache and any parts an interrupted earlier run left
    build_cache(cache, args.utterances, args.dialogues)
    for kind in args.kinds.split(","):
        config = StateConfig(kind=kind)
        print(f"state stage, kind {kind}: {args.utterances} utterances, {args.dialogues} dialogues, 5 folds, "
              f"{torch.get_num_threads()} threads, CPU")
        started = time.perf_counter()
        run_state_stage(str(cache), config, torch.device("cpu"))
        total = time.perf_counter() - started
        provenance = CacheReader(cache).provenance("state")
        units = provenance["unit_summaries"]
        work = sum(s["seconds"] for s in units)
        print(f"  whole stage: {total:.1f} s ({work:.1f} s in {len(units)} units, {total - work:.1f} s loading, "
              f"state inference and writing); backend: {provenance['backend']}")
        if kind == "mamba":
            epochs = [s["epochs_trained"] for s in units]
            print(f"  epochs trained per updater (early stopping on held-out speakers): {epochs}")
            steps = sum(-(-s["train_sequences"] // config.batch_size) * s["epochs_trained"] for s in units)
            seconds = time_training_step(1024 + 67)
            print(f"  one updater training step: {seconds['with the scan'] * 1e3:.0f} ms; with the scan removed "
                  f"{seconds['scan removed'] * 1e3:.0f} ms, so the stage's {steps} training steps take at least "
                  f"{steps * seconds['scan removed']:.0f} s on this CPU however fast the scan")

if __name__ == "__main__":
    main()
