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
from heads.train import TrainConfig
from heads.variants import run_label

log = logging.getLogger(__name__)


def run_ablation(cache: str | Path, configs: list[TrainConfig], folds: list[int], seeds: list[int],
                 out: str | Path, device: torch.device = torch.device("cpu")) -> tuple[str, Evaluation]:
    """Train every config on every fold; write runs to ``out/<label>/fold<k>`` and tables/plots to ``out``."""
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
    markdown, _ = write_evaluation(evaluation, out)
    return markdown, evaluation
