"""Valence and arousal of new recordings with an exported model: the same speech and prosody stages as
``extract`` (batched, into a temporary cache unless one is given), the dialogue context, then the heads."""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import numpy as np
import polars as pl

from cache import CacheReader
from cache.schema import Failure
from core.errors import InputError
from heads.model_folder import ExportedModel, head_outputs
from pipeline.corpora.prediction import prediction_manifest
from pipeline.extract import ExtractConfig, extract
from pipeline.features.context import context_states
from pipeline.features.layers import select_layer
from pipeline.stages.prosody import ProsodyConfig
from pipeline.stages.speech import SpeechConfig
from pipeline.stages.state import build_sequences, first_pass_predictions, state_config_from_dict, turn_summaries


def _config(cls: type, stored: dict, **changes: object) -> object:
    names = {f.name for f in fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in names}
    return cls(**{**values, **changes})


def predict_audio(model: ExportedModel, audio: list[str] | None, manifest: str | None, speech_model: str | None,
                  device: str = "auto", on_error: str = "skip", cache: str | None = None, clip: bool = False,
                  runtime: str = "torch") -> tuple[pl.DataFrame, list[Failure]]:
    """Predictions ``utt_id, path, valence, arousal`` (+ attention weights) for every file that could be read,
    and the failures of the others. ``speech_model`` defaults to the one the model was trained with; weights
    with another checksum are refused (``InputError``). ``clip``: limit valence and arousal to the range of the
    training labels (the heads are regressions and can leave the scale). ``runtime``: torch, or onnx / onnx-int8
    (ONNX Runtime on the CPU, for a folder exported with ``--onnx``: ``ExportedModel.with_runtime``)."""
    if clip and not model.record.get("target_range"):
        raise InputError(f"{model.folder}: this model was exported without its label range; re-train and export it "
                         "to use --clip")
    if runtime != "torch":  # the folder's own ONNX speech model and heads
        model = model.with_runtime(runtime)
        speech_model, device = model.onnx_speech(speech_model, device), "cpu"
    rows, problems = prediction_manifest(audio, manifest)
    speech_id = speech_model or model.record["speech_model"].get("model_id")
    few = rows.height <= 32  # a handful of files is done before worker processes would have started
    stored_speech = model.record["speech_config"]
    config = ExtractConfig(
        speech=_config(SpeechConfig, stored_speech, model=str(speech_id), batch_seconds=0.0, frame_layers=(),
                       num_workers=0 if few else stored_speech.get("num_workers", 1)),
        prosody=_config(ProsodyConfig, model.record["prosody_config"], workers=1 if few else 0),
    )
    with tempfile.TemporaryDirectory(prefix="predict-") as tmp, _quiet("pipeline", "cache"):
        path = Path(cache) if cache else Path(tmp) / "predict.h5"
        extract(path, rows, ["speech", "prosody"], config, device=device, on_error=on_error)
        reader = CacheReader(path)
        checksum = reader.provenance("speech")["model"].get("weights_sha256")
        if checksum != model.speech_checksum:
            raise InputError(f"{speech_id}: speech model weights differ from the ones this model was trained on "
                             f"(sha256 {checksum} != {model.speech_checksum}); use --speech-model with those weights")
        frame = predict_cached(model, reader)
        if clip:
            frame = frame.with_columns(pl.col(d).clip(*model.record["target_range"][d]) for d in ("valence", "arousal"))
        missing = [Failure("", "manifest", f"{p.file}:{p.line}" if p.line else p.file, p.reason) for p in problems]
        return frame, once_per_file(missing + reader.failures)


def once_per_file(failures: list[Failure]) -> list[Failure]:
    """One failure per audio file (a bad file fails the speech and the prosody stage alike): the first."""
    seen: dict[str, Failure] = {}
    for failure in failures:
        seen.setdefault(failure.path, failure)
    return list(seen.values())


@contextmanager
def _quiet(*loggers: str):  # noqa: ANN202
    """Extraction's progress messages (stages written into a temporary cache) are not news to a predict user."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def predict_cached(model: ExportedModel, reader: CacheReader) -> pl.DataFrame:
    """Predictions for the rows of a cache holding the speech and prosody stages of new audio."""
    m = reader.manifest
    ok = reader.ok(["speech", "prosody"])
    features = model.record["features"]
    pooled = reader.read("speech", "pooled")
    prosody = reader.read("prosody", "values")
    layer = features["layer"]
    speech = pooled.astype(np.float32) if layer == "weighted" else select_layer(pooled, layer)
    state = None
    if model.record["state"]:
        config = state_config_from_dict(model.record["state"]["config"])
        u = turn_summaries(select_layer(pooled, config.speech_layer), prosody, model.context)
        sequences = build_sequences(m, ok, config.grouping)
        if config.kind == "ema-predictions":  # the previous turns' predicted valence/arousal, not their features
            u = first_pass_predictions(u, model.context)
        state = context_states(u, sequences, m["speaker"].to_numpy(), config.context_decay,
                               speaker_aware=config.kind in ("ema-features-speaker", "ema-predictions"))
    rows = np.flatnonzero(ok)
    values, attention = head_outputs(model, speech[rows] if features["use_speech"] else None,
                                     prosody[rows] if features["use_prosody"] else None,
                                     state[rows] if state is not None else None)
    columns = {"utt_id": m["utt_id"].to_numpy()[rows], "path": m["path"].to_numpy()[rows],
               "valence": values[:, 0], "arousal": values[:, 1], **attention}
    return pl.DataFrame(columns)
