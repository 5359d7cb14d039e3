"""The prosody stage: Praat features of every utterance, computed in a process pool, ``[N, F]``."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
import multiprocessing
import os

import numpy as np
import polars as pl

from cache.parts import UnitResult
from cache.schema import Failure
from pipeline.audio import AudioError, load_audio
from pipeline.batching import plan_fixed_chunks
from pipeline.prosody import FEATURE_NAMES, FEATURE_SET_VERSION, prosody_features
from pipeline.provenance import package_versions
from pipeline.stage_runner import StagePlan, run_stage


@dataclass(frozen=True)
class ProsodyConfig:
    """Settings of the prosody stage (stored with the cache)."""

    sample_rate_hz: int = 16000  # every file is resampled first, so features do not depend on the file rate
    workers: int = 0  # processes; 0 = all cores
    chunk_size: int = 16  # utterances per committed unit
    min_duration_s: float = 0.05  # Praat's pitch analysis needs a few periods at 75 Hz


def prosody_unit(unit: int, rows: list[int], paths: list[str], utt_ids: list[str], config: ProsodyConfig) -> tuple[int, UnitResult]:
    """Features of one unit of rows (runs in a worker process)."""
    values = np.full((len(rows), len(FEATURE_NAMES)), np.nan, dtype=np.float32)
    ok = np.zeros(len(rows), dtype=bool)
    failures: list[Failure] = []
    for k, row in enumerate(rows):
        try:
            wave = load_audio(paths[row], config.sample_rate_hz)
            if len(wave) < config.min_duration_s * config.sample_rate_hz:
                raise AudioError(f"too short for pitch analysis: {len(wave) / config.sample_rate_hz * 1000:.1f} ms")
            features = prosody_features(wave, config.sample_rate_hz)
        except AudioError as err:
            failures.append(Failure(utt_ids[row], "prosody", paths[row], str(err)))
            continue
        features[~np.isfinite(features)] = np.nan  # inf is never a feature value: undefined
        values[k] = features.astype(np.float32)
        ok[k] = True
    result = UnitResult(rows=np.asarray(rows, dtype=np.int64),
                        arrays={"values": values, "defined": np.isfinite(values), "ok": ok}, failures=failures)
    return unit, result


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


def prosody_units(config: ProsodyConfig, paths: list[str], utt_ids: list[str],
                  pending: list[tuple[int, list[int]]]) -> Iterator[tuple[int, UnitResult]]:
    workers = config.workers or os.cpu_count() or 1
    if workers == 1:
        for unit, rows in pending:
            yield prosody_unit(unit, rows, paths, utt_ids, config)
        return
    # spawn, not fork: the parent may hold torch/OpenMP threads, which fork can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_thread) as pool:
        futures = [pool.submit(prosody_unit, unit, rows, paths, utt_ids, config) for unit, rows in pending]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def run_prosody_stage(cache_path: str, manifest: pl.DataFrame, config: ProsodyConfig, on_error: str = "skip") -> list[Failure]:
    """Compute the Praat feature set of every utterance into the cache's ``prosody`` group (resumable)."""
    units = plan_fixed_chunks(manifest.height, config.chunk_size)
    settings = {k: v for k, v in asdict(config).items() if k != "workers"}  # worker count never changes results
    fingerprint = {"feature_set_version": FEATURE_SET_VERSION, "config": settings, "names": list(FEATURE_NAMES)}
    provenance = {**fingerprint, "packages": package_versions(), "workers": config.workers}
    paths, utt_ids = manifest["path"].to_list(), manifest["utt_id"].to_list()
    compute = lambda pending: prosody_units(config, paths, utt_ids, pending)  # noqa: E731
    plan = StagePlan("prosody", units, fingerprint, constants={"names": np.array(FEATURE_NAMES, dtype=object)})
    failures = run_stage(cache_path, manifest, plan, compute, provenance, on_error)
    return failures
