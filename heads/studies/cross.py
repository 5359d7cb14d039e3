"""Does it transfer? Heads trained on one corpus and tested on another, and the matrix over several corpora.

A pair (train corpus A, test corpus B) runs as one corpus with predefined partitions (``combined_arrays``): every
usable labelled row of A is ``train`` (validation: A's dialogue groups, as always) and every usable row of B (or the
rows of one of B's test sets, ``test_partition``) is one test set named after B. Protocol, training, evaluation, intervals and report are then ``ablate``'s. Labels are
mapped onto the common scale of ``core.labels`` (A's rows by A's scale, B's by B's) before anything is trained or
scored; ``scale="test"`` reports the test corpus's own scale instead. The diagonal of a matrix (A on A) is A's own
cross-validation, on the same scale. The caches must hold the same speech model (weight checksum), hidden states
and prosody feature set; the dialogue state is never used across corpora (its projection is fitted per corpus).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cache.reader import CacheReader
from core.errors import InputError
from core.labels import to_common
from core.protocol import partition_folds, test_set_names
from heads.evaluation.evaluate import Evaluation, evaluate_runs
from heads.evaluation.stats import StatsConfig
from heads.reporting.tables import write_evaluation
from heads.training.experiment import train_fold
from heads.training.features import CorpusArrays, feature_tables, load_corpus_arrays
from heads.training.progress import TrainingProgress
from heads.training.train import TrainConfig
from heads.training.variants import run_label


def corpus_name(cache: str | Path) -> str:
    """How tables name a cache's corpus: its file name without the extension."""
    return Path(cache).stem


def corpus_scale(reader: CacheReader) -> tuple[float, float]:
    """The rating scale ``(low, high)`` a cache's manifest declares (``scale_low``/``scale_high``)."""
    m = reader.manifest
    lows, highs = set(m["scale_low"].drop_nulls().to_list()), set(m["scale_high"].drop_nulls().to_list())
    if len(lows) != 1 or len(highs) != 1 or m["scale_low"].null_count():
        raise InputError(f"{reader.path}: its manifest declares no single rating scale (scale_low/scale_high, found "
                         f"{sorted(lows)} / {sorted(highs)}); add the columns to your manifest and run extract again "
                         "(the manifest is updated in place), or use a corpus reader that knows its scale")
    return float(lows.pop()), float(highs.pop())


def check_compatible(readers: dict[str, CacheReader], prosody_sets: set[str] | None = None) -> None:
    """Refuse caches made with different speech models, hidden states or prosody feature sets, naming the
    difference: heads trained on one cannot read the other's features. ``prosody_sets``: compare only these sets
    (the ones the study's heads read; None: every set the caches hold)."""
    def facts(reader: CacheReader) -> dict[str, object]:
        speech = reader.provenance("speech").get("model", {}) if "speech" in reader.stages else {}
        tables = {name: stage for name, stage in feature_tables(reader).items()
                  if prosody_sets is None or name in prosody_sets}
        return {"speech model weights": speech.get("weights_sha256"),
                "hidden states": reader.dataset_shapes("speech")["pooled"][1:] if "speech" in reader.stages else None,
                "prosody feature sets": {name: reader.provenance(stage).get("feature_set_version")
                                         for name, stage in tables.items()},
                "prosody features": {name: list(reader.read(stage, "names")) for name, stage in tables.items()}}

    names = list(readers)
    first = facts(readers[names[0]])
    for name in names[1:]:
        other = facts(readers[name])
        differing = [k for k in first if first[k] != other[k]]
        if differing:
            raise InputError(f"{readers[names[0]].path} and {readers[name].path} differ in {', '.join(differing)} "
                             f"({first[differing[0]]} vs {other[differing[0]]}); extract both with the same "
                             "--speech-model and the same stages")


def on_common_scale(arrays: CorpusArrays, scale: tuple[float, float]) -> CorpusArrays:
    """``arrays`` with its targets on the common scale (``core.labels``)."""
    return replace(arrays, targets=to_common(arrays.targets, *scale))


def test_rows(arrays: CorpusArrays, name: str, partition: str | None) -> np.ndarray:
    """``[N] bool``: the rows a corpus is tested on off the diagonal: every usable labelled row, or with
    ``partition`` the rows of that test set when the corpus has partitions (a corpus of k folds has none to name:
    every row)."""
    if partition is None or arrays.splits is None:
        return arrays.usable
    if partition not in test_set_names(arrays.splits):
        raise InputError(f"{arrays.source}: corpus {name} has no test set named {partition!r} (its test sets: "
                         f"{', '.join(test_set_names(arrays.splits))}); choose one with --test-partition")
    return arrays.usable & (arrays.splits == partition)


def combined_arrays(train: CorpusArrays, test: CorpusArrays, train_name: str, test_name: str,
                    tested: np.ndarray | None = None) -> CorpusArrays:
    """One corpus of the training corpus's usable rows (partition ``train``) and the test corpus's usable rows, or
    its ``tested`` rows (``[N] bool``), as the test set ``test_name``; targets as given (map them to one scale
    first), speakers, dialogues and utterances named ``<corpus>/<id>`` so that the corpora share none. Groups gain
    ``corpus``."""
    a, b = np.flatnonzero(train.usable), np.flatnonzero(test.usable if tested is None else tested)

    def both(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
        return None if x is None or y is None else np.concatenate([x[a], y[b]])

    def named(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.array([f"{train_name}/{v}" for v in x[a]] + [f"{test_name}/{v}" for v in y[b]], dtype=object)

    if train.speech_layers != test.speech_layers:
        raise InputError(f"{train_name} and {test_name} were loaded with different hidden states")
    splits = np.array(["train"] * len(a) + [test_name] * len(b), dtype=object)
    groups = {k: both(train.groups[k], test.groups[k]) for k in train.groups if k in test.groups}
    groups["corpus"] = np.array([train_name] * len(a) + [test_name] * len(b), dtype=object)
    emotions = both(train.emotions, test.emotions)
    return CorpusArrays(
        speech=both(train.speech, test.speech),
        prosody_sets={k: both(v, test.prosody_sets[k]) for k, v in train.prosody_sets.items() if k in test.prosody_sets},
        states={},
        targets=np.concatenate([train.targets[a], test.targets[b]]), utt_ids=named(train.utt_ids, test.utt_ids),
        speakers=named(train.speakers, test.speakers), dialogs=named(train.dialogs, test.dialogs),
        folds=partition_folds(splits), usable=np.ones(len(a) + len(b), bool), emotions=emotions,
        prosody_names=train.prosody_names, provenance=train.provenance, speech_layers=train.speech_layers,
        num_hidden_states=train.num_hidden_states, source=f"{train.source} -> {test.source}", splits=splits,
        groups=groups)


def own_experiments(arrays: CorpusArrays, partition: str | None) -> list[int]:
    """The experiments of a corpus on itself: its folds, its test sets, or only the test set ``partition``."""
    if partition is None or arrays.splits is None:
        return arrays.experiments()
    return [test_set_names(arrays.splits).index(partition) + 1]


@dataclass
class CrossCell:
    """One cell of the matrix: the runs of every variant trained on ``train`` and tested on ``test``."""

    train: str
    test: str
    evaluation: Evaluation
    results: dict  # heads.evaluation.evaluate.summarise
    out: Path


def run_cross(caches: list[Path], configs: list[TrainConfig], seeds: list[int], out: Path,
              device: torch.device = torch.device("cpu"), stats: StatsConfig = StatsConfig(), scale: str = "common",
              overwrite: bool = False, test_partition: str | None = None) -> list[CrossCell]:
    """Every ordered pair of ``caches`` (train on one, test on the other) and every corpus on itself (its folds or
    test sets), each with every config and seed; runs under ``out/<train>-on-<test>/<label>/``, each cell's tables
    beside them. ``scale``: ``common`` (-1..1) or ``test`` (the test corpus's own scale). ``test_partition``: a
    partitioned corpus is tested on that test set only (off the diagonal and on it); corpora of k folds on every
    row."""
    if scale not in ("common", "test"):
        raise InputError(f"--scale {scale}: choose common or test")
    if any(c.features.use_state for c in configs):
        raise InputError("cross-corpus heads use no dialogue state (its context is fitted per corpus): drop +state")
    names = [corpus_name(c) for c in caches]
    if len(set(names)) != len(names):
        raise InputError(f"two caches share a name ({', '.join(names)}): the matrix names corpora by file name")
    readers = dict(zip(names, (CacheReader(c) for c in caches)))
    check_compatible(readers, {s for c in configs if c.features.use_prosody for s in c.features.prosody_sets})
    layers = {c.features.layer for c in configs}
    layer = layers.pop() if len(layers) == 1 else None
    scales = {name: corpus_scale(reader) for name, reader in readers.items()}
    arrays = {name: on_common_scale(load_corpus_arrays(reader, layer), scales[name])
              for name, reader in readers.items()}
    if test_partition is not None and all(arrays[n].splits is None for n in names):
        raise InputError(f"--test-partition {test_partition}: none of the caches has partitions (train/dev/test "
                         "sets); every one is tested on all its rows, leave the option out")
    tested = {name: test_rows(arrays[name], name, test_partition) for name in names}
    pairs = [(a, b) for a in names for b in names]
    corpora = {}  # (train, test) -> the arrays its heads train and are tested on
    for train_name, test_name in pairs:
        shown = scales[test_name] if scale == "test" else None
        if train_name == test_name:  # the corpus's own cross-validation (its folds, or its test sets)
            corpora[train_name, test_name] = replace(arrays[train_name], states={}, report_scale=shown)
        else:  # one experiment: train on every usable row of one, test on the other's tested rows
            corpora[train_name, test_name] = replace(
                combined_arrays(arrays[train_name], arrays[test_name], train_name, test_name, tested[test_name]),
                report_scale=shown)
    experiments = {(a, b): own_experiments(corpus, test_partition) if a == b else corpus.experiments()
                   for (a, b), corpus in corpora.items()}
    runs = sum(map(len, experiments.values())) * len(configs) * len(seeds)
    with TrainingProgress(runs) as progress:
        cells = []
        for train_name, test_name in pairs:
            corpus, run_dirs = corpora[train_name, test_name], []
            cell_out = out / f"{train_name}-on-{test_name}"
            for config in configs:
                label = run_label(config)
                for k in experiments[train_name, test_name]:
                    run_dir = cell_out / label / corpus.experiment_folder(k)
                    train_fold(corpus, k, config, seeds, run_dir, device, label, overwrite, progress)
                    run_dirs.append(run_dir)
            evaluation = evaluate_runs(run_dirs)
            _, results = write_evaluation(evaluation, cell_out, stats=stats)
            cells.append(CrossCell(train_name, test_name, evaluation, results, cell_out))
    return cells


def matrix(cells: list[CrossCell]) -> list[dict]:
    """One row per run label, train corpus and test corpus: CCC-V, CCC-A (mean over folds; off the diagonal, the
    one test set) with their intervals, the number of test utterances, and the interval's method."""
    rows = []
    for cell in cells:
        for label, summary in cell.results["runs"].items():
            ci = summary.get("mean_ci", {})
            rows.append({"run": label, "train": cell.train, "test": cell.test,
                         "n_test": sum(f["n_test"] for f in summary["folds"].values()),
                         "ccc_v": summary["mean"]["ccc_v"], "ccc_a": summary["mean"]["ccc_a"],
                         "ccc_v_ci": ci.get("ccc_v"), "ccc_a_ci": ci.get("ccc_a"),
                         "interval": summary["interval"]["method"] if not summary["interval"]["withheld"] else None})
    return rows
