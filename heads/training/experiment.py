"""One fold of one head configuration, all seeds: train, predict the test rows, save the run."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from core.errors import InputError
from core.labels import from_common
from core.metrics import dimension_metrics
from core.protocol import ALL_FOLDS, VALIDATION_RULES, FoldSplit
from core.provenance import package_versions, utc_now
from heads.training.features import (
    CorpusArrays,
    FeatureConfig,
    FoldTensors,
    effective_features,
    prepare_fold,
    protocol_warnings,
    split_rows,
    without_state,
)
from heads.training.progress import TrainingProgress
from heads.training.runs import (
    HISTORY_FILE,
    HISTORY_SCHEMA,
    PREDICTIONS_FILE,
    config_record,
    new_run_dir,
    read_run_json,
    save_head,
    write_run_json,
)
from heads.training.streaming import StreamedSpeech
from heads.training.train import TrainConfig, attention_columns, block_sizes, predict, train_head
from heads.training.variants import run_label


def predictions_frame(arrays: CorpusArrays, fold: FoldTensors, model: torch.nn.Module, seed: int) -> pl.DataFrame:
    """Test-row predictions on the corpus scale, with the attention weights when the head has them."""
    test = fold.test
    pred, attention = predict(model, test)
    pred = pred.numpy() * fold.target_std + fold.target_mean
    truth = test.raw_targets
    if arrays.report_scale is not None:  # targets are on the common scale: report the asked one (core.labels)
        pred, truth = (from_common(x, *arrays.report_scale) for x in (pred, truth))
    columns = {
        "utt_id": arrays.utt_ids[test.rows].astype(str), "speaker": arrays.speakers[test.rows].astype(str),
        "fold": arrays.folds[test.rows], "seed": np.full(len(test.rows), seed),
        "valence_true": truth[:, 0], "arousal_true": truth[:, 1],
        "valence_pred": pred[:, 0], "arousal_pred": pred[:, 1],
    }
    if arrays.emotions is not None:
        columns["emotion"] = pl.Series(arrays.emotions[test.rows].tolist(), dtype=pl.String)  # may hold nulls
    for name, values in arrays.groups.items():  # per-group results (heads.evaluation.evaluate)
        columns[f"group_{name}"] = values[test.rows].astype(str)
    if attention is not None:
        columns.update(attention_columns(attention))
    return pl.DataFrame(columns)


def train_fold(arrays: CorpusArrays, test_fold: int, config: TrainConfig, seeds: list[int], out_dir: str | Path,
               device: torch.device = torch.device("cpu"), label: str | None = None, overwrite: bool = False,
               progress: TrainingProgress | None = None) -> pl.DataFrame:
    """Train ``config`` with ``test_fold`` held out, once per seed; write the run to ``out_dir``; return the
    test predictions. The split is the protocol's (``heads.training.features.split_rows``) with ``config.val_fraction``;
    ``label`` names the run in tables (default: ``run_label`` of the features actually used). The run folder
    appears whole when everything is written (``heads.training.runs.new_run_dir``); an existing one is replaced only
    with ``overwrite``. ``progress`` shows the epochs (default: one log line per seed)."""
    split = split_rows(arrays, test_fold, config.val_fraction)
    if test_fold != ALL_FOLDS and not len(split.test):
        raise InputError(f"{arrays.source}: {arrays.experiment_name(test_fold)} has no usable labelled rows to test "
                         "on (its rows failed a stage or lack labels); see `cli.py cache info`")
    fold = prepare_fold(arrays, split, config.features)
    label = label or run_label(replace(config, features=fold.effective))
    gated = gate_applies(fold.effective, config)
    progress = progress or TrainingProgress(len(seeds) * (2 if gated else 1), live=False)
    with new_run_dir(out_dir, overwrite) as tmp:
        predictions = _train_seeds(arrays, split, fold, config, seeds, tmp, device, label, progress,
                                   note="with state, for the state gate" if gated else "")
        if gated:
            predictions = _gate_state(arrays, split, fold, config, seeds, tmp, device, label, predictions, progress)
    return predictions


def gate_applies(effective: FeatureConfig, config: TrainConfig) -> bool:
    """Whether the state gate trains a second set of heads without the state (it needs a state and another block)."""
    return config.state_gate and effective.use_state and (effective.use_speech or effective.use_prosody)


def runs_per_seed(arrays: CorpusArrays, config: TrainConfig, fold: int) -> int:
    """Training runs per seed of ``config`` on experiment ``fold`` (2 with the state gate), for progress counts."""
    return 2 if gate_applies(effective_features(arrays, config.features, fold), config) else 1


def _gate_state(arrays: CorpusArrays, split: FoldSplit, fold: FoldTensors, config: TrainConfig, seeds: list[int],
                run_dir: Path, device: torch.device, label: str, with_state: pl.DataFrame,
                progress: TrainingProgress) -> pl.DataFrame:
    """Train the same heads without the state on the same split; keep whichever has the better mean
    validation CCC (held-out dialogue groups of the training folds, ``core.protocol``; never the test fold). A state that carries nothing for a corpus
    cost the heads 0.06-0.16 CCC-V in bench_context.py; the gate keeps that cost near 0 and the gain where
    the context is real. The decision is recorded in run.json (``state_gate``)."""
    without_config = replace(config, features=replace(config.features, use_state=False))
    without_fold = without_state(fold)
    alternative = run_dir / ".without-state"  # inside the run's temporary folder: cleaned up with it
    alternative.mkdir()
    try:
        without = _train_seeds(arrays, split, without_fold, without_config, seeds, alternative, device, label,
                               progress, note="without state, for the state gate")
        scores = {name: float(np.mean([m["best_val_ccc"] for m in read_run_json(folder)["metrics_per_seed"].values()]))
                  for name, folder in (("with_state", run_dir), ("without_state", alternative))}
        keep_state = scores["with_state"] > scores["without_state"]
        progress.say(f"state gate, {label} {arrays.experiment_name(split.fold)}: keeps the heads "
                     f"{'with' if keep_state else 'without'} the state (mean validation CCC {scores['with_state']:.3f} "
                     f"with, {scores['without_state']:.3f} without); the test scores above are of the "
                     f"{'first' if keep_state else 'second'} set")
        if not keep_state:
            for path in run_dir.iterdir():
                if path != alternative:
                    path.unlink()
            for path in alternative.iterdir():
                shutil.move(str(path), run_dir / path.name)
        record = read_run_json(run_dir)
        record["config"] = config_record(config)  # what was asked for; effective_features: what was used
        record["state_gate"] = {**scores, "chosen": "with_state" if keep_state else "without_state"}
        write_run_json(run_dir, record)
    finally:
        shutil.rmtree(alternative, ignore_errors=True)
    return with_state if keep_state else without


def _train_seeds(arrays: CorpusArrays, split: FoldSplit, fold: FoldTensors, config: TrainConfig, seeds: list[int],
                 out_dir: Path, device: torch.device, label: str, progress: TrainingProgress,
                 note: str = "") -> pl.DataFrame:
    frames, per_seed, histories = [], {}, []
    for seed in seeds:
        started = time.perf_counter()
        head = train_head(fold, config, seed, device,
                          progress.start(label, arrays.experiment_name(split.fold), seed, note))
        seconds = time.perf_counter() - started
        progress.finish(len(head.history), head.best_epoch, head.best_val_ccc, config.epochs, seconds)
        save_head(out_dir / f"head_seed{seed}.safetensors", head.model, fold.stats)
        frame = predictions_frame(arrays, fold, head.model, seed)
        frames.append(frame)
        histories += [{"seed": seed, **entry} for entry in head.history]
        layer_weights = head.model.inputs.layer_weights() if hasattr(head.model, "inputs") else None
        per_seed[str(seed)] = {
            **(dimension_metrics(frame) if frame.height else {}), "best_epoch": head.best_epoch, "best_val_ccc": head.best_val_ccc,
            "epochs_trained": len(head.history), "train_seconds": seconds,
            "layer_weights": layer_weights.tolist() if layer_weights is not None else None, **head.details,
        }
    predictions = pl.concat(frames)
    predictions.write_csv(out_dir / PREDICTIONS_FILE)
    pl.DataFrame(histories, schema=HISTORY_SCHEMA).write_csv(out_dir / HISTORY_FILE)
    write_run_json(out_dir, {
        "label": label, "config": config_record(config), "effective_features": fold.effective.__dict__,
        "fold": split.fold, "test_set": arrays.experiment_name(split.fold),
        "protocol": "partitions" if arrays.splits is not None else "folds", "seeds": seeds, "sizes": block_sizes(fold, config).__dict__,
        "split_sizes": {"train": len(split.train), "validation": len(split.validation), "test": len(split.test)},
        "validation_speakers": sorted(set(arrays.speakers[split.validation].tolist())),
        "target_range": {d: [float(arrays.targets[split.train, i].min()), float(arrays.targets[split.train, i].max())]
                         for i, d in enumerate(("valence", "arousal"))},
        "validation": {"rule": split.validation_rule, "meaning": VALIDATION_RULES[split.validation_rule],
                       "dialogues": len(set(arrays.dialogs[split.validation].tolist()))},
        "warnings": protocol_warnings(arrays, split, config.features.use_state),
        "cache": arrays.source, "cache_provenance": arrays.provenance, "packages": package_versions(),
        "created_utc": utc_now(), "metrics_per_seed": per_seed,
        "speech_streamed": isinstance(fold.train.speech, StreamedSpeech),
    })
    return predictions


@dataclass(frozen=True)
class TrainedExperiment:
    """One experiment ``train_experiments`` trained: its name (``fold 3``, ``Test1``, ``all``), run folder, label,
    test metrics (None for a final model, which has no test rows) and run record."""

    name: str
    run_dir: Path
    label: str
    metrics: dict | None
    record: dict


def train_experiments(cache: str | Path, config: TrainConfig, seeds: list[int], out: Path, fold: str | None = None,
                      folds: str | None = None, split: str | None = None, device: torch.device = torch.device("cpu"),
                      label: str | None = None, overwrite: bool = False, group_by: tuple[str, ...] = (),
                      on_trained: Callable[[TrainedExperiment], None] | None = None) -> list[TrainedExperiment]:
    """``train-heads``: the experiments named by exactly one of ``fold`` (one fold, or ``all`` for a final model
    trained on every labelled row: ``out`` is the run folder), ``folds`` (``1-5``: ``out`` holds a run folder per
    fold) or ``split`` (predefined partitions: ``Test1``, ``Test1,Test2`` or ``all``), each trained with every seed.
    ``on_trained`` is called with each experiment as soon as it is written (the command prints its scores)."""
    from cache.reader import CacheReader
    from heads.training.features import add_final_states, corpus_experiments, load_corpus_arrays
    from heads.training.runs import read_run
    from heads.training.variants import parse_experiments

    if sum(x is not None for x in (fold, folds, split)) != 1:
        raise InputError("give one of --fold K (one run folder), --folds 1-5 (a folder of run folders) or, with "
                         "predefined partitions, --split Test1")
    reader = CacheReader(cache)
    arrays = load_corpus_arrays(reader, config.features.layer, group_by=group_by)
    if fold == "all":
        if config.features.use_state:
            add_final_states(arrays, reader)
        train_fold(arrays, ALL_FOLDS, config, seeds, out, device, label, overwrite)
        record, _ = read_run(out)
        trained = [TrainedExperiment("all", out, record["label"], None, record)]
        if on_trained is not None:
            on_trained(trained[0])
        return trained
    if fold is not None:
        try:
            fold = str(int(fold))
        except ValueError:
            raise InputError(f"--fold '{fold}': expected a fold number or 'all'") from None
    _, test_sets = corpus_experiments(reader.manifest)
    numbers = parse_experiments(fold if fold is not None else folds, split, arrays.experiments(), test_sets,
                                "--fold" if fold is not None else "--folds")
    one_folder = fold is not None or (split is not None and "," not in split and split != "all")
    trained = []
    with TrainingProgress(sum(runs_per_seed(arrays, config, k) for k in numbers) * len(seeds)) as progress:
        for k in numbers:
            run_dir = out if one_folder else out / arrays.experiment_folder(k)
            predictions = train_fold(arrays, k, config, seeds, run_dir, device, label, overwrite, progress)
            record, _ = read_run(run_dir)
            trained.append(TrainedExperiment(arrays.experiment_name(k), run_dir, record["label"],
                                             dimension_metrics(predictions), record))
            if on_trained is not None:
                on_trained(trained[-1])
    return trained
