"""Every extraction stage and feature set, by name: its config, how it runs, what it feeds, how it is described.

``extract``, ``launch``, ``cache info``, the heads and ``predict`` ask this registry instead of knowing stage
names. Adding a feature set is one module (a ``FeatureSet`` and its stage, see ``pipeline/stages/egemaps.py``)
and one line in ``STAGES`` below; ``tests/test_registry.py`` proves it with a toy set.

Two kinds of stage:

* **per utterance** (speech, prosody, egemaps): one result per audio file. Shards split them, and rows whose
  audio file changed are recomputed.
* **derived** (state): computed from the cached per-utterance stages, once, after them (after ``cache merge``
  when sharded); recomputed whenever its inputs or settings change, since that takes seconds to minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from cache.reader import CacheReader
from cache.schema import Failure
from core.columns import manifest_splits
from core.errors import InputError
from pipeline.models.state_kinds import state_kind
from pipeline.models.state_model import StateConfig, state_config_from_dict
from pipeline.stages import egemaps, prosody, speech, state
from pipeline.stages.feature_table import (
    FeatureSet,
    describe_feature_table,
    feature_table_facts,
    result_settings,
    run_feature_table_stage,
)
from pipeline.stages.runner import StageWork


@dataclass(frozen=True)
class StageCall:
    """One run of a stage: the cache, its manifest (cache row order), the stage's own config and how to run."""

    cache_path: str
    manifest: pl.DataFrame
    config: Any
    device: torch.device
    on_error: str = "skip"
    only_rows: np.ndarray | None = None  # per-utterance stages: recompute only these rows
    work: StageWork = field(default_factory=StageWork)


def _no_check(config: Any, manifest: pl.DataFrame) -> None:
    return None


@dataclass(frozen=True)
class StageSpec:
    """A stage: how it is configured, run, checked and described, and which head block it feeds."""

    name: str  # its cache group
    config_type: type
    run: Callable[[StageCall], list[Failure]]
    facts: Callable[[CacheReader], dict]  # what ``cache info`` reports (JSON-serialisable)
    describe: Callable[[dict], str]  # ``facts`` as text
    per_utterance: bool = True  # False: derived from the cached stages, once, after them
    requires: tuple[str, ...] = ()  # stages a derived stage reads
    head_block: str | None = None  # speech | prosody | state: the block of the head's input it feeds
    feature_set: str | None = None  # the name users give it for its head block (``--prosody praat,egemaps``)
    result_settings: Callable[[Any], dict] = asdict  # the settings that change its output (stored, compared)
    config_from_dict: Callable[[dict], Any] | None = None  # default: ``config_type(**stored)``
    check_request: Callable[[Any, pl.DataFrame], None] = _no_check  # refuse a manifest it cannot run on
    manifest_columns: Callable[[dict], tuple[str, ...]] = lambda provenance: ()  # manifest columns it depends on
    patchable: Callable[[Any], bool] = lambda config: True  # False: changed files rebuild it whole
    # what this version of the code computes, as the provenance stores it (a feature set's version and names): a
    # stored stage that differs is refused, never mixed with rows computed now
    identity: Callable[[], dict] = dict

    def from_dict(self, stored: dict) -> Any:
        """The stage's config from its ``asdict`` form (unknown keys refused by the dataclass)."""
        return self.config_from_dict(stored) if self.config_from_dict else self.config_type(**stored)


# --- speech -----------------------------------------------------------------------------------------------------

def _run_speech(call: StageCall) -> list[Failure]:
    return speech.run_speech_stage(call.cache_path, call.manifest, call.config, call.device, call.on_error,
                                   only_rows=call.only_rows, work=call.work)


def _speech_facts(reader: CacheReader) -> dict:
    provenance = reader.provenance("speech")
    model = provenance.get("model", {})
    return {"model": model.get("model_id"), "weights_sha256": model.get("weights_sha256"),
            "hidden_states": model.get("num_hidden_states"), "hidden_size": model.get("hidden_size"),
            "padding": model.get("padding_policy"), "precision": provenance.get("config", {}).get("precision"),
            "device": provenance.get("device_type")}


def _describe_speech(facts: dict) -> str:
    return (f"model {facts['model']} (weights sha256 {str(facts['weights_sha256'])[:12]}...), {facts['hidden_states']} "
            f"hidden states x {facts['hidden_size']}, {facts['precision']} on {facts['device']}, padding "
            f"{facts['padding']}")


def _speech_from_dict(stored: dict) -> speech.SpeechConfig:
    return speech.SpeechConfig(**{**stored, "frame_layers": tuple(stored.get("frame_layers", ()))})


SPEECH = StageSpec("speech", speech.SpeechConfig, _run_speech, _speech_facts, _describe_speech, head_block="speech",
                   config_from_dict=_speech_from_dict, patchable=lambda config: not config.frame_layers)


# --- feature tables (the prosody block) -------------------------------------------------------------------------

def feature_table_stage(table: FeatureSet, config_type: type) -> StageSpec:
    """The registration of a feature table (``pipeline.stages.feature_table``) as a set of the head's prosody
    block."""

    def run(call: StageCall) -> list[Failure]:
        return run_feature_table_stage(table, call.cache_path, call.manifest, call.config, call.on_error,
                                       call.only_rows, call.work)

    return StageSpec(table.stage, config_type, run, lambda reader: feature_table_facts(reader, table.stage),
                     describe_feature_table, head_block="prosody", feature_set=table.name,
                     result_settings=result_settings,
                     identity=lambda: {"feature_set_version": table.version, "names": list(table.names())})


# --- state ------------------------------------------------------------------------------------------------------

def _run_state(call: StageCall) -> list[Failure]:
    state.run_state_stage(call.cache_path, call.config, call.device)
    return []  # rows without speech or prosody get no state (ok = False), nothing new fails


def _check_state_request(config: StateConfig, manifest: pl.DataFrame) -> None:
    """The kinds that learn from labels are cross-fitted over folds: they need 3 (or predefined partitions)."""
    if state_kind(config).cross_fitted and manifest_splits(manifest) is None:
        folds = sorted(set(manifest["fold"].drop_nulls().to_list()))
        if len(folds) < 3:
            raise InputError(f"--state-kind {config.kind} learns from labels and is cross-fitted over folds: it needs "
                             f"at least 3 folds (the corpus has {len(folds)}); use --state-kind ema-features")


def _state_facts(reader: CacheReader) -> dict:
    provenance = reader.provenance("state")
    config = provenance.get("config", {})
    return {"kind": state_kind(provenance).name, "grouping": config.get("grouping"),
            "width": provenance.get("width", config.get("model", {}).get("d_state")),
            "folds": provenance.get("folds"), "partitions": bool(provenance.get("partitions")),
            "backend": provenance.get("backend"), "units": len(provenance.get("units", provenance.get("updaters", [])))}


def _describe_state(facts: dict) -> str:
    fitted = "on the train partition" if facts["partitions"] else "per fold"
    trained = f"{facts['units']} updaters" if state_kind(facts["kind"]).learned else f"projection fitted {fitted}"
    experiments = "test sets" if facts["partitions"] else "folds"
    return (f"{facts['kind']} over {facts['grouping']}, width {facts['width']}, {experiments} {facts['folds']}, "
            f"{trained}, {facts['backend']}")


STATE = StageSpec("state", StateConfig, _run_state, _state_facts, _describe_state, per_utterance=False,
                  requires=("speech", "prosody"), head_block="state", config_from_dict=state_config_from_dict,
                  check_request=_check_state_request, manifest_columns=lambda provenance: state_kind(provenance).columns)


# --- the registry -----------------------------------------------------------------------------------------------

# Run order: per-utterance stages in this order, then the derived ones. One line per stage.
STAGES: dict[str, StageSpec] = {spec.name: spec for spec in (
    SPEECH,
    feature_table_stage(prosody.PRAAT, prosody.ProsodyConfig),
    feature_table_stage(egemaps.EGEMAPS, egemaps.EgemapsConfig),
    STATE,
)}


def stage_spec(name: str) -> StageSpec:
    """The registered stage ``name``; an unknown name is an error listing the known ones."""
    if name not in STAGES:
        raise InputError(f"unknown stage '{name}' (available: {', '.join(STAGES)})")
    return STAGES[name]


def run_order(names: list[str]) -> list[str]:
    """``names`` in the order they must run: per-utterance stages in registry order, then the derived ones."""
    ordered = [n for n in STAGES if n in names]
    return [n for n in ordered if STAGES[n].per_utterance] + [n for n in ordered if not STAGES[n].per_utterance]


def feature_sets(block: str) -> dict[str, str]:
    """Feature-set name -> stage name of the stages feeding head block ``block`` (``prosody``: praat, egemaps)."""
    return {spec.feature_set: spec.name for spec in STAGES.values() if spec.head_block == block and spec.feature_set}


def feature_set_stages(block: str, names: list[str] | tuple[str, ...]) -> list[str]:
    """The stages of feature sets ``names`` of ``block``; an unknown set is an error naming the known ones."""
    known = feature_sets(block)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"unknown {block} feature set(s) {', '.join(unknown)} (available: {', '.join(known)})")
    return [known[n] for n in names]


def requested_stages(stages: list[str], block_sets: dict[str, list[str]]) -> list[str]:
    """The stages an ``extract --stages ...`` asks for, in run order, where a head block's name stands for the feature
    sets chosen for it (``--stages speech,prosody --prosody praat,egemaps`` -> speech, prosody, egemaps)."""
    out: list[str] = []
    for name in stages:
        out += feature_set_stages(name, block_sets[name]) if name in block_sets and feature_sets(name) else [name]
    return run_order(list(dict.fromkeys(out))) + [n for n in dict.fromkeys(out) if n not in STAGES]


def identity_changes(name: str, provenance: dict) -> dict[str, tuple[object, object]]:
    """``{key: (stored, computed now)}`` where a stored stage's identity (``StageSpec.identity``: a feature set's
    version and names) differs from what this version of the code computes."""
    now = stage_spec(name).identity()
    return {key: (provenance.get(key), value) for key, value in now.items() if provenance.get(key) != value}


def missing_requirements(stages: list[str], stored: list[str]) -> dict[str, list[str]]:
    """Derived stages asked for whose inputs are neither asked for nor in the cache: ``{stage: [missing]}``."""
    have = set(stages) | set(stored)
    return {name: missing for name in stages if name in STAGES
            if (missing := [r for r in STAGES[name].requires if r not in have])}


def stage_facts(reader: CacheReader) -> dict[str, tuple[dict, str]]:
    """For ``cache info``: each stored stage's facts and their text (a stage unknown to this version: none)."""
    out = {}
    for name in reader.stages:
        if name in STAGES:
            facts = STAGES[name].facts(reader)
            out[name] = (facts, STAGES[name].describe(facts))
    return out


class ExtractConfig:
    """Settings of ``extract``: each registered stage's config, by stage name (a stage not given runs with its
    defaults). Saved in the cache; each stage also stores the part that changes its output.

    ``ExtractConfig(speech=SpeechConfig(model=...), state=StateConfig(kind=...))``; ``config.speech``;
    ``config.replace(prosody=...)``; ``to_dict()`` / ``from_dict()`` for JSON."""

    def __init__(self, **stages: Any):
        for name, config in stages.items():
            spec = stage_spec(name)
            if not isinstance(config, spec.config_type):
                raise TypeError(f"ExtractConfig({name}=...) takes a {spec.config_type.__name__}, not "
                                f"{type(config).__name__}")
        self._stages = {name: stages.get(name, spec.config_type()) for name, spec in STAGES.items()}

    def __getattr__(self, name: str) -> Any:
        stages = self.__dict__.get("_stages", {})
        if name in stages:
            return stages[name]
        raise AttributeError(name)

    def of(self, name: str) -> Any:
        return self._stages[stage_spec(name).name]

    def replace(self, **stages: Any) -> ExtractConfig:
        return ExtractConfig(**{**self._stages, **stages})

    def to_dict(self) -> dict:
        """``{stage: asdict(config)}`` (what the cache's ``config`` attribute and a sharded run's description hold)."""
        return {name: asdict(config) for name, config in self._stages.items()}

    @classmethod
    def from_dict(cls, data: dict) -> ExtractConfig:
        """Inverse of ``to_dict``; stages missing from ``data`` (older caches) get their defaults."""
        return cls(**{name: stage_spec(name).from_dict(stored) for name, stored in data.items()})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExtractConfig) and self._stages == other._stages

    def __repr__(self) -> str:
        return f"ExtractConfig({', '.join(f'{k}={v!r}' for k, v in self._stages.items())})"


def stage_config_dict(name: str, config: ExtractConfig) -> dict:
    """What stage ``name`` stores as its ``config`` and compares on resume (``result_settings``)."""
    return stage_spec(name).result_settings(config.of(name))

