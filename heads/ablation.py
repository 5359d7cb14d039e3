"""Many head configurations x folds x seeds from one cache loaded once, then one evaluation."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from cache.reader import CacheReader
from heads.evaluate import Evaluation, evaluate_runs, write_evaluation
from heads.experiment import train_fold
from heads.features import load_corpus_arrays
from heads.stats import StatsConfig
from heads.train import TrainConfig
from heads.variants import run_label

log = logging.getLogger(__name__)


def run_ablation(cache: str | Path, configs: list[TrainConfig], folds: list[int], seeds: list[int],
                 out: str | Path, device: torch.device = torch.device("cpu"), stats: StatsConfig = StatsConfig(),
                 baseline: str | None = None) -> tuple[str, Evaluation, dict]:
    """Train every config on every fold; write runs to ``out/<label>/fold<k>`` and tables/plots to ``out``.
    Returns the markdown (results and differences from ``baseline``, default the first config), the runs
    and the results of ``heads.evaluate.summarise``."""
    out = Path(out)
    arrays = load_corpus_arrays(CacheReader(cache))
    run_dirs = []
    started = time.perf_counter()
    for fold in folds:
        for config in configs:
            run_dir = out / run_label(config) / f"fold{fold}"
            train_fold(arrays, fold, config, seeds, run_dir, device)
            run_dirs.append(run_dir)
            log.info("  trained %s fold %d (%.0f s)", run_label(config), fold, time.perf_counter() - started)
    evaluation = evaluate_runs(run_dirs)
    markdown, results = write_evaluation(evaluation, out, stats=stats, baseline=baseline)
    return markdown, evaluation, results
