"""A head run on disk: weights as safetensors, config and metrics as JSON, predictions as CSV.

A run folder is whole or absent: it is written under a temporary name beside its final one and renamed
into place when complete (``new_run_dir``); an existing run is replaced only when asked to, and then whole.
``read_run`` refuses a folder whose predictions do not match its record (a truncated or edited file).

Layout of ``RUN/`` (one fold)::

    run.json                    TrainConfig, fold, seeds, cache path and provenance, metrics per seed
    head_seed<k>.safetensors    weights + normalisation statistics (``stats.*``) of seed k
    predictions.csv             utt_id, fold, seed, speaker, valence/arousal true and predicted,
                                attention weights (separate-attn), emotion (if known) on the test rows
    history.csv                 seed, epoch, train_loss, val_ccc (mean), val_ccc_v, val_ccc_a

Never pickle: loading a run reads tensors and JSON only, and checks shapes and statistics against the
model built from the config and the cache.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from cache.paths import temp_for
from core.errors import InputError
from core.processes import process_alive
from heads.training.models import BlockSizes, build_head
from heads.training.train import TrainConfig

RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.csv"
HISTORY_FILE = "history.csv"  # learning curves: one row per seed and epoch
HISTORY_SCHEMA = {"seed": pl.Int64, "epoch": pl.Int64, "train_loss": pl.Float64, "val_ccc": pl.Float64,
                  "val_ccc_v": pl.Float64, "val_ccc_a": pl.Float64}


def save_head(path: Path, model: torch.nn.Module, stats: dict[str, np.ndarray]) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"stats.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in stats.items()})
    try:
        save_file(tensors, str(path))
    except Exception as err:  # noqa: BLE001 - safetensors reports a full disk as its own error type, not an OSError
        raise OSError(None, f"could not write the head's weights ({err})", str(path)) from err


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


def read_run_json(run_dir: Path) -> dict:
    """``run.json`` of a run folder being written (no checks; ``read_run`` checks finished runs)."""
    return json.loads((Path(run_dir) / RUN_FILE).read_text())


def _hidden(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in a hidden folder below ``root``: the temporary folders of runs being written (or of
    writers that were killed), and the state gate's second run, are never results."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def expand_runs(runs: list[Path]) -> list[Path]:
    """Run folders; a folder holding run folders (e.g. an ablate output) stands for all finished runs inside it."""
    expanded = []
    for run in runs:
        if run.resolve().name.startswith("."):
            raise InputError(f"{run}: a temporary folder of a run being written, or of one whose writer was killed; "
                             "it is not a result (train the run again, or give its finished folder)")
        if (run / RUN_FILE).is_file():
            expanded.append(run)
        else:
            found = sorted(p.parent for p in run.glob(f"**/{RUN_FILE}") if not _hidden(p.parent, run))
            if not found:
                raise InputError(f"{run}: no head runs found ({RUN_FILE})")
            expanded.extend(found)
    return expanded


PREDICTION_COLUMNS = ("utt_id", "speaker", "fold", "seed", "valence_true", "arousal_true", "valence_pred",
                      "arousal_pred")


def read_run(run_dir: str | Path) -> tuple[dict, pl.DataFrame]:
    """``(run.json as dict, predictions)`` of a run folder, checked: every seed of the record has one
    prediction per test utterance of the fold."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).is_file():
        raise InputError(f"{run_dir}: not a head run (no {RUN_FILE}); create one with `cli.py train-heads`")
    try:
        record = json.loads((run_dir / RUN_FILE).read_text())
        predictions = pl.read_csv(run_dir / PREDICTIONS_FILE)
    except (OSError, ValueError, pl.exceptions.PolarsError) as err:
        raise InputError(f"{run_dir}: damaged or incomplete run ({err})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise InputError(f"{run_dir}: {PREDICTIONS_FILE} lacks column(s) {', '.join(missing)}")
    expected = record.get("split_sizes", {}).get("test")
    counts = {int(s): n for s, n in predictions.group_by("seed").len().iter_rows()}
    seeds_ok = sorted(counts) == sorted(record.get("seeds", [])) or (expected == 0 and not counts)  # a final model
    if not seeds_ok or any(n != expected for n in counts.values()):
        raise InputError(f"{run_dir}: {PREDICTIONS_FILE} does not match {RUN_FILE} (expected {expected} rows for "
                         f"each of seeds {record.get('seeds')}, found {counts}): an interrupted or edited run; "
                         "train it again")
    return record, predictions


@contextmanager
def new_run_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to write a run into; it becomes ``out_dir`` when the block ends without an
    error. An existing run is refused unless ``overwrite`` (then replaced whole: no file of it survives)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: a file, not a folder; choose another --out for the run")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / RUN_FILE).is_file():
            raise InputError(f"{out_dir}: exists and is not a head run; choose another --out")
        if not overwrite:
            raise InputError(f"{out_dir}: a run is already there; pass --overwrite to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.parent.glob(f".{out_dir.name}.*-*"):  # of writers killed before their rename
        if leftover.name.rsplit("-", 1)[-1].isdigit() and not process_alive(int(leftover.name.rsplit("-", 1)[-1])):
            shutil.rmtree(leftover, ignore_errors=True)
    tmp = temp_for(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    mode = 0o666 & ~_umask()
    for path in tmp.iterdir():
        path.chmod(mode)  # safetensors writes 0600; a run is as readable as every other file
    tmp.chmod(0o777 & ~_umask())
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out_dir)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def config_record(config: TrainConfig) -> dict:
    return asdict(config)
