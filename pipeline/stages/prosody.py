"""The prosody stage: Praat features of every utterance, computed in a process pool, ``[N, F]``."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from cache.parts import UnitResult
from cache.schema import Failure
from core.provenance import package_versions
from pipeline.features.audio import load_rows
from pipeline.features.prosody import FEATURE_NAMES, FEATURE_SET_VERSION, prosody_features
from pipeline.runtime.orphans import die_with_parent
from pipeline.stages.batching import plan_fixed_chunks
from pipeline.stages.runner import Stage, StagePlan, StageWork, run_stage


@dataclass(frozen=True)
class ProsodyConfig:
    """Settings of the prosody stage (stored with the cache)."""

    sample_rate_hz: int = 16000  # every file is resampled first, so features do not depend on the file rate
    workers: int = 0  # processes; 0 = all cores
    chunk_size: int = 16  # utterances per committed unit
    min_duration_s: float = 0.05  # Praat's pitch analysis needs a few periods at 75 Hz


def _decode_unit(rows: list[int], paths: list[str], config: ProsodyConfig) -> tuple[list[np.ndarray | str], np.ndarray]:
    """``load_rows`` at the stage rate, with files too short for pitch analysis turned into failure reasons."""
    audio, stats = load_rows(paths, rows, config.sample_rate_hz)
    too_short = config.min_duration_s * config.sample_rate_hz
    return [f"too short for pitch analysis: {len(a) / config.sample_rate_hz * 1000:.1f} ms"
            if not isinstance(a, str) and len(a) < too_short else a for a in audio], stats


def _unit_result(rows: list[int], audio: list[np.ndarray | str], features: list[np.ndarray], paths: list[str],
                 utt_ids: list[str], stats: np.ndarray) -> UnitResult:
    values = np.full((len(rows), len(FEATURE_NAMES)), np.nan, dtype=np.float32)
    ok = np.zeros(len(rows), dtype=bool)
    failures: list[Failure] = []
    computed = iter(features)
    for k, (row, item) in enumerate(zip(rows, audio)):
        if isinstance(item, str):
            failures.append(Failure(utt_ids[row], "prosody", paths[row], item))
            continue
        row_features = next(computed)
        row_features[~np.isfinite(row_features)] = np.nan  # inf is never a feature value: undefined
        values[k], ok[k] = row_features, True
    return UnitResult(rows=np.asarray(rows, dtype=np.int64),
                      arrays={"values": values, "defined": np.isfinite(values), "ok": ok,
                              "file_size": stats[:, 0], "file_mtime_ns": stats[:, 1]}, failures=failures)


def prosody_units(config: ProsodyConfig, paths: list[str], utt_ids: list[str],
                  pending: list[tuple[int, list[int]]]) -> Iterator[tuple[int, UnitResult]]:
    """Decode audio here (fast) and run Praat in worker processes (slow), a few units ahead."""
    workers = config.workers or os.cpu_count() or 1
    if workers == 1:
        for unit, rows in pending:
            audio, stats = _decode_unit(rows, paths, config)
            features = [prosody_features(a, config.sample_rate_hz) for a in audio if not isinstance(a, str)]
            yield unit, _unit_result(rows, audio, features, paths, utt_ids, stats)
        return
    # spawn, not fork: the parent may hold torch/OpenMP threads, which fork can deadlock. Workers import
    # only numpy and parselmouth (pipeline.features.prosody), so they start in a fraction of a second.
    # One task per file, not per unit: with units of 16 files the last unit kept one core busy for a
    # second while the other sat idle, which cost 0.1-0.2x of the 2-core scaling.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),))
    finished = False
    try:
        in_flight: deque = deque()
        queue = iter(pending)
        while True:
            while len(in_flight) < 2 * workers and (item := next(queue, None)) is not None:  # no idle worker between units
                unit, rows = item
                audio, stats = _decode_unit(rows, paths, config)
                futures = [pool.submit(prosody_features, a, config.sample_rate_hz)
                           for a in audio if not isinstance(a, str)]
                in_flight.append((unit, rows, audio, stats, futures))
            if not in_flight:
                finished = True
                return
            unit, rows, audio, stats, futures = in_flight.popleft()
            features = [f.result() for f in futures]
            yield unit, _unit_result(rows, audio, features, paths, utt_ids, stats)
    finally:
        if not finished:  # interrupted (Ctrl-C, --on-error fail): drop queued work instead of finishing it
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=not finished)


def run_prosody_stage(cache_path: str, manifest: pl.DataFrame, config: ProsodyConfig, on_error: str = "skip",
                      only_rows: np.ndarray | None = None, work: StageWork = StageWork()) -> list[Failure]:
    """Compute the Praat feature set of every utterance into the cache's ``prosody`` group (resumable);
    with ``only_rows`` recompute just those rows and keep the others from the cache; with ``work.shard``
    compute one shard's chunks only."""
    rows = np.arange(manifest.height) if only_rows is None else np.asarray(only_rows)
    units = [[int(rows[i]) for i in unit] for unit in plan_fixed_chunks(len(rows), config.chunk_size)]
    durations = manifest["duration_s"].cast(pl.Float64).fill_null(0.0).to_numpy()
    settings = {k: v for k, v in asdict(config).items() if k != "workers"}  # worker count never changes results
    fingerprint = {"feature_set_version": FEATURE_SET_VERSION, "config": settings, "names": list(FEATURE_NAMES)}
    provenance = {**fingerprint, "packages": package_versions(), "workers": config.workers}
    paths, utt_ids = manifest["path"].to_list(), manifest["utt_id"].to_list()
    compute = lambda pending: prosody_units(config, paths, utt_ids, pending)  # noqa: E731
    plan = StagePlan("prosody", units, fingerprint, constants={"names": np.array(FEATURE_NAMES, dtype=object)},
                     stage_bytes=manifest.height * len(FEATURE_NAMES) * 5,  # float32 values + bool mask
                     update_rows=only_rows, unit_seconds=[float(np.nan_to_num(durations[u]).sum()) for u in units])
    return run_stage(cache_path, manifest, Stage(plan, compute, provenance), on_error, work)
