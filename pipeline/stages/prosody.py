"""The prosody stage: the Praat feature set (``pipeline.features.prosody``) of every utterance, ``[N, F]``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from cache.schema import Failure
from pipeline.features.prosody import FEATURE_NAMES, FEATURE_SET_VERSION, prosody_features
from pipeline.stages.feature_table import FeatureSet, FeatureTableConfig, run_feature_table_stage
from pipeline.stages.runner import StageWork

PRAAT = FeatureSet("praat", "prosody", FEATURE_SET_VERSION, lambda: FEATURE_NAMES, prosody_features)


@dataclass(frozen=True)
class ProsodyConfig(FeatureTableConfig):
    """Settings of the prosody stage (stored with the cache)."""


def run_prosody_stage(cache_path: str, manifest: pl.DataFrame, config: ProsodyConfig, on_error: str = "skip",
                      only_rows: np.ndarray | None = None, work: StageWork = StageWork()) -> list[Failure]:
    """Compute the Praat feature set of every utterance into the cache's ``prosody`` group (resumable); with
    ``only_rows`` recompute just those rows and keep the others from the cache; with ``work.shard`` compute one
    shard's chunks only."""
    return run_feature_table_stage(PRAAT, cache_path, manifest, config, on_error, only_rows, work)
