"""A stage that computes one fixed-length feature vector per utterance, ``[N, F]``, with a pure function of the
waveform run in worker processes (the Praat prosody set, eGeMAPS, any hand-crafted set).

A feature set is a ``FeatureSet`` (cache group, version, names, function); this module decodes the audio,
fans the files out to a process pool, marks undefined values and writes ``values``, ``defined``, ``names``
and ``ok`` through the stage contract (``pipeline.stages.runner``): resume, sharding, ``--on-error`` and
re-extraction of changed files come with it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from cache.parts import UnitResult
from cache.reader import CacheReader
from cache.schema import Failure
from core.provenance import package_versions
from pipeline.features.audio import load_rows
from pipeline.runtime.orphans import die_with_parent
from pipeline.stages.batching import plan_fixed_chunks
from pipeline.stages.runner import Stage, StagePlan, StageWork, run_stage


@dataclass(frozen=True)
class FeatureTableConfig:
    """Settings of a feature-table stage (stored with the cache; ``workers`` never changes results)."""

    sample_rate_hz: int = 16000  # every file is resampled first, so features do not depend on the file rate
    workers: int = 0  # processes; 0 = all cores
    chunk_size: int = 16  # utterances per committed unit
    min_duration_s: float = 0.05  # pitch analysis needs a few periods at 75 Hz


@dataclass(frozen=True)
class FeatureSet:
    """What a feature-table stage computes.

    ``compute(wave [T] float32 in [-1, 1], rate_hz) -> [F] float`` must be a module-level function (it is sent to
    spawned worker processes); non-finite values are stored as NaN (undefined). ``names`` gives F."""

    name: str  # what users call it (``extract --prosody praat,egemaps``, head switch ``+prosody=egemaps``)
    stage: str  # cache group, e.g. "prosody"
    version: str  # changes whenever a value could change; stored, and compared before mixing caches
    names: Callable[[], tuple[str, ...]]
    compute: Callable[[np.ndarray, int], np.ndarray]


def result_settings(config: FeatureTableConfig) -> dict:
    """The settings that change a feature table's values (stored in the provenance, compared on resume)."""
    return {k: v for k, v in asdict(config).items() if k != "workers"}


def _decode_unit(rows: list[int], paths: list[str], config: FeatureTableConfig
                 ) -> tuple[list[np.ndarray | str], np.ndarray]:
    """``load_rows`` at the stage rate, with files too short to analyse turned into failure reasons."""
    audio, stats = load_rows(paths, rows, config.sample_rate_hz)
    too_short = config.min_duration_s * config.sample_rate_hz
    return [f"too short to analyse: {len(a) / config.sample_rate_hz * 1000:.1f} ms (at least "
            f"{config.min_duration_s * 1000:.0f} ms)"
            if not isinstance(a, str) and len(a) < too_short else a for a in audio], stats


def _unit_result(feature_set: FeatureSet, rows: list[int], audio: list[np.ndarray | str],
                 features: list[np.ndarray], paths: list[str], utt_ids: list[str], stats: np.ndarray) -> UnitResult:
    width = len(feature_set.names())
    values = np.full((len(rows), width), np.nan, dtype=np.float32)
    ok = np.zeros(len(rows), dtype=bool)
    failures: list[Failure] = []
    computed = iter(features)
    for k, (row, item) in enumerate(zip(rows, audio)):
        if isinstance(item, str):
            failures.append(Failure(utt_ids[row], feature_set.stage, paths[row], item))
            continue
        row_features = np.asarray(next(computed), dtype=np.float32)
        if row_features.shape != (width,):  # a bug in the set, not bad input
            raise RuntimeError(f"{feature_set.stage}: {paths[row]} gave {row_features.shape} features, not ({width},)")
        row_features[~np.isfinite(row_features)] = np.nan  # inf is never a feature value: undefined
        values[k], ok[k] = row_features, True
    return UnitResult(rows=np.asarray(rows, dtype=np.int64),
                      arrays={"values": values, "defined": np.isfinite(values), "ok": ok,
                              "file_size": stats[:, 0], "file_mtime_ns": stats[:, 1]}, failures=failures)


def feature_table_units(feature_set: FeatureSet, config: FeatureTableConfig, paths: list[str], utt_ids: list[str],
                        pending: list[tuple[int, list[int]]]) -> Iterator[tuple[int, UnitResult]]:
    """Decode audio here (fast) and run the feature function in worker processes (slow), a few units ahead."""
    workers = config.workers or os.cpu_count() or 1
    if workers == 1:
        for unit, rows in pending:
            audio, stats = _decode_unit(rows, paths, config)
            features = [feature_set.compute(a, config.sample_rate_hz) for a in audio if not isinstance(a, str)]
            yield unit, _unit_result(feature_set, rows, audio, features, paths, utt_ids, stats)
        return
    # spawn, not fork: the parent may hold torch/OpenMP threads, which fork can deadlock. Workers import only the
    # feature function's module, so they start in a fraction of a second. One task per file, not per unit: with
    # units of 16 files the last unit kept one core busy for a second while the other sat idle.
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
                futures = [pool.submit(feature_set.compute, a, config.sample_rate_hz)
                           for a in audio if not isinstance(a, str)]
                in_flight.append((unit, rows, audio, stats, futures))
            if not in_flight:
                finished = True
                return
            unit, rows, audio, stats, futures = in_flight.popleft()
            features = [f.result() for f in futures]
            yield unit, _unit_result(feature_set, rows, audio, features, paths, utt_ids, stats)
    finally:
        if not finished:  # interrupted (Ctrl-C, --on-error fail): drop queued work instead of finishing it
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=not finished)


def run_feature_table_stage(feature_set: FeatureSet, cache_path: str, manifest: pl.DataFrame,
                            config: FeatureTableConfig, on_error: str = "skip", only_rows: np.ndarray | None = None,
                            work: StageWork = StageWork()) -> list[Failure]:
    """Compute ``feature_set`` for every utterance into the cache's group of that name (resumable); with
    ``only_rows`` recompute just those rows and keep the others from the cache; with ``work.shard`` compute one
    shard's chunks only."""
    names = feature_set.names()
    rows = np.arange(manifest.height) if only_rows is None else np.asarray(only_rows)
    units = [[int(rows[i]) for i in unit] for unit in plan_fixed_chunks(len(rows), config.chunk_size)]
    durations = manifest["duration_s"].cast(pl.Float64).fill_null(0.0).to_numpy()
    fingerprint = {"feature_set_version": feature_set.version, "config": result_settings(config), "names": list(names)}
    provenance = {**fingerprint, "feature_set": feature_set.name, "packages": package_versions(),
                  "workers": config.workers}
    paths, utt_ids = manifest["path"].to_list(), manifest["utt_id"].to_list()
    compute = lambda pending: feature_table_units(feature_set, config, paths, utt_ids, pending)  # noqa: E731
    plan = StagePlan(feature_set.stage, units, fingerprint, constants={"names": np.array(names, dtype=object)},
                     stage_bytes=manifest.height * len(names) * 5,  # float32 values + bool mask
                     update_rows=only_rows, unit_seconds=[float(np.nan_to_num(durations[u]).sum()) for u in units])
    return run_stage(cache_path, manifest, Stage(plan, compute, provenance), on_error, work)


def feature_table_facts(reader: CacheReader, stage: str) -> dict:
    """What ``cache info`` says of a feature table: its version, width and the features often undefined."""
    ok = reader.read(stage, "ok")
    values = reader.read(stage, "values")[ok]
    names = list(reader.read(stage, "names"))
    undefined = np.isnan(values).mean(0) if len(values) else np.zeros(len(names))
    return {"feature_set": reader.provenance(stage).get("feature_set_version"), "features": len(names),
            "undefined_share": {n: float(u) for n, u in zip(names, undefined) if u > 0}}


def describe_feature_table(facts: dict, most_undefined: int = 8) -> str:
    """``feature_table_facts`` as the text after a stage's ok count."""
    worst = sorted(facts["undefined_share"].items(), key=lambda kv: -kv[1])[:most_undefined]
    return (f"{facts['feature_set']}, {facts['features']} features; most often undefined: "
            + (", ".join(f"{n} {share:.0%}" for n, share in worst) or "none"))
