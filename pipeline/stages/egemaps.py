"""The eGeMAPS stage: openSMILE's eGeMAPS v02 functionals (``pipeline.features.egemaps``) of every utterance,
``[N, 88]``: the field's standard minimal set, a second choice for the head's prosody block beside Praat's."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.features.egemaps import EGEMAPS_NAMES, EGEMAPS_SET_VERSION, egemaps_functionals
from pipeline.stages.feature_table import FeatureSet, FeatureTableConfig

EGEMAPS = FeatureSet("egemaps", "egemaps", EGEMAPS_SET_VERSION, lambda: EGEMAPS_NAMES, egemaps_functionals)


@dataclass(frozen=True)
class EgemapsConfig(FeatureTableConfig):
    """Settings of the eGeMAPS stage (stored with the cache); openSMILE analyses 16 kHz audio like Praat's stage."""

    min_duration_s: float = 0.06  # openSMILE's longest frame: shorter audio gives no value at all (a failure)
