"""MSP-Podcast scale: a cache of ~270k utterances on disk, and head training on it within a memory budget.

    .venv/bin/python benchmarks/bench_scale.py --work /tmp/bench_scale [--rows 270000] [--steps all]

Builds, through the real cache writer and state stage, a synthetic cache the size of MSP-Podcast v1.12
(about 270k segments): speech [N, 25, 1024] float16 (wavlm-large's 25 hidden states, 14 GB), 67 prosody
features, the default dialogue state (untrained context over each podcast), a manifest with predefined
partitions (Train / Development / Test1 / Test2 / Test3 by podcast, in proportions we assume:
63 / 13 / 17 / 5 / 2 %). Labels (1-7) are planted: arousal in a few dimensions of hidden states 12-24,
valence in four prosody features and hidden state 20, each with noise, so that early stopping behaves as on
learnable data. The audio is not synthesised: no stage here reads audio.

Then it measures, each command in its own process (peak resident memory from ``wait4``):

* ``train-heads --split Test1 --layer last`` (one hidden state read: 1/25 of the block in memory);
* ``train-heads --split Test1 --layer weighted`` (all 25 hidden states: streamed from the cache,
  ``heads.training.streaming``), with ``--epochs`` from ``--weighted-epochs``;
* the cache's size on disk against the raw bytes of its arrays.

Steps: ``build`` (skipped when the cache is already complete), ``last``, ``weighted``, ``size``; ``all``.
The times include reading the cache; the page cache holds what it can (24 GiB machine, 14 GB block), as it
would on a user's machine that has just written the cache.

Extraction, each step alone (``--steps extract`` or ``--steps publish``), on ``--rows`` short synthetic utterances
(0.4-0.9 s WAV files, one per row) in MSP-Podcast's partitions and podcasts, with the real ``cli.py extract``
command, each invocation measured in its own process: seconds, peak resident memory of the process and of its
workers (sampled from /proc), bytes written to storage by the whole process tree (``ru_oublock``), cache size:

* ``extract``: speech (``--model tiny`` or ``large-shape``: 25 x 1024 hidden states like wavlm-large), then prosody
  added to that cache, then the default state. Every stage computed for real: ~35 ms a row each for the tiny model
  and Praat on this 2-core machine, so use it up to tens of thousands of rows.
* ``publish``: the same three commands, but the speech and prosody units are committed beforehand by a one-shard
  run whose model and Praat are replaced by random arrays of the same shapes (``commit_synthetic_parts``); the
  measured ``extract`` resumes, finds every unit committed and publishes them, then computes the state. This is
  what a real extraction does after its last batch, at any number of rows.

    .venv/bin/python benchmarks/bench_scale.py --work /tmp/bscale --rows 27000 --steps extract --model tiny
    .venv/bin/python benchmarks/bench_scale.py --work /tmp/bscale --rows 270000 --steps publish --model large-shape
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYERS, DIM, PROSODY = 25, 1024, 67
# 25 x 1024 hidden states, as wavlm-large; narrow feed-forward and convolutions (the block's shape is what matters)
LARGE_SHAPE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=256,
                   conv_dim=(64,) * 7)
SPLITS = (("Train", 0.63), ("Development", 0.13), ("Test1", 0.17), ("Test2", 0.05), ("Test3", 0.02))


def manifest_frame(n: int, rng: np.random.Generator) -> pl.DataFrame:
    """MSP-shaped rows: podcasts of 20-120 segments, 1-4 speakers each (some unknown), split by podcast."""
    from core.protocol import canonical_split, partition_folds
    from pipeline.corpora.manifest import normalise_manifest

    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(20, 121)))
    sizes[-1] -= sum(sizes) - n
    names, probabilities = zip(*SPLITS)
    podcast_split = rng.choice(len(names), len(sizes), p=probabilities)
    rows = {k: [] for k in ("utt_id", "speaker", "dialog_id", "start_s", "split")}
    speaker_id = 0
    for p, size in enumerate(sizes):
        speakers = [f"{speaker_id + i}" if rng.random() > 0.15 else f"unknown-{p:05d}" for i in range(rng.integers(1, 5))]
        speaker_id += len(speakers)
        for s in range(size):
            rows["utt_id"].append(f"MSP-PODCAST_{p:05d}_{s:04d}")
            rows["speaker"].append(speakers[int(rng.integers(len(speakers)))])
            rows["dialog_id"].append(f"MSP-PODCAST_{p:05d}")
            rows["start_s"].append(float(s))
            rows["split"].append(canonical_split(names[podcast_split[p]]))
    frame = pl.DataFrame(rows).with_columns(
        path=pl.format("/synthetic/{}.wav", pl.col("utt_id")), duration_s=pl.lit(5.0), sample_rate=pl.lit(16000),
        fold=pl.Series(partition_folds(rows["split"])), valence=pl.lit(4.0), arousal=pl.lit(4.0))
    return normalise_manifest(frame)


def build(work: Path, n: int, seed: int = 0) -> Path:
    """The cache, through ``create_cache`` / ``add_stage`` / the state stage, timing each write."""
    import torch

    from cache import add_stage, create_cache
    from pipeline.stages.state import StateConfig, run_state_stage

    rng = np.random.default_rng(seed)
    cache = work / "msp_scale.h5"
    manifest = manifest_frame(n, rng)
    n = manifest.height
    arousal, valence = rng.standard_normal(n), rng.standard_normal(n)
    manifest = manifest.with_columns(valence=pl.Series(np.clip(4 + 1.1 * valence, 1, 7)),
                                     arousal=pl.Series(np.clip(4 + 1.1 * arousal, 1, 7)))
    started = time.perf_counter()
    create_cache(cache, manifest, {"benchmark": "bench_scale", "rows": n})
    # The speech block is generated into a memory-mapped file (14 GB on disk, not in memory) and written from it.
    block_path = work / "speech.f16"
    speech = np.lib.format.open_memmap(block_path, mode="w+", dtype=np.float16, shape=(n, LAYERS, DIM))
    chunk = 4096
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        x = rng.standard_normal((stop - start, LAYERS, DIM), dtype=np.float32)
        a, v = arousal[start:stop, None], valence[start:stop, None]
        for layer in range(12, LAYERS):  # arousal: strongest around layer 18, weaker at the ends
            x[:, layer, :8] += (1.2 - abs(layer - 18) / 8) * (a + 0.5 * rng.standard_normal((stop - start, 8)))
        x[:, 20, 8:12] += 0.5 * (v + rng.standard_normal((stop - start, 4)))
        speech[start:stop] = x.astype(np.float16)
    speech.flush()
    generated = time.perf_counter() - started
    ok = np.ones(n, bool)
    t0 = time.perf_counter()
    add_stage(cache, "speech", {"pooled": speech, "ok": ok}, {"model": {"model_id": "synthetic-wavlm-large-shape"}}, [])
    speech_write = time.perf_counter() - t0
    del speech
    block_path.unlink()
    prosody = rng.standard_normal((n, PROSODY)).astype(np.float32)
    prosody[:, :4] += valence[:, None] + 0.8 * rng.standard_normal((n, 4))
    t0 = time.perf_counter()
    add_stage(cache, "prosody", {"values": prosody, "defined": np.ones_like(prosody, bool), "ok": ok,
                                 "names": np.array([f"p{i}" for i in range(PROSODY)], dtype=object)}, {}, [])
    prosody_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_state_stage(str(cache), StateConfig(), torch.device("cpu"))
    state_stage = time.perf_counter() - t0
    timings = {"generate_s": generated, "speech_write_s": speech_write, "prosody_add_s": prosody_write,
               "state_stage_s": state_stage}
    (work / "build.json").write_text(json.dumps(timings, indent=2))
    print(f"build: {n} rows; generate {generated:.0f} s, write speech {speech_write:.0f} s, add prosody "
          f"{prosody_write:.0f} s (added in place), state stage {state_stage:.0f} s", flush=True)
    return cache


def run_measured(args: list[str]) -> tuple[float, float, str]:
    """``(seconds, peak resident GiB, output tail)`` of ``python cli.py ARGS`` in its own process. Linux counts
    the parent's peak into a child's at ``exec``: the parent must be small (``main`` measures from a fresh
    process after building)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"cli.py {' '.join(args)} failed:\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 2**20, "\n".join(output.strip().splitlines()[-4:])


def train(cache: Path, work: Path, layer: str, extra: list[str]) -> None:
    out = work / f"run_{layer}"
    seconds, peak, tail = run_measured(["train-heads", "--cache", str(cache), "--split", "Test1", "--layer", layer,
                                        "--out", str(out), "--overwrite", *extra])
    record = json.loads((out / "run.json").read_text())
    metrics = record["metrics_per_seed"]["0"]
    print(f"train-heads --split Test1 --layer {layer} {' '.join(extra)}: {seconds:.0f} s, peak memory {peak:.2f} GiB; "
          f"{record['split_sizes']}; streamed {record['speech_streamed']}; epochs {metrics['epochs_trained']} "
          f"(best {metrics['best_epoch']}), train {metrics['train_seconds']:.0f} s; state gate "
          f"{record.get('state_gate', {}).get('chosen')}; Test1 CCC-V {metrics['ccc_v']:.3f} CCC-A "
          f"{metrics['ccc_a']:.3f}\n{tail}", flush=True)


def size(cache: Path) -> None:
    import h5py

    arrays: list[h5py.Dataset] = []
    with h5py.File(cache, "r") as file:
        file.visititems(lambda _, obj: arrays.append(obj) if isinstance(obj, h5py.Dataset) else None)
        raw = sum(d.size * d.dtype.itemsize for d in arrays)
        speech = file["speech"]["pooled"]
        speech_bytes, chunks = speech.size * speech.dtype.itemsize, speech.chunks
    disk = cache.stat().st_size
    print(f"cache size: {disk / 1e9:.2f} GB on disk; raw array bytes {raw / 1e9:.2f} GB (speech block "
          f"{speech_bytes / 1e9:.2f} GB float16, chunks of {chunks[0]} rows); on disk / raw = {disk / raw:.3f}",
          flush=True)


def probe(cache: Path) -> None:
    """Where reading and memory go (``--steps probe``): one layer read, a block of 2048 scattered dev rows read by
    HDF5's own row selection and as contiguous spans (``heads.training.streaming.read_rows``), and the peak resident memory
    of each phase of a 2-epoch streamed ``--layer weighted`` training (RSS sampled every 50 ms)."""
    import threading

    import h5py

    from cache import CacheReader
    from heads.training.experiment import train_fold
    from heads.training.features import FeatureConfig, load_corpus_arrays
    from heads.training.streaming import read_rows
    from heads.training.train import TrainConfig
    from pipeline.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # as cli.py does
    reader = CacheReader(cache)
    started = time.perf_counter()
    reader.read("speech", "pooled", np.s_[:, -1:])
    print(f"probe: one hidden state of every row: {time.perf_counter() - started:.1f} s", flush=True)
    splits = reader.manifest["split"].to_numpy()
    dev = np.flatnonzero(splits == "dev")[2048:4096]
    reader.read("speech", "pooled", np.s_[:1])  # the layout check, once
    with h5py.File(cache, "r") as file:
        started = time.perf_counter()
        file["speech"]["pooled"][dev]
        selection = time.perf_counter() - started
    started = time.perf_counter()
    read_rows(reader, dev)
    print(f"probe: 2048 dev rows (span {dev[-1] - dev[0] + 1} rows): HDF5 row selection {selection:.2f} s, "
          f"contiguous spans {time.perf_counter() - started:.2f} s", flush=True)

    phase, peaks = ["load"], {}

    def sample() -> None:
        while True:
            rss = int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**30
            peaks[phase[0]] = max(peaks.get(phase[0], 0.0), rss)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    import heads.training.experiment as experiment
    import heads.training.features as features
    import heads.training.train as training
    from heads.training.streaming import StreamedSpeech

    def labelled(owner, name: str) -> None:  # noqa: ANN001
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            previous, phase[0] = phase[0], name
            try:
                return original(*args, **kwargs)
            finally:
                phase[0] = previous
        setattr(owner, name, wrapper)

    for owner, name in ((features, "streamed_statistics"), (StreamedSpeech, "make_resident"),
                        (training, "validation_ccc"), (experiment, "predictions_frame")):
        labelled(owner, name)
    arrays = load_corpus_arrays(reader, "weighted")
    phase[0] = "training"
    train_fold(arrays, 1, TrainConfig(features=FeatureConfig(layer="weighted"), epochs=2), [0],
               cache.parent / "run_probe", overwrite=True)
    time.sleep(0.2)
    print("probe: peak resident memory by phase (2-epoch streamed weighted run): "
          + ", ".join(f"{k} {v:.2f} GiB" for k, v in peaks.items()), flush=True)


def compression(cache: Path, rows: int = 2000) -> None:
    """What HDF5's shuffle + deflate filters would save on the speech block of a real cache (``--compression-of``;
    the synthetic block is random and says nothing), and what decoding would cost."""
    import zlib

    from cache import CacheReader

    reader = CacheReader(cache)
    block = reader.read("speech", "pooled", np.s_[:rows])
    raw = block.tobytes()
    shuffled = np.frombuffer(raw, np.uint8).reshape(-1, block.itemsize).T.copy().tobytes()  # HDF5's shuffle filter
    for name, data in (("deflate 4", raw), ("shuffle + deflate 4", shuffled)):
        packed = zlib.compress(data, 4)
        started = time.perf_counter()
        zlib.decompress(packed)
        seconds = time.perf_counter() - started
        print(f"{cache.name} speech block ({block.shape}, {reader.provenance('speech')['model'].get('model_id')}): "
              f"{name}: {len(packed) / len(raw):.3f} of raw, decoding {len(raw) / 1e6 / seconds:.0f} MB/s", flush=True)


class TreeSampler:
    """Peak resident memory of a process and of its descendants (DataLoader and Praat workers), sampled from /proc
    every ``period_s``: ``main`` the process's own peak, ``workers`` the largest sum over its descendants at one
    moment, ``total`` the largest sum of both."""

    def __init__(self, pid: int, period_s: float = 0.2):
        import threading

        self.pid, self.period_s = pid, period_s
        self.main = self.workers = self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    @staticmethod
    def _children(pid: int) -> list[int]:
        found = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                found += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            descendants, frontier = [], self._children(self.pid)
            while frontier:
                descendants += frontier
                frontier = [c for pid in frontier for c in self._children(pid)]
            main, workers = self._rss(self.pid), sum(self._rss(pid) for pid in descendants)
            self.main, self.workers, self.total = max(self.main, main), max(self.workers, workers), \
                max(self.total, main + workers)
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_tree_measured(args: list[str]) -> dict:
    """``python cli.py ARGS`` in its own process: seconds, peak memory (``wait4``: the largest single process of the
    tree; ``TreeSampler``: the process, its workers, both), bytes written to storage by the tree (``ru_oublock``)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    sampler = TreeSampler(process.pid)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    sampler.stop()
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"cli.py {' '.join(args)} failed:\n{output[-3000:]}")
    return {"seconds": seconds, "peak_process_gib": usage.ru_maxrss / 2**20, "peak_main_gib": sampler.main / 2**30,
            "peak_workers_gib": sampler.workers / 2**30, "peak_total_gib": sampler.total / 2**30,
            "written_gb": usage.ru_oublock * 512 / 1e9, "cpu_s": usage.ru_utime + usage.ru_stime,
            "tail": "\n".join(output.strip().splitlines()[-3:])}


def write_audio_corpus(work: Path, n: int, seed: int = 0) -> Path:
    """``n`` short synthetic utterances (0.4-0.9 s, 16 kHz: a harmonic voice with a pitch contour and noise) in
    MSP-Podcast's partitions and podcast structure (``manifest_frame``), one WAV file each; returns the manifest."""
    import soundfile

    manifest_path = work / f"audio_{n}" / "manifest.csv"
    if manifest_path.is_file():
        return manifest_path
    rng = np.random.default_rng(seed)
    frame = manifest_frame(n, rng)
    audio = manifest_path.parent / "wav"
    rate = 16000
    paths = []
    for k, (utt, podcast) in enumerate(zip(frame["utt_id"].to_list(), frame["dialog_id"].to_list())):
        if k % 20000 == 0:
            print(f"writing audio: {k} of {n} files", flush=True)
        folder = audio / podcast
        folder.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(rate * rng.uniform(0.4, 0.9))) / rate
        f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voice = sum(np.sin(h * phase) / h for h in range(1, 6)) * np.hanning(len(t)) * rng.uniform(0.05, 0.5)
        wave = voice + 0.003 * rng.standard_normal(len(t))
        soundfile.write(folder / f"{utt}.wav", wave.astype(np.float32), rate, subtype="PCM_16")
        paths.append(f"wav/{podcast}/{utt}.wav")
    frame = frame.with_columns(path=pl.Series(paths), valence=pl.Series(rng.uniform(1, 7, n)),
                               arousal=pl.Series(rng.uniform(1, 7, n)))
    frame.select("utt_id", "path", "speaker", "dialog_id", "start_s", "split", "valence", "arousal") \
        .write_csv(manifest_path)
    return manifest_path


def speech_chunk_offsets(cache: Path) -> list[int]:
    import h5py

    with h5py.File(cache, "r") as file:
        dataset = file["speech"]["pooled"]
        return [dataset.id.get_chunk_info(i).byte_offset for i in range(dataset.id.get_num_chunks())]


def prepare_scale_run(work: Path, n: int, model_size: str, name: str, write_block_mb: int) -> tuple[Path, list[str]]:
    """The audio corpus and random model of an ``extract`` or ``publish`` step, a fresh cache path
    (``<name>_<n>_<model>.h5``, left-overs of an earlier run removed) and the ``extract`` arguments every command of
    the step shares."""
    from testing.random_wavlm import SIZES, save_random_wavlm

    manifest = write_audio_corpus(work, n)
    model = work / f"wavlm_{model_size}"
    if not (model / "config.json").is_file():
        SIZES["large-shape"] = LARGE_SHAPE
        save_random_wavlm(model, model_size)
    cache = work / f"{name}_{n}_{model_size}.h5"
    for leftover in (cache, Path(f"{cache}.journal")):
        leftover.unlink(missing_ok=True)
    subprocess.run(["rm", "-rf", f"{cache}.parts"], check=True)
    return cache, ["extract", "--corpus", "manifest", "--manifest", str(manifest), "--cache", str(cache),
                   "--speech-model", str(model), "--device", "cpu", "--write-block-mb", str(write_block_mb)]


def measure_extract(common: list[str], cache: Path, wanted: str, what: str, header: str) -> dict:
    """One ``extract --stages wanted`` measured (``run_tree_measured``), with the cache's size and, when the cache
    existed before, whether it is the same file, whether the speech chunks moved and how much it grew; printed after
    ``header`` and ``what`` (which stage the command adds, and how)."""
    before = (os.stat(cache).st_ino, os.path.getsize(cache), speech_chunk_offsets(cache)) if cache.is_file() else None
    f = run_tree_measured([*common, "--stages", wanted])
    f["cache_gb"] = os.path.getsize(cache) / 1e9
    if before is not None:
        f["same_file"] = os.stat(cache).st_ino == before[0]
        f["speech_chunks_moved"] = speech_chunk_offsets(cache) != before[2]
        f["cache_grew_gb"] = (os.path.getsize(cache) - before[1]) / 1e9
    print(f"{header}: extract --stages {wanted} [{what}]: {f['seconds']:.0f} s ({f['cpu_s']:.0f} CPU-s); peak RSS "
          f"main {f['peak_main_gib']:.2f} GiB, workers {f['peak_workers_gib']:.2f} GiB, together "
          f"{f['peak_total_gib']:.2f} GiB (wait4: {f['peak_process_gib']:.2f}); written {f['written_gb']:.2f} GB; "
          f"cache {f['cache_gb']:.2f} GB" + (f"; same file {f['same_file']}, speech chunks moved "
                                           f"{f['speech_chunks_moved']}, cache grew {f['cache_grew_gb']:.3f} GB"
                                           if before is not None else ""), flush=True)
    return f


STEPS = (("speech", "speech"), ("prosody", "speech,prosody"), ("state", "speech,prosody,state"))


def extract_scale(work: Path, n: int, model_size: str, write_block_mb: int = 0, stages: str = "all") -> dict:
    """The real ``extract`` on ``n`` rows: speech, then prosody added to that cache, then the default state; each
    its own command, measured (``measure_extract``). Returns the figures, also written to ``extract_<n>.json``."""
    cache, common = prepare_scale_run(work, n, model_size, "extract", write_block_mb)
    figures: dict = {"rows": n, "model": model_size, "write_block_mb": write_block_mb}
    for name, wanted in STEPS if stages == "all" else [s for s in STEPS if s[0] in stages.split(",")]:
        figures[name] = measure_extract(common, cache, wanted, f"{name} computed", f"{n} rows ({model_size})")
    (work / f"extract_{n}_{model_size}.json").write_text(json.dumps(figures, indent=1))
    return figures


def commit_synthetic_parts(manifest_path: Path, cache: Path, model: Path, stages: list[str], seed: int = 0) -> None:
    """Commit every unit of the per-utterance ``stages`` as a one-shard run (``--shard 0/1``) would, but with random arrays of the
    stages' shapes in place of the model and Praat (which cost ~35 ms a row each here): what the real ``extract``
    then publishes is exactly what it would publish after computing them. Run in its own process."""
    from cache.parts import UnitResult
    from pipeline.corpora import read_generic_manifest
    from pipeline.features.audio import file_stats
    from pipeline.launch import launch_extract
    from pipeline.stages import feature_table, speech
    from pipeline.stages.registry import ExtractConfig

    rng = np.random.default_rng(seed)

    def random_speech(embedder, config, paths, utt_ids, pending):  # noqa: ANN001, ANN202 - speech_units' signature
        shape = (embedder.info.num_hidden_states, embedder.info.hidden_size)
        for unit, rows in pending:
            pooled = rng.standard_normal((len(rows), *shape), dtype=np.float32).astype(np.float16)
            stats = np.array([file_stats(paths[r]) for r in rows], dtype=np.int64)
            yield unit, UnitResult(rows=np.asarray(rows, np.int64), arrays={
                "pooled": pooled, "ok": np.ones(len(rows), bool), "file_size": stats[:, 0],
                "file_mtime_ns": stats[:, 1]}, failures=[])

    def random_table(feature_set, config, paths, utt_ids, pending):  # noqa: ANN001, ANN202 - as feature_table_units
        width = len(feature_set.names())
        for unit, rows in pending:
            values = rng.standard_normal((len(rows), width)).astype(np.float32)
            stats = np.array([file_stats(paths[r]) for r in rows], dtype=np.int64)
            yield unit, UnitResult(rows=np.asarray(rows, np.int64), arrays={
                "values": values, "defined": np.ones_like(values, bool), "ok": np.ones(len(rows), bool),
                "file_size": stats[:, 0], "file_mtime_ns": stats[:, 1]}, failures=[])

    speech.speech_units, feature_table.feature_table_units = random_speech, random_table
    frame, _ = read_generic_manifest(manifest_path)
    config = ExtractConfig.from_dict({"speech": {"model": str(model)}})
    launch_extract(cache, frame, stages, config, device="cpu", shard_text="0/1")


def publish_scale(work: Path, n: int, model_size: str = "large-shape", write_block_mb: int = 0) -> None:
    """``--steps publish``: the stages of an ``n``-row extraction published into a new cache by the real ``extract``
    command, from parts committed beforehand (``commit_synthetic_parts``): speech, then prosody added to that cache,
    then the default state computed; each command measured (``measure_extract``)."""
    cache, common = prepare_scale_run(work, n, model_size, "publish", write_block_mb)
    figures: dict = {"rows": n, "model": model_size, "write_block_mb": write_block_mb}
    for name, wanted in STEPS:
        if name != "state":
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--work", str(work), "--rows", str(n), "--model", model_size,
                            "--steps", f"commit-parts:{cache}:{name}"], check=True, cwd=ROOT)
            figures[f"{name}_parts_s"] = time.perf_counter() - started
        how = "computed" if name == "state" else "published from committed parts"
        figures[name] = measure_extract(common, cache, wanted, f"{name} {how}", f"{n} rows ({model_size})")
    (work / f"publish_{n}_{model_size}.json").write_text(json.dumps(figures, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_scale"))
    parser.add_argument("--rows", type=int, default=270_000)
    parser.add_argument("--steps", default="all", help="build,last,weighted,size,probe; all = all but probe; or, "
                                                       "alone, extract or publish (the real extract command on "
                                                       "synthetic audio; see the module's docstring)")
    parser.add_argument("--weighted-epochs", type=int, default=60, help="--epochs of the weighted run")
    parser.add_argument("--compression-of", type=Path, help="only: what compression would save on this cache")
    parser.add_argument("--model", default="tiny", help="extract/publish: tiny | large-shape (25 x 1024 hidden "
                                                              "states)")
    parser.add_argument("--write-block-mb", type=int, default=0, help="extract/publish: --write-block-mb (0 = automatic)")
    parser.add_argument("--extract-stages", default="all", help="extract: speech,prosody,state or a part of it")
    args = parser.parse_args()
    if args.compression_of:
        return compression(args.compression_of)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.steps == "extract":
        extract_scale(args.work, args.rows, args.model, args.write_block_mb, args.extract_stages)
        return None
    if args.steps == "publish":
        publish_scale(args.work, args.rows, args.model, args.write_block_mb)
        return None
    if args.steps.startswith("commit-parts:"):  # publish's helper, in its own process
        _, cache, stage = args.steps.split(":")
        model = args.work / f"wavlm_{args.model}"
        stages = ["speech"] if stage == "speech" else ["speech", "prosody"]
        commit_synthetic_parts(write_audio_corpus(args.work, args.rows), Path(cache), model, stages)
        return None
    steps = {"build", "last", "weighted", "size"} if args.steps == "all" else set(args.steps.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    cache = args.work / "msp_scale.h5"
    if "build" in steps and not (args.work / "build.json").is_file():
        cache = build(args.work, args.rows)
        rest = sorted(steps - {"build"})
        if rest:  # measure from a fresh process: a child's peak memory counts the parent's (14 GB while building)
            command = [sys.executable, __file__, "--work", str(args.work), "--steps", ",".join(rest),
                       "--weighted-epochs", str(args.weighted_epochs)]
            raise SystemExit(subprocess.call(command))
    if "size" in steps:
        size(cache)
    if "last" in steps:
        train(cache, args.work, "last", [])
    if "probe" in steps:
        probe(cache)
    if "weighted" in steps:
        train(cache, args.work, "weighted", ["--epochs", str(args.weighted_epochs)])


if __name__ == "__main__":
    main()
