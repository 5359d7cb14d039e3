"""The kinds of dialogue state, one object each (``STATE_KINDS``; look one up with ``state_kind``).

* ``ema-features``: no training. A causal exponentially weighted mean of the previous turns' features (the
  speech block's leading principal components and the whole z-scored prosody block;
  ``pipeline.features.context``), fitted on each fold's training rows (no labels). The current turn is not
  included: the heads see it already. One unit of work per fold.
* ``ema-features-speaker``: the same, with separate means over the speaker's own previous turns and over the
  other speakers' previous turns.
* ``ema-predictions``: the same averages, own and other speakers', of the previous turns' valence and arousal as
  predicted out of fold by a ridge on the turn summaries (``pipeline.features.context.first_pass_plan``).
  It learns from labels, so it is cross-fitted. One unit of work per fold.
* ``mamba``: the research note's learned updater (``pipeline.models.state_model``): a causal Mamba over the
  dialogue's utterances, then an EMA (``c_t`` includes turn t), trained to predict valence and arousal,
  early-stopped on held-out speakers of its own training folds; cross-fitted, one unit of work per updater
  (``pipeline.models.state_updater``).

A kind answers what the stage, ``extract``, ``export`` and ``predict`` need to know of it: whether it learns from
labels (``cross_fitted``, and so the manifest ``columns`` its states depend on), its units of work and how one is
computed, its width, the states of one experiment, what a model folder stores of it (``exported``) and how
``predict`` makes its states for new audio from that (``replay``). Callers ask the object; none compares names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from core.columns import manifest_splits
from core.errors import InputError
from pipeline.features.context import (
    PREDICTED,
    StateInputs,
    Unit,
    compute_context_unit,
    compute_prediction_unit,
    context_model,
    context_states,
    first_pass_predictions,
    fold_units,
    merge_unit_states,
    predicted_context,
    prediction_model,
    turn_summaries,
)
from pipeline.models import state_updater
from pipeline.models.mamba import kernel_available
from pipeline.models.state_model import LEGACY_KIND, StateConfig

# The manifest columns the states depend on: the protocol and the dialogue order, and for the kinds that learn
# from labels the labels (``pipeline.extract`` refuses a changed manifest that touches them; parts of an interrupted
# state stage are reused only for the same values).
STATE_COLUMNS = ("fold", "split", "speaker", "dialog_id", "start_s")
LABEL_COLUMNS = ("valence", "arousal")


@dataclass(frozen=True)
class StateKind:
    """One kind of dialogue state. ``cross_fitted``: it learns from labels, so every state is made without the
    labels of its own experiment's test rows and of its own row's fold (3 folds or partitions needed).
    ``learned``: a network (an updater) per unit of work, whose states include the current turn; a model folder
    gets it by training it again (and checking it against the cache); no final (``--fold all``) model.
    ``label_use``: how its states use labels, in words."""

    name: str
    cross_fitted: bool
    learned: bool
    label_use: str

    @property
    def columns(self) -> tuple[str, ...]:
        """The manifest columns its stored states depend on."""
        return STATE_COLUMNS + (LABEL_COLUMNS if self.cross_fitted else ())

    @property
    def includes_current_turn(self) -> bool:
        return self.learned

    @property
    def final_model(self) -> bool:
        """Whether a final model (``--fold all``, ``core.protocol.ALL_FOLDS``) can get its states (``fold_states``)."""
        return not self.learned

    def width(self, config: StateConfig, prosody_width: int) -> int:
        """Width of the stored state vectors."""
        raise NotImplementedError

    def backend(self, device: torch.device) -> str:
        """What computes it, for the provenance."""
        raise NotImplementedError

    def units(self, inputs: StateInputs) -> list[Unit]:
        """The stage's units of work: one per fold (with partitions one, serving every test set)."""
        return fold_units(inputs)

    def fold_arrays(self, inputs: StateInputs, fold: int, config: StateConfig) -> tuple[dict[str, np.ndarray], dict]:
        """A fold unit's ``fold<k>_rows``/``fold<k>_states`` arrays and summary."""
        raise NotImplementedError

    def compute_unit(self, inputs: StateInputs, unit: Unit, config: StateConfig, device: torch.device
                     ) -> tuple[dict[str, np.ndarray], dict]:
        """One unit of ``units``: its arrays (``fold<k>_rows``, ``fold<k>_states``) and a summary."""
        return self.fold_arrays(inputs, unit[0], config)

    def fold_states(self, inputs: StateInputs, fold: int, config: StateConfig) -> np.ndarray:
        """``[N, width]`` states for the experiment of ``fold`` (0 for unusable rows); with
        ``fold = core.protocol.ALL_FOLDS`` the projection is fitted on every usable row (a final model), and the
        first pass of ``ema-predictions`` predicts each fold from the others."""
        arrays, _ = self.fold_arrays(inputs, fold, config)
        out = {fold: np.zeros((len(inputs.z), self.width(config, inputs.prosody_width)), np.float32)}
        merge_unit_states(out, arrays)
        return out[fold]

    def exported(self, inputs: StateInputs, fold: int, config: StateConfig) -> dict[str, np.ndarray]:
        """What a model folder stores to give new audio the states experiment ``fold``'s test rows got."""
        raise NotImplementedError

    def replay(self, context: dict[str, np.ndarray], config: StateConfig, speech: np.ndarray, prosody: np.ndarray,
               sequences: list[np.ndarray], speakers: np.ndarray) -> np.ndarray:
        """``[N, width]`` states of new turns from what ``exported`` stored: ``speech`` ``[N, D]`` (the state's
        speech layer), ``prosody`` ``[N, F]``, the rows' ``sequences`` and ``speakers``."""
        raise NotImplementedError


@dataclass(frozen=True)
class FeatureContext(StateKind):
    """``ema-features`` (``speaker_aware``: ``ema-features-speaker``): averages of the previous turns' summaries."""

    speaker_aware: bool = False

    def width(self, config: StateConfig, prosody_width: int) -> int:  # every prosody feature is kept
        return (config.context_components + prosody_width + 1) * (2 if self.speaker_aware else 1)

    def backend(self, device: torch.device) -> str:
        return "untrained causal average (numpy)"

    def fold_arrays(self, inputs: StateInputs, fold: int, config: StateConfig) -> tuple[dict[str, np.ndarray], dict]:
        return compute_context_unit(inputs, fold, config.context_components, config.context_decay, self.speaker_aware)

    def exported(self, inputs: StateInputs, fold: int, config: StateConfig) -> dict[str, np.ndarray]:
        return context_model(inputs, fold, config.context_components)

    def replay(self, context: dict[str, np.ndarray], config: StateConfig, speech: np.ndarray, prosody: np.ndarray,
               sequences: list[np.ndarray], speakers: np.ndarray) -> np.ndarray:
        return context_states(turn_summaries(speech, prosody, context), sequences, speakers, config.context_decay,
                              speaker_aware=self.speaker_aware)


@dataclass(frozen=True)
class PredictedContext(StateKind):
    """``ema-predictions``: averages of the previous turns' out-of-fold predicted valence and arousal."""

    def width(self, config: StateConfig, prosody_width: int) -> int:
        return (len(PREDICTED) + 1) * 2  # own and other speakers' previous turns, each with its history mass

    def backend(self, device: torch.device) -> str:
        return "cross-fitted ridge, then causal averages (numpy)"

    def fold_arrays(self, inputs: StateInputs, fold: int, config: StateConfig) -> tuple[dict[str, np.ndarray], dict]:
        return compute_prediction_unit(inputs, fold, config.context_components, config.context_decay)

    def exported(self, inputs: StateInputs, fold: int, config: StateConfig) -> dict[str, np.ndarray]:
        return prediction_model(inputs, fold, config.context_components)

    def replay(self, context: dict[str, np.ndarray], config: StateConfig, speech: np.ndarray, prosody: np.ndarray,
               sequences: list[np.ndarray], speakers: np.ndarray) -> np.ndarray:
        predictions = first_pass_predictions(turn_summaries(speech, prosody, context), context)
        return predicted_context(predictions, sequences, speakers, config.context_decay)


@dataclass(frozen=True)
class LearnedState(StateKind):
    """``mamba``: cross-fitted updaters (``pipeline.models.state_updater``)."""

    def width(self, config: StateConfig, prosody_width: int) -> int:
        return config.model.d_state

    def backend(self, device: torch.device) -> str:
        return "mamba-ssm CUDA kernel" if kernel_available(device) else "PyTorch reference scan"

    def units(self, inputs: StateInputs) -> list[Unit]:
        return state_updater.updater_units(inputs)

    def compute_unit(self, inputs: StateInputs, unit: Unit, config: StateConfig, device: torch.device
                     ) -> tuple[dict[str, np.ndarray], dict]:
        return state_updater.compute_updater_unit(inputs, unit, config, device)

    def fold_arrays(self, inputs: StateInputs, fold: int, config: StateConfig) -> tuple[dict[str, np.ndarray], dict]:
        raise InputError(f"a final model (--fold all) with the learned {self.name} state needs an updater trained on "
                         "every fold, which this version does not build; leave the state out, or use a cache made "
                         "with --state-kind ema-features")

    def exported(self, inputs: StateInputs, fold: int, config: StateConfig) -> dict[str, np.ndarray]:
        """The updater that made the test rows' states, trained again on the CPU (``exported_updater``)."""
        return state_updater.exported_updater(inputs, fold, config)

    def replay(self, context: dict[str, np.ndarray], config: StateConfig, speech: np.ndarray, prosody: np.ndarray,
               sequences: list[np.ndarray], speakers: np.ndarray) -> np.ndarray:
        return state_updater.learned_states(context, config, np.concatenate([speech, prosody], axis=1), sequences)


STATE_KINDS: dict[str, StateKind] = {kind.name: kind for kind in (
    FeatureContext("ema-features", cross_fitted=False, learned=False, label_use="no labels used"),
    FeatureContext("ema-features-speaker", cross_fitted=False, learned=False, label_use="no labels used",
                   speaker_aware=True),
    PredictedContext("ema-predictions", cross_fitted=True, learned=False,
                     label_use="cross-fitted first-pass predictions"),
    LearnedState("mamba", cross_fitted=True, learned=True, label_use="cross-fitted updaters"),
)}
KINDS = tuple(STATE_KINDS)
CROSS_FITTED = tuple(name for name, kind in STATE_KINDS.items() if kind.cross_fitted)  # kinds that use labels


def state_kind(kind: str | StateConfig | Mapping) -> StateKind:
    """The kind of a name, of a ``StateConfig``, or of the state stage's stored provenance or config (a ``dict``;
    one stored before kinds had names, without ``kind``, is ``LEGACY_KIND``). An unknown name is an error that
    lists the kinds."""
    if isinstance(kind, StateConfig):
        name = kind.kind
    elif isinstance(kind, Mapping):
        name = kind.get("kind") or kind.get("config", {}).get("kind") or LEGACY_KIND
    else:
        name = kind
    if name not in STATE_KINDS:
        raise InputError(f"state kind must be one of {', '.join(STATE_KINDS)}, not '{name}'")
    return STATE_KINDS[name]


def default_kind(manifest: pl.DataFrame) -> str:
    """The state kind ``extract`` uses unless told: ``ema-predictions`` where it can be cross-fitted (predefined
    partitions, or 3 folds or more), else ``ema-features`` (no labels, any number of folds)."""
    if manifest_splits(manifest) is not None or manifest["fold"].n_unique() >= 3:
        return "ema-predictions"
    return "ema-features"


def state_columns(kind: str | StateConfig | Mapping) -> tuple[str, ...]:
    """The manifest columns the states of ``kind`` (anything ``state_kind`` takes) depend on."""
    return state_kind(kind).columns


def state_width(config: StateConfig, prosody_width: int) -> int:
    """Width of the stored state vectors of ``config``'s kind."""
    return state_kind(config).width(config, prosody_width)
