"""Many head configurations x folds x seeds from one cache loaded once, then one evaluation."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from cache.reader import CacheReader
from core.errors import InputError
from heads.evaluation.evaluate import Evaluation, evaluate_runs
from heads.evaluation.stats import StatsConfig
from heads.reporting.tables import write_evaluation
from heads.training.experiment import runs_per_seed, train_fold
from heads.training.features import effective_features, load_corpus_arrays
from heads.training.progress import TrainingProgress
from heads.training.streaming import float32_bytes, resident_decision
from heads.training.train import TrainConfig
from heads.training.variants import run_label

log = logging.getLogger(__name__)


def _reader_and_layer(cache: str | Path, configs: list[TrainConfig]) -> tuple[CacheReader, str | None]:
    """The reader and the one layer choice all ``configs`` share (only that hidden state is read, or the block is
    streamed for ``weighted``); None when they differ: every hidden state is read into memory, refused when this
    machine's memory cannot hold it for training (``heads.training.streaming.resident_decision``; MSP-Podcast: 28 GB)."""
    reader = CacheReader(cache)
    layers = {c.features.layer for c in configs}
    if len(layers) == 1:
        return reader, layers.pop()
    if "speech" in reader.stages:
        shape = reader.dataset_shapes("speech")["pooled"]
        resident, why = resident_decision(shape)
        if not resident:
            raise InputError(f"{cache}: variants with different layer choices ({', '.join(sorted(layers))}) need every "
                             f"hidden state in memory ({float32_bytes(shape) / 1e9:.1f} GB as float32; {why}); run "
                             "one ablate per layer choice")
    return reader, None


def run_ablation(cache: str | Path, configs: list[TrainConfig], folds: list[int], seeds: list[int],
                 out: str | Path, device: torch.device = torch.device("cpu"), stats: StatsConfig = StatsConfig(),
                 baseline: str | None = None, overwrite: bool = False, group_by: tuple[str, ...] = ()
                 ) -> tuple[str, Evaluation, dict]:
    """Train every config on every fold (or test set); write runs to ``out/<label>/fold<k>`` (``out/<label>/<test
    set>``) and tables/plots to ``out``.
    Returns the markdown (results and differences from ``baseline``, default the first config), the runs
    and the results of ``heads.evaluation.evaluate.summarise``. Existing runs are replaced only with ``overwrite``."""
    out = Path(out)
    arrays = load_corpus_arrays(*_reader_and_layer(cache, configs), group_by=group_by)
    labels = [run_label(replace(c, features=effective_features(arrays, c.features, folds[0]))) for c in configs]
    for i, label in enumerate(labels):
        if label != run_label(configs[i]):
            why = ("no dialogue context in this corpus" if arrays.no_context and configs[i].features.use_state
                   else "the cache lacks a block it uses")
            log.warning("'%s': %s; its runs are labelled '%s'", run_label(configs[i]), why, label)
        if label in labels[:i]:
            raise InputError(f"variants '{run_label(configs[labels.index(label)])}' and '{run_label(configs[i])}' are "
                             f"the same on {cache} (both train as '{label}': the cache lacks a block); drop one")
    requested = {run_label(c): label for c, label in zip(configs, labels)}
    baseline = requested.get(baseline, baseline) if baseline else None
    run_dirs = []
    runs = sum(runs_per_seed(arrays, config, fold) for fold in folds for config in configs) * len(seeds)
    with TrainingProgress(runs) as progress:
        for fold in folds:
            for config, label in zip(configs, labels):
                run_dir = out / label / arrays.experiment_folder(fold)
                train_fold(arrays, fold, config, seeds, run_dir, device, overwrite=overwrite, progress=progress)
                run_dirs.append(run_dir)
    evaluation = evaluate_runs(run_dirs)
    markdown, results = write_evaluation(evaluation, out, stats=stats, baseline=baseline)
    return markdown, evaluation, results
