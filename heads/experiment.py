"""One fold of one head configuration, all seeds: train, predict the test rows, save the run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

from cache.reader import FoldSplit
from heads.features import CorpusArrays, FoldTensors, prepare_fold
from heads.metrics import regression_metrics
from heads.runs import PREDICTIONS_FILE, config_record, load_head, run_label, save_head, write_run_json
from heads.train import TrainConfig, TrainedHead, block_sizes, predict, train_head
from pipeline.problems import InputError
from pipeline.provenance import package_versions, utc_now


def predictions_frame(arrays: CorpusArrays, fold: FoldTensors, head: TrainedHead, seed: int) -> pl.DataFrame:
    """Test-row predictions on the corpus scale, with the attention weights when the head has them."""
    test = fold.test
    pred, attention = predict(head.model, test)
    pred = pred.numpy() * fold.target_std + fold.target_mean
    columns = {
        "utt_id": arrays.utt_ids[test.rows], "speaker": arrays.speakers[test.rows],
        "fold": arrays.folds[test.rows], "seed": np.full(len(test.rows), seed),
        "valence_true": test.raw_targets[:, 0], "arousal_true": test.raw_targets[:, 1],
        "valence_pred": pred[:, 0], "arousal_pred": pred[:, 1],
    }
    if attention is not None:
        columns.update({
            "attn_valence_prosody": attention["valence"][:, 0].numpy(),
            "attn_valence_other": attention["valence"][:, 1].numpy(),
            "attn_arousal_speech": attention["arousal"][:, 0].numpy(),
            "attn_arousal_other": attention["arousal"][:, 1].numpy(),
        })
    return pl.DataFrame(columns)


def dimension_metrics(predictions: pl.DataFrame) -> dict[str, float]:
    """``ccc_v, ccc_a, pearson_v, ..., rmse_a`` of one set of predictions."""
    out = {}
    for dim, short in (("valence", "v"), ("arousal", "a")):
        for name, value in regression_metrics(predictions[f"{dim}_pred"].to_numpy(),
                                              predictions[f"{dim}_true"].to_numpy()).items():
            out[f"{name}_{short}"] = value
    return out


def train_fold(
    arrays: CorpusArrays, split: FoldSplit, config: TrainConfig, seeds: list[int], out_dir: str | Path,
    cache_path: str = "",
) -> pl.DataFrame:
    """Train ``config`` on ``split`` once per seed; write the run to ``out_dir``; return the test predictions."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fold = prepare_fold(arrays, split, config.features)
    frames, per_seed = [], {}
    for seed in seeds:
        started = time.perf_counter()
        head = train_head(fold, config, seed)
        save_head(out_dir / f"head_seed{seed}.safetensors", head.model, fold.stats)
        frame = predictions_frame(arrays, fold, head, seed)
        frames.append(frame)
        layer_weights = head.model.inputs.layer_weights()
        per_seed[str(seed)] = {
            **dimension_metrics(frame), "best_epoch": head.best_epoch, "best_val_ccc": head.best_val_ccc,
            "epochs_trained": len(head.history), "train_seconds": time.perf_counter() - started,
            "layer_weights": layer_weights.tolist() if layer_weights is not None else None,
        }
    predictions = pl.concat(frames)
    predictions.write_csv(out_dir / PREDICTIONS_FILE)
    write_run_json(out_dir, {
        "label": run_label(config), "config": config_record(config), "effective_features": fold.effective.__dict__,
        "fold": split.fold, "seeds": seeds, "sizes": block_sizes(fold, config).__dict__,
        "split_sizes": {"train": len(split.train), "validation": len(split.validation), "test": len(split.test)},
        "validation_speakers": sorted(set(arrays.speakers[split.validation].tolist())),
        "cache": str(cache_path), "cache_provenance": arrays.provenance, "packages": package_versions(),
        "created_utc": utc_now(), "metrics_per_seed": per_seed,
    })
    return predictions


def predict_saved_run(arrays: CorpusArrays, split: FoldSplit, config: TrainConfig, run_dir: str | Path, seed: int) -> pl.DataFrame:
    """Reload a saved head (safetensors + JSON) and predict its fold's test rows again."""
    fold = prepare_fold(arrays, split, config.features)
    sizes = block_sizes(fold, config)
    model, stats = load_head(Path(run_dir) / f"head_seed{seed}.safetensors", config.variant, sizes, config.dropout)
    for key, value in fold.stats.items():
        if key not in stats or stats[key].shape != value.shape or not np.allclose(stats[key], value):
            raise InputError(f"{run_dir}: head was trained on other features than this cache gives ({key} differs)")
    return predictions_frame(arrays, fold, TrainedHead(model, sizes, -1, float("nan"), []), seed)


