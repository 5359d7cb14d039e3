"""A head run on disk: weights as safetensors, config and metrics as JSON, predictions as CSV.

Layout of ``RUN/`` (one fold)::

    run.json                    TrainConfig, fold, seeds, cache path and provenance, metrics per seed
    head_seed<k>.safetensors    weights + normalisation statistics (``stats.*``) of seed k
    predictions.csv             utt_id, fold, seed, speaker, valence/arousal true and predicted,
                                attention weights (separate-attn) on the test rows

Never pickle: loading a run reads tensors and JSON only, and checks shapes and statistics against the
model built from the config and the cache.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from core.errors import InputError
from heads.models import BlockSizes, build_head
from heads.train import TrainConfig

RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.csv"


def save_head(path: Path, model: torch.nn.Module, stats: dict[str, np.ndarray]) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"stats.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in stats.items()})
    save_file(tensors, str(path))


def load_head(path: Path, variant: str, sizes: BlockSizes, dropout: float) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    """Rebuild the head from its config and load weights; a mismatch is a clear ``InputError``."""
    try:
        tensors = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise InputError(f"{path}: not a readable safetensors head checkpoint ({err})") from err
    model = build_head(variant, sizes, dropout)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if wrong or missing or extra:
        raise InputError(f"{path}: checkpoint does not fit a '{variant}' head on these features "
                         f"(shape mismatch: {wrong[:3]}, missing: {missing[:3]}, unexpected: {extra[:3]})")
    model.load_state_dict(state)
    model.eval()
    stats = {k[len("stats."):]: v.numpy() for k, v in tensors.items() if k.startswith("stats.")}
    return model, stats


def write_run_json(run_dir: Path, record: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))


def expand_runs(runs: list[Path]) -> list[Path]:
    """Run folders; a folder holding run folders (e.g. an ablate output) stands for all runs inside it."""
    expanded = []
    for run in runs:
        if (run / RUN_FILE).is_file():
            expanded.append(run)
        else:
            found = sorted(p.parent for p in run.glob(f"**/{RUN_FILE}"))
            if not found:
                raise InputError(f"{run}: no head runs found ({RUN_FILE})")
            expanded.extend(found)
    return expanded


def read_run(run_dir: str | Path) -> tuple[dict, pl.DataFrame]:
    """``(run.json as dict, predictions)`` of a run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).is_file():
        raise InputError(f"{run_dir}: not a head run (no {RUN_FILE}); create one with `cli.py train-heads`")
    record = json.loads((run_dir / RUN_FILE).read_text())
    predictions = pl.read_csv(run_dir / PREDICTIONS_FILE)
    return record, predictions


def config_record(config: TrainConfig) -> dict:
    return asdict(config)
