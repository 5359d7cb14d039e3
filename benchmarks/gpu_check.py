"""The GPU figures in one prepared run: speech-stage throughput, bf16 vs fp32, peak memory at 35 s, the state
stage and head training on CUDA, fused AdamW on CUDA, and sharded extraction with 2 processes on one GPU.

    python benchmarks/gpu_check.py --out /tmp/gpu_check --json $OUT/gpu_check.json   # a GPU: <= 8 min on an H100
    .venv/bin/python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_dry             # tiny sizes on the CPU (CI)

Everything is built here: random WavLM checkpoints of the published sizes (``testing.random_wavlm``: their
speed is the real model's, their embeddings are meaningless), synthetic speech-like audio with an
IEMOCAP-like length distribution (log-normal, median 3.5 s, 0.6-35 s; >= 1 h in all), and synthetic caches
of IEMOCAP's shape for the state stage and the heads. Every figure is one line starting with ``FIGURE``;
``--json`` also writes them as a list of records.

On the lent GPU machines (no package registry there) praat-parselmouth, polars and soundfile must travel
as wheels: ``bash benchmarks/gpu_wheels.sh`` here puts them in ``.whl/``; mamba-ssm has no wheel for that
machine, so its kernel is measured only where it is already installed (the script says which).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
RATE = 16000


@dataclass(frozen=True)
class Sizes:
    model: str  # testing.random_wavlm size
    audio_s: float  # synthetic corpus, seconds of audio in all
    state_utterances: int
    state_dialogues: int
    state_epochs: int
    heads_utterances: int
    heads_epochs: int
    loader_workers: int


FULL = Sizes(model="large", audio_s=3700.0, state_utterances=10039, state_dialogues=151, state_epochs=20,
             heads_utterances=10039, heads_epochs=60, loader_workers=4)
DRY = Sizes(model="tiny", audio_s=40.0, state_utterances=300, state_dialogues=20, state_epochs=1,
            heads_utterances=400, heads_epochs=3, loader_workers=0)

FIGURES: list[dict] = []


def figure(name: str, text: str, **values) -> None:  # noqa: ANN003 - the figure's numbers
    """Print one figure line and keep it for --json."""
    FIGURES.append({"figure": name, "text": text, **values})
    print(f"FIGURE {name}: {text}", flush=True)


def speechlike(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Voiced syllables (~4 per second, a wandering F0 with 6 harmonics) plus a little noise, float32 [S]."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = rng.uniform(100, 240) * 2 ** (np.cumsum(rng.normal(0, 0.002, n)) / 12 * 40)
    phase = 2 * np.pi * np.cumsum(np.clip(f0, 70, 400)) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 7))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, np.pi)), 0, None) ** 0.7
    wave = 0.3 * envelope * voiced / 2.5 + 0.003 * rng.standard_normal(n)
    return wave.astype(np.float32)


def write_corpus(root: Path, total_s: float, seed: int = 0) -> tuple[Path, float]:
    """WAVs of IEMOCAP-like lengths and a generic manifest (5 folds of 2 speakers); returns (manifest, seconds)."""
    import soundfile

    rng = np.random.default_rng(seed)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    lines, total, i = ["utt_id,path,speaker,fold,valence,arousal,dialog_id,start_s"], 0.0, 0
    while total < total_s:
        seconds = float(np.clip(rng.lognormal(np.log(3.5), 0.6), 0.6, 35.0))
        soundfile.write(root / "wav" / f"u{i:05d}.wav", speechlike(rng, seconds), RATE, subtype="PCM_16")
        fold, speaker = i % 5 + 1, i % 10
        lines.append(f"u{i:05d},wav/u{i:05d}.wav,s{speaker},{fold},{rng.uniform(1, 5):.2f},{rng.uniform(1, 5):.2f},"
                     f"d{fold}_{i // 200:03d},{float(i // 5)}")  # a dialogue stays in its fold
        total += seconds
        i += 1
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv", total


def timed(fn):  # noqa: ANN001, ANN201
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def speech_figures(work: Path, sizes: Sizes, device: str, manifest_path: Path, audio_s: float, model_dir: Path) -> None:
    """RTF of the speech stage in bf16 and fp32, their difference, peak memory at 35 s, 2 shards on one GPU."""
    import torch

    from cache import CachePaths, CacheReader
    from pipeline.corpora import read_generic_manifest
    from pipeline.extract import ExtractConfig, extract
    from pipeline.models.speech_model import SpeechEmbedder
    from pipeline.stages.speech import SpeechConfig

    manifest, _ = read_generic_manifest(manifest_path)
    load_s, _ = timed(lambda: SpeechEmbedder(str(model_dir), torch.device(device), torch.bfloat16))
    pooled = {}
    for precision in ("bf16", "fp32"):
        config = ExtractConfig(speech=SpeechConfig(model=str(model_dir), precision=precision,
                                                   num_workers=sizes.loader_workers))
        cache = work / f"speech_{precision}.h5"
        CachePaths(cache).remove_all()  # a fresh cache: a finished one would make the stage a no-op
        seconds, _ = timed(lambda config=config, cache=cache: extract(cache, manifest, ["speech"], config, device=device))
        pooled[precision] = CacheReader(cache).read("speech", "pooled").astype(np.float32)
        units = CacheReader(cache).provenance("speech")["units"]
        figure(f"speech_rtf_{precision}",
               f"{audio_s / 3600:.2f} h of audio, {manifest.height} files, {units} batches: {seconds:.1f} s for the "
               f"whole stage ({audio_s / seconds:.0f}x real time; model load {load_s:.1f} s of it is not audio "
               f"work: {audio_s / max(seconds - load_s, 1e-9):.0f}x without it)",
               seconds=seconds, audio_seconds=audio_s, rtf=audio_s / seconds, model_load_seconds=load_s)
    # On a CPU the speech model keeps its convolutions in fp32 (oneDNN's AMX bf16 convolutions are wrong), so
    # this compares what CPU users run; on a GPU, what GPU users run.
    diff = pooled["bf16"] - pooled["fp32"]
    relative = np.linalg.norm(diff, axis=-1) / np.maximum(np.linalg.norm(pooled["fp32"], axis=-1), 1e-12)  # [N, L+1]
    figure("bf16_vs_fp32", f"pooled embeddings, per utterance and layer ||bf16 - fp32|| / ||fp32||: max "
           f"{relative.max():.2e}, median {np.median(relative):.2e}, worst layer {int(relative.max(0).argmax())}; "
           f"max |bf16 - fp32| / max |fp32| = {np.abs(diff).max() / np.abs(pooled['fp32']).max():.2e}",
           max_relative=float(relative.max()), median_relative=float(np.median(relative)))

    if device.startswith("cuda"):
        for precision, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
            torch.cuda.empty_cache()
            embedder = SpeechEmbedder(str(model_dir), torch.device(device), dtype)
            weights = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            embedder.embed([speechlike(np.random.default_rng(1), 35.0)])
            peak = torch.cuda.max_memory_allocated()
            figure(f"peak_memory_35s_{precision}", f"one 35 s utterance: peak {peak / 2**30:.2f} GiB allocated "
                   f"({(peak - weights) / 2**30:.2f} GiB above the model's weights)",
                   peak_gib=peak / 2**30, above_weights_gib=(peak - weights) / 2**30)
            del embedder
    else:
        figure("peak_memory_35s_bf16", "not measured: no CUDA device (dry run)")

    # Two job-array shards of the same stage at once on one GPU, then the merge; compared with one process.
    CachePaths(work / "sharded.h5").remove_all()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, str(REPO / "cli.py"), "extract", "--corpus", "manifest", "--manifest", str(manifest_path),
            "--speech-model", str(model_dir), "--stages", "speech", "--precision", "bf16", "--device", device,
            "--loader-workers", str(sizes.loader_workers), "--cache", str(work / "sharded.h5")]
    started = time.perf_counter()
    shards = [subprocess.Popen([*base, "--shard", f"{i}/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for i in range(2)]
    logs = [p.communicate()[0] for p in shards]
    if any(p.returncode for p in shards):
        raise RuntimeError("a shard failed:\n" + "\n".join(log[-2000:] for log in logs))
    subprocess.run([sys.executable, str(REPO / "cli.py"), "cache", "merge", "--cache", str(work / "sharded.h5"), "--device", device],
                   env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    sharded = CacheReader(work / "sharded.h5").read("speech", "pooled").astype(np.float32)
    same = np.array_equal(sharded, pooled["bf16"])
    figure("sharded_2_processes", f"2 shards at once on one device + merge: {seconds:.1f} s in all "
           f"({audio_s / seconds:.0f}x real time, two model loads and process starts included); merged cache "
           + ("equals the one-process bf16 cache bit for bit" if same else
              f"differs from the one-process bf16 cache: max |diff| {np.abs(sharded - pooled['bf16']).max():.2e}"),
           seconds=seconds, bit_identical=bool(same))


def state_figures(work: Path, sizes: Sizes, device: str) -> None:
    """The state stage at IEMOCAP scale on the device: PyTorch scan, and the mamba-ssm kernel where installed."""
    import torch
    from bench_state import build_cache

    import pipeline.models.mamba as mamba
    from cache import CacheReader
    from pipeline.models.state_model import StateModelConfig
    from pipeline.stages.state import StateConfig, run_state_stage

    config = StateConfig(kind="mamba", epochs=sizes.state_epochs) if sizes is FULL else \
        StateConfig(kind="mamba", model=StateModelConfig(d_model=32, d_state=16, ssm_state=8), epochs=sizes.state_epochs)
    kernel = mamba._cuda_selective_scan
    runs = [("PyTorch reference scan", None)]
    if kernel is not None and device.startswith("cuda"):
        runs.append(("mamba-ssm kernel", kernel))
    else:
        figure("state_stage_mamba_kernel", "not measured: mamba-ssm is not installed here "
               + ("(no package registry on the lent machine, and no wheel of it exists for this torch)"
                  if device.startswith("cuda") else "(CPU dry run)"))
    for name, scan in runs:
        cache = work / f"state_{len(name)}.h5"
        cache.unlink(missing_ok=True)
        build_cache(cache, sizes.state_utterances, sizes.state_dialogues)
        mamba._cuda_selective_scan = scan
        try:
            seconds, _ = timed(lambda cache=cache: run_state_stage(str(cache), config, torch.device(device)))
        finally:
            mamba._cuda_selective_scan = kernel
        backend = CacheReader(cache).provenance("state")["backend"]
        figure(f"state_stage_{'kernel' if scan else 'reference'}",
               f"{sizes.state_utterances} utterances, {sizes.state_dialogues} dialogues, 15 updaters x "
               f"{config.epochs} epochs on {device}: {seconds:.1f} s (backend: {backend})", seconds=seconds)
    if len(runs) == 2:
        rng = torch.Generator(device=device).manual_seed(0)
        b, t, d, n = 4, 64, 128, 16
        x, B, C = (torch.randn(b, t, k, device=device, generator=rng) for k in (d, n, n))
        dt = torch.rand(b, t, d, device=device, generator=rng) * 0.1 + 1e-3
        A, D = -torch.rand(d, n, device=device, generator=rng) * 4, torch.randn(d, device=device, generator=rng)
        difference = (mamba.selective_scan(x, dt, A, B, C, D) - mamba.selective_scan_reference(x, dt, A, B, C, D)).abs()
        figure("mamba_kernel_vs_reference", f"max |kernel - reference| = {float(difference.max()):.2e} "
               f"(fp32, [{b}, {t}, {d}] with {n} states)", max_abs=float(difference.max()))


def head_figures(work: Path, sizes: Sizes, device: str) -> None:
    """One fold of head training on the device (and on the CPU beside it), and the fused AdamW on the device."""
    import torch
    from bench_heads import build_cache

    from cache import CacheReader
    from heads.training.experiment import train_fold
    from heads.training.features import load_corpus_arrays
    from heads.training.optim import AdamW
    from heads.training.train import TrainConfig

    cache = work / "heads.h5"
    cache.unlink(missing_ok=True)
    build_cache(cache, sizes.heads_utterances)
    arrays = load_corpus_arrays(CacheReader(cache), "last")
    config = TrainConfig(epochs=sizes.heads_epochs)
    for where in dict.fromkeys([device, "cpu"]):
        seconds, preds = timed(lambda where=where: train_fold(arrays, 1, config, [0], work / f"heads_{where}",
                                                              torch.device(where), overwrite=True))
        record = json.loads((work / f"heads_{where}" / "run.json").read_text())["metrics_per_seed"]["0"]
        figure(f"heads_one_fold_{where.split(':')[0]}",
               f"separate-attn, fold 1 of {sizes.heads_utterances} utterances on {where}: {seconds:.1f} s, "
               f"{record['epochs_trained']} epochs ({seconds / record['epochs_trained']:.2f} s per epoch); "
               f"test CCC-V {record['ccc_v']:.3f} CCC-A {record['ccc_a']:.3f}", seconds=seconds,
               epochs=record["epochs_trained"])

    torch.manual_seed(0)
    params = [torch.randn(64, 32, device=device, requires_grad=True), torch.randn(32, device=device, requires_grad=True)]
    reference = [p.detach().clone().requires_grad_() for p in params]
    ours = AdamW([{"params": params, "lr": 1e-2, "weight_decay": 0.1}])
    theirs = torch.optim.AdamW(reference, lr=1e-2, weight_decay=0.1, foreach=False, fused=False)
    for step in range(5):
        for group, optimizer in ((params, ours), (reference, theirs)):
            optimizer.zero_grad()
            (group[0].sin().sum() * (step + 1) + group[1].square().sum()).backward()
            optimizer.step()
    difference = max(float((a - b).detach().abs().max()) for a, b in zip(params, reference))
    figure("fused_adamw", f"heads.training.optim.AdamW (fused kernel) vs torch.optim.AdamW (single-tensor loop) on {device}, "
           f"5 steps: max |difference| = {difference:.2e}", max_abs=difference)


def main() -> None:
    from pipeline.runtime.allocator import keep_freed_memory

    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (what CI runs)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu_check"), help="work folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from testing.random_wavlm import save_random_wavlm

    sizes = DRY if args.dry_run else FULL
    if args.dry_run:
        device = "cpu"
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        raise SystemExit("error: no CUDA device here; run with --dry-run for the CPU check")
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (dry run)"
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    figure("device", f"{name}; torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPU cores",
           device=name, torch=torch.__version__)
    model_dir = args.out / f"wavlm-{sizes.model}-random"
    if not (model_dir / "config.json").is_file():
        save_random_wavlm(model_dir, sizes.model)
    manifest, audio_s = write_corpus(args.out / "corpus", sizes.audio_s)
    speech_figures(args.out, sizes, device, manifest, audio_s, model_dir)
    state_figures(args.out, sizes, device)
    head_figures(args.out, sizes, device)
    figure("total", f"{time.perf_counter() - started:.0f} s for the whole check", seconds=time.perf_counter() - started)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(FIGURES, indent=2))


if __name__ == "__main__":
    main()
