"""Cached arrays -> standardised fold tensors for the heads. Statistics come from training rows only.

* speech: the chosen layer (``pipeline.features.layers``: last, N, mean, or all layers for a learned mix),
  z-scored per dimension;
* prosody: the chosen feature sets side by side (``praat``, ``egemaps``: any feature table the cache holds), NaN
  (undefined) replaced by the training mean, z-scored;
* state: the fold's own dialogue states (``/state/fold_<k>``), z-scored;
* targets: valence, arousal z-scored by the training mean/sd (metrics are reported on the original scale).

With ``per_speaker_norm`` speech and prosody are z-scored with each speaker's own statistics instead. Those
use the speaker's features but never labels, including test speakers (a common, documented practice: it
assumes the test speaker's unlabelled audio is available in advance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from cache.reader import CacheReader
from core.columns import manifest_splits
from core.errors import InputError
from core.protocol import (
    ALL_FOLDS,
    FoldSplit,
    experiment_name,
    experiment_numbers,
    experiment_split,
    shared_groups,
    test_set_names,
)
from core.standardise import zscore
from heads.training.streaming import (
    RESIDENT_BYTES,
    StreamedSpeech,
    float32_bytes,
    resident_decision,
    streamed_statistics,
)
from pipeline.features.layers import check_layer_choice, layer_index, reads_every_layer, select_layer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureConfig:
    """Which cached blocks a head sees and how they are normalised."""

    layer: str = "last"  # last | mean | weighted | N: an index into the L+1 hidden states
    use_speech: bool = True
    use_prosody: bool = True
    prosody_sets: tuple[str, ...] = ("praat",)  # feature tables of the prosody block (``extract --prosody``), in order
    # Off by default: no state kind met the context target on data it was not tuned on (README, "The dialogue
    # state"); ``+state`` switches it on, where the cache holds states with context.
    use_state: bool = False
    per_speaker_norm: bool = False


@dataclass
class CorpusArrays:
    """Everything the heads read from a cache, loaded once (one contiguous read per dataset)."""

    speech: np.ndarray | None  # [N, len(speech_layers), D] float16
    prosody_sets: dict[str, np.ndarray]  # feature set (praat, egemaps, ...) -> [N, F] float32 with NaN
    states: dict[int, np.ndarray]  # fold -> [N, d_state] float32
    targets: np.ndarray  # [N, 2] float64: valence, arousal on the corpus scale
    utt_ids: np.ndarray
    speakers: np.ndarray
    dialogs: np.ndarray  # [N] str dialog_id: validation holds out whole groups of linked speakers and dialogues
    folds: np.ndarray  # [N] int: the fold, or with partitions the test set's number (0: train / dev)
    usable: np.ndarray  # [N] bool: every stage the cache holds processed the row
    emotions: np.ndarray | None = None  # [N] category labels where the manifest has them (None: no column values)
    prosody_names: dict[str, list[str]] = field(default_factory=dict)  # feature set -> its F feature names
    provenance: dict = field(default_factory=dict)
    speech_layers: tuple[int, ...] = ()  # which of the cache's L+1 hidden states ``speech`` holds
    num_hidden_states: int = 0  # L+1 in the cache
    source: str = ""  # the cache file, for messages and run records
    splits: np.ndarray | None = None  # [N] str partition (train / dev / test set name); None: k folds
    speech_reader: CacheReader | None = None  # the speech block is read from here in blocks (heads.training.streaming)
    no_context: bool = False  # the cache's state stage found no dialogue with more than one utterance
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # column -> [N] str: per-group results (gender, ...)
    # targets on the common scale (heads.studies.cross) and test rows reported on this (low, high) scale instead; None: as is
    report_scale: tuple[float, float] | None = None

    def prosody(self, sets: tuple[str, ...]) -> np.ndarray:
        """The prosody block of feature sets ``sets`` side by side: ``[N, sum F]`` float32 with NaN."""
        missing = [name for name in sets if name not in self.prosody_sets]
        if missing:
            raise InputError(f"{self.source}: no {', '.join(missing)} feature set in this cache (it holds "
                             f"{', '.join(self.prosody_sets) or 'none'}); add it with `extract --prosody "
                             f"{','.join(dict.fromkeys([*self.prosody_sets, *sets]))}` (the other stages are kept), or train on "
                             f"what it holds (switch +prosody={'/'.join(self.prosody_sets) or '...'})")
        return np.concatenate([self.prosody_sets[name] for name in sets], axis=1)

    def experiments(self) -> list[int]:
        """Every fold, or every test set's number (partitions), of the usable rows."""
        return experiment_numbers(self.folds, self.usable, self.splits is not None)

    def experiment_name(self, fold: int) -> str:
        """``fold 3``, ``Test1`` or ``all`` (``core.protocol.experiment_name``)."""
        return experiment_name(fold, self.splits)

    def experiment_folder(self, fold: int) -> str:
        """The run folder name of experiment ``fold``: ``fold3``, or the test set's name (``Test1``)."""
        if self.splits is None:
            return f"fold{fold}"
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.experiment_name(fold))
        return name if not name.startswith(".") else f"set{name}"  # never "..", never hidden


def add_final_states(arrays: CorpusArrays, reader: CacheReader) -> None:
    """States for a final model (``fold == ALL_FOLDS``): the untrained context with its projection fitted on
    every usable row (no labels). The learned state would need an updater trained on all folds: refused."""
    if "state" not in reader.stages or ALL_FOLDS in arrays.states or not reader.provenance("state").get("context", True):
        return
    if arrays.splits is not None and arrays.states:  # partitions: every experiment has the train partition's states
        arrays.states[ALL_FOLDS] = next(iter(arrays.states.values()))
        return
    from pipeline.models.state_kinds import state_kind
    from pipeline.models.state_model import state_config_from_dict
    from pipeline.stages.state import load_state_inputs

    config = state_config_from_dict(reader.provenance("state")["config"])
    kind = state_kind(config)
    if not kind.final_model:
        raise InputError(f"{reader.path}: a final model (--fold all) with the learned {kind.name} state needs an "
                         "updater trained on every fold, which this version does not build; leave the state out, or use "
                         "a cache made with --state-kind ema-features")
    arrays.states[ALL_FOLDS] = kind.fold_states(load_state_inputs(reader, config), ALL_FOLDS, config)


def corpus_experiments(manifest) -> tuple[list[int], list[str] | None]:  # noqa: ANN001 - polars.DataFrame
    """``(fold numbers, test set names or None)`` of a manifest: its k folds, or its partitions' test sets."""
    splits = manifest_splits(manifest)
    if splits is None:
        return sorted(set(manifest["fold"].to_list())), None
    names = test_set_names(splits)
    return list(range(1, len(names) + 1)), names


def split_rows(arrays: CorpusArrays, fold: int, val_fraction: float) -> FoldSplit:
    """The protocol's split of ``fold`` (``core.protocol.experiment_split``: folds or partitions) over the rows
    every stage processed."""
    try:
        return experiment_split(arrays.folds, arrays.splits, arrays.speakers, arrays.dialogs, arrays.usable, fold,
                                val_fraction)
    except InputError as err:
        raise InputError(f"{arrays.source}: {err}") from None


def protocol_warnings(arrays: CorpusArrays, split: FoldSplit, wants_state: bool = False) -> list[str]:
    """What makes this experiment's scores less trustworthy than the protocol promises, in words (run records,
    tables and reports show them): a validation rule that had to fall back, test rows that share a speaker
    or a dialogue with training or validation rows, and a state asked for (``wants_state``) where the corpus has no
    dialogue context."""
    warnings = [f"validation: {split.warning}"] if split.warning else []
    rows = np.concatenate([split.train, split.validation, split.test])
    places = np.where(np.isin(rows, split.test), "test", "training")
    shared = shared_groups(arrays.speakers[rows], arrays.dialogs[rows], places)
    if shared:
        speakers = [g.name for g in shared if g.kind == "speaker"]
        dialogues = [g.name for g in shared if g.kind == "dialogue"]
        first = ", ".join([f"speaker {n}" for n in speakers[:2]] + [f"dialogue {n}" for n in dialogues[:2]])
        warnings.append(f"test rows share {len(speakers)} speaker(s) and {len(dialogues)} dialogue(s) with training "
                        f"rows ({first}): test scores are optimistic")
    if arrays.no_context and wants_state:
        warnings.append("no dialogue context in this corpus: every dialogue has a single utterance, so the heads "
                        "use no state")
    return warnings


GROUP_COLUMNS = ("gender",)  # manifest columns every evaluation breaks results down by, where they are filled


def group_columns(manifest, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:  # noqa: ANN001 - pl.DataFrame
    """``{column: [N] str}`` of the group columns to report per group: ``GROUP_COLUMNS`` that hold values, and every
    column of ``extra`` (``--group-by``; refused when the manifest lacks it)."""
    missing = [c for c in extra if c not in manifest.columns]
    if missing:
        raise InputError(f"--group-by {', '.join(missing)}: the manifest has no such column (it has "
                         f"{', '.join(manifest.columns)})")
    wanted = [c for c in (*GROUP_COLUMNS, *extra) if manifest[c].null_count() < manifest.height]
    return {c: manifest[c].cast(str).fill_null("unknown").to_numpy() for c in dict.fromkeys(wanted)}


def feature_tables(reader: CacheReader) -> dict[str, str]:
    """The feature sets of the prosody block a cache holds: set name (``praat``, ``egemaps``) -> its stage (group).
    A feature table is a stage with a ``feature_set_version`` (``pipeline.stages.feature_table``); ``prosody`` always
    is (the Praat set)."""
    return tables_of_provenance({stage: reader.provenance(stage) for stage in reader.stages})


def tables_of_provenance(provenance: dict[str, dict]) -> dict[str, str]:
    """``feature_tables`` from the stages' provenance records (stage -> provenance), e.g. a run's."""
    tables = {}
    for stage, record in provenance.items():
        if "feature_set_version" in record or stage == "prosody":
            tables[record.get("feature_set", "praat" if stage == "prosody" else stage)] = stage  # older: praat
    return tables


def load_corpus_arrays(reader: CacheReader, layer: str | None = None,
                       stream_above_bytes: int | None = None, group_by: tuple[str, ...] = ()) -> CorpusArrays:
    """Everything the heads read. With ``layer`` (``last`` or an index) only that hidden state of the
    speech block is read: 1/(L+1) of its bytes (20 MB instead of 0.5 GB for IEMOCAP with wavlm-large).
    Without it (or with ``mean``/``weighted``) all hidden states are read, for runs that choose or mix
    layers later; with ``weighted`` on a speech block too large for this machine's memory
    (``heads.training.streaming.resident_decision``, logged; ``stream_above_bytes``: stream when its float32 copy would exceed
    this many bytes instead) none is read: training streams it from the cache (``heads.training.streaming``)."""
    m = reader.manifest
    tables = feature_tables(reader)
    states = {}
    if "state" in reader.stages and reader.provenance("state").get("context", True):  # False: no dialogue context
        for name in reader.dataset_shapes("state"):
            if name.startswith("fold_"):
                states[int(name.split("_")[1])] = reader.read("state", name)
    speech, held, total, streamed = None, (), 0, False
    if "speech" in reader.stages:
        shape = reader.dataset_shapes("speech")["pooled"]
        total = shape[1]
        if layer == "weighted":
            if stream_above_bytes is None:
                resident, why = resident_decision(shape)
                log.info("%s", why)
            else:
                resident = float32_bytes(shape) <= stream_above_bytes
        if layer == "weighted" and not resident:
            held, streamed = tuple(range(total)), True
        elif layer is None or reads_every_layer(check_layer_choice(layer)):
            speech, held = reader.read("speech", "pooled"), tuple(range(total))
        else:
            index = layer_index(layer, total)
            speech, held = reader.read("speech", "pooled", np.s_[:, index : index + 1]), (index,)
    return CorpusArrays(
        speech=speech, speech_layers=held, num_hidden_states=total,
        prosody_sets={name: reader.read(stage, "values") for name, stage in tables.items()},
        states=states,
        targets=m.select("valence", "arousal").to_numpy().astype(np.float64),
        utt_ids=m["utt_id"].to_numpy(), speakers=m["speaker"].to_numpy(), dialogs=m["dialog_id"].to_numpy(),
        folds=m["fold"].to_numpy(),
        usable=reader.ok(reader.stages),
        emotions=m["emotion"].to_numpy() if m["emotion"].null_count() < m.height else None,
        prosody_names={name: list(reader.read(stage, "names")) for name, stage in tables.items()},
        provenance={s: reader.provenance(s) for s in reader.stages}, source=str(reader.path),
        splits=manifest_splits(m),
        speech_reader=reader if streamed else None,
        no_context="state" in reader.stages and not reader.provenance("state").get("context", True),
        groups=group_columns(m, group_by),
    )


@dataclass
class SplitTensors:
    """One split's inputs. ``speech`` [n, D] or [n, L+1, D]; ``prosody`` [n, F]; ``state`` [n, d]."""

    rows: np.ndarray
    speech: torch.Tensor
    prosody: torch.Tensor
    state: torch.Tensor
    targets: torch.Tensor  # [n, 2] standardised
    raw_targets: np.ndarray  # [n, 2] corpus scale

    def to(self, device: torch.device) -> "SplitTensors":
        """The same split with its tensors on ``device``."""
        return replace(self, speech=self.speech.to(device), prosody=self.prosody.to(device),
                       state=self.state.to(device), targets=self.targets.to(device))


@dataclass
class FoldTensors:
    train: SplitTensors
    validation: SplitTensors
    test: SplitTensors
    target_mean: np.ndarray  # [2]
    target_std: np.ndarray  # [2]
    effective: FeatureConfig  # after dropping blocks the cache lacks
    stats: dict[str, np.ndarray]  # normalisation statistics, saved with the head


def speaker_normalised(x: np.ndarray, speakers: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
    """``--speaker-norm``: each speaker's rows of ``x`` ``[n, ...]`` z-scored with that speaker's own statistics
    (``zscore``), NaN first replaced by ``fill`` (the prosody block: a speaker may lack a feature entirely). Training
    (``prepare_fold``) and prediction (``heads.deployment.model_folder.head_outputs``) both go through here."""
    if fill is not None:
        x = np.where(np.isnan(x), fill, x)
    out = np.empty_like(x)
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        out[rows], _, _ = zscore(x[rows], x[rows])
    return out


def select_speech(arrays: CorpusArrays, layer: str) -> np.ndarray:
    """The speech block as float32: ``[N, D]`` (one layer, or ``mean``) or ``[N, L+1, D]`` (``weighted``)."""
    every = tuple(range(arrays.num_hidden_states))
    if reads_every_layer(check_layer_choice(layer)):
        if arrays.speech_layers != every:
            raise InputError(f"--layer {layer} needs every hidden state; these arrays were loaded with one layer")
        return arrays.speech.astype(np.float32) if layer == "weighted" else select_layer(arrays.speech, layer)
    index = layer_index(layer, arrays.num_hidden_states)
    if index not in arrays.speech_layers:
        raise InputError(f"--layer {layer}: these arrays were loaded with hidden state(s) {arrays.speech_layers}")
    return arrays.speech[:, arrays.speech_layers.index(index)].astype(np.float32)


def effective_features(arrays: CorpusArrays, config: FeatureConfig, fold: int) -> FeatureConfig:
    """``config`` with the blocks the cache lacks switched off (a run is labelled by what it really used)."""
    effective = replace(config, use_speech=config.use_speech and (arrays.speech is not None or
                                                                  arrays.speech_reader is not None),
                        use_prosody=config.use_prosody and (bool(arrays.prosody_sets) or
                                                            config.prosody_sets != FeatureConfig.prosody_sets),
                        use_state=config.use_state and fold in arrays.states)
    if not (effective.use_speech or effective.use_prosody or effective.use_state):
        raise InputError(f"{arrays.source}: every feature block is switched off or missing from the cache")
    return effective


def _streamed_speech(arrays: CorpusArrays, config: FeatureConfig, train: np.ndarray, stats: dict):  # noqa: ANN202
    """``rows -> StreamedSpeech`` with per (layer, dimension) statistics of the ``train`` rows (into ``stats``)."""
    if config.layer != "weighted" or config.per_speaker_norm:
        raise InputError(f"{arrays.source}: only --layer weighted without --speaker-norm streams the speech block")
    block_rows = StreamedSpeech.block_rows
    stats["speech_mean"], stats["speech_std"] = streamed_statistics(arrays.speech_reader, train, block_rows)

    def speech_of(rows: np.ndarray, every_epoch: bool = False) -> StreamedSpeech:
        if np.any(np.diff(rows) <= 0):
            raise ValueError("streamed rows must be sorted")  # the protocol's splits are
        speech = StreamedSpeech(arrays.speech_reader, rows, stats["speech_mean"], stats["speech_std"])
        fits = len(rows) * int(np.prod(speech.mean.shape)) * 2 <= RESIDENT_BYTES
        return speech.make_resident() if every_epoch and fits else speech

    return speech_of


def without_state(fold: FoldTensors) -> FoldTensors:
    """``fold`` with the state block left out, sharing every other tensor: what ``prepare_fold`` gives with
    ``use_state=False``, without a second copy of the speech block (the state gate trains both)."""
    def drop(split: SplitTensors) -> SplitTensors:
        return replace(split, state=split.state[:, :0])

    return replace(fold, train=drop(fold.train), validation=drop(fold.validation), test=drop(fold.test),
                   effective=replace(fold.effective, use_state=False),
                   stats={k: v for k, v in fold.stats.items() if not k.startswith("state_")})


def prepare_fold(arrays: CorpusArrays, split: FoldSplit, config: FeatureConfig) -> FoldTensors:
    """Standardised tensors of one fold's train / validation / test rows."""
    n = len(arrays.targets)
    effective = effective_features(arrays, config, split.fold)
    use_speech, use_prosody, use_state = effective.use_speech, effective.use_prosody, effective.use_state
    train = split.train
    stats: dict[str, np.ndarray] = {}

    def block(values: np.ndarray, name: str) -> np.ndarray:
        if config.per_speaker_norm and name != "state":
            if name == "prosody":  # saved: predict imputes new speakers alike
                stats["prosody_fill"] = np.nanmean(values[train], 0)
            values = speaker_normalised(values, arrays.speakers, stats.get(f"{name}_fill"))
        z, stats[f"{name}_mean"], stats[f"{name}_std"] = zscore(values, values[train])
        return np.nan_to_num(z, nan=0.0, copy=False).astype(np.float32, copy=False)  # NaN (undefined) -> the mean

    if use_speech and arrays.speech is None:  # too large for memory: read in blocks (heads.training.streaming)
        speech_of = _streamed_speech(arrays, config, train, stats)
    else:
        speech = block(select_speech(arrays, config.layer), "speech") if use_speech else np.zeros((n, 0), np.float32)
        speech_of = lambda rows, every_epoch=False: torch.from_numpy(speech[rows])  # noqa: E731
    prosody = block(arrays.prosody(config.prosody_sets), "prosody") if use_prosody else np.zeros((n, 0), np.float32)
    state = block(arrays.states[split.fold], "state") if use_state else np.zeros((n, 0), np.float32)
    target_mean, target_std = arrays.targets[train].mean(0), arrays.targets[train].std(0)
    target_std = np.where(target_std > 1e-8, target_std, 1.0)
    stats["target_mean"], stats["target_std"] = target_mean, target_std
    targets = ((arrays.targets - target_mean) / target_std).astype(np.float32)

    def split_tensors(rows: np.ndarray, every_epoch: bool = False) -> SplitTensors:
        return SplitTensors(rows, speech_of(rows, every_epoch), torch.from_numpy(prosody[rows]),
                            torch.from_numpy(state[rows]), torch.from_numpy(targets[rows]), arrays.targets[rows])

    return FoldTensors(split_tensors(split.train), split_tensors(split.validation, every_epoch=True),
                       split_tensors(split.test),
                       target_mean, target_std, effective, {k: np.asarray(v, np.float32) for k, v in stats.items()})
