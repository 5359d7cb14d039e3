"""Valence and arousal of new recordings with an exported model: the same speech and prosody stages as
``extract`` (batched, into a temporary cache unless one is given), the dialogue context, then the heads."""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import polars as pl

from cache import CacheReader
from cache.schema import Failure
from core.errors import InputError
from heads.deployment.model_folder import ExportedModel, head_outputs
from pipeline.corpora.manifest import normalise_manifest
from pipeline.corpora.prediction import prediction_manifest
from pipeline.corpora.segments import SegmentConfig, plan_file_segments, write_segments
from pipeline.extract import ExtractConfig, extract
from pipeline.features.audio import AudioError
from pipeline.features.context import build_sequences
from pipeline.features.layers import select_layer
from pipeline.models.state_kinds import state_kind
from pipeline.models.state_model import state_config_from_dict
from pipeline.stages.registry import stage_spec
from pipeline.stages.speech import SpeechConfig

log = logging.getLogger(__name__)


def _config(cls: type, stored: dict, **changes: object) -> object:
    names = {f.name for f in fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in names}
    return cls(**{**values, **changes})


class Model(ExportedModel):
    """A loaded model folder that predicts new audio: ``load_model(folder).predict(files)``."""

    def predict(self, audio: list[str] | None = None, manifest: str | None = None, speech_model: str | None = None,
                device: str = "auto", on_error: str = "skip", cache: str | None = None, clip: bool = False,
                runtime: str = "torch", segments: SegmentConfig | None = None, batch_seconds: float = 0.0
                ) -> pl.DataFrame:
        """Valence and arousal of new audio (``predict_audio``; files that fail are logged as warnings)."""
        frame, skipped = predict_audio(self, audio, manifest, speech_model, device, on_error, cache, clip,
                                       segments=segments, batch_seconds=batch_seconds, runtime=runtime)
        for failure in skipped:
            log.warning("skipped %s: %s", failure.path, failure.reason)
        return frame


def load_model(folder: str | Path) -> Model:
    """Load a folder written by ``cli.py export`` (checksums verified first), ready to predict."""
    return Model(folder)


def predict_audio(model: ExportedModel, audio: list[str] | None, manifest: str | None, speech_model: str | None,
                  device: str = "auto", on_error: str = "skip", cache: str | None = None, clip: bool = False,
                  segments: SegmentConfig | None = None, batch_seconds: float = 0.0, runtime: str = "torch"
                  ) -> tuple[pl.DataFrame, list[Failure]]:
    """Predictions ``utt_id, path, valence, arousal`` (+ attention weights) for every file that could be read,
    and the failures of the others. ``speech_model`` defaults to the one the model was trained with; weights
    with another checksum are refused (``InputError``). ``clip``: limit valence and arousal to the range of the
    training labels (the heads are regressions and can leave the scale). ``segments``: predict each file as a time
    series of segments (``predict_segments``), one row per segment with ``start_s``/``end_s``. ``batch_seconds``:
    padded audio per speech batch (0: automatic); any batching gives the same numbers as one file at a time.
    ``runtime``: torch, or onnx / onnx-int8 (ONNX Runtime on the CPU, for a folder exported with ``--onnx``:
    ``ExportedModel.with_runtime``)."""
    if clip and not model.record.get("target_range"):
        raise InputError(f"{model.folder}: this model was exported without its label range; re-train and export it "
                         "to use --clip")
    if runtime != "torch":  # the folder's own ONNX speech model and heads
        model = model if model.runtime == runtime else model.with_runtime(runtime)
        speech_model, device = model.onnx_speech(speech_model, device), "cpu"
    rows, problems = prediction_manifest(audio, manifest)
    speech_id = speech_model or model.record["speech_model"].get("model_id")
    missing = [Failure("", "manifest", f"{p.file}:{p.line}" if p.line else p.file, p.reason) for p in problems]
    if segments is not None:
        if cache:
            raise InputError("--cache keeps whole files' features; with --segment the segments are temporary "
                             "files: leave --cache out")
        frame, failures = predict_segments(model, rows, segments, str(speech_id), device, on_error,
                                           batch_seconds=batch_seconds)
    else:
        with tempfile.TemporaryDirectory(prefix="predict-") as tmp, quiet("pipeline", "cache"):
            path = Path(cache) if cache else Path(tmp) / "predict.h5"
            extract(path, rows, prediction_stages(model),
                    extract_config(model, str(speech_id), rows.height, batch_seconds), device=device, on_error=on_error)
            reader = CacheReader(path)
            check_speech_weights(model, reader, str(speech_id))
            check_feature_versions(model, reader)
            frame, failures = predict_cached(model, reader), reader.failures
    if clip and frame.height:
        frame = frame.with_columns(pl.col(d).clip(*model.record["target_range"][d]) for d in ("valence", "arousal"))
    return frame, once_per_file(missing + failures)


def feature_table_records(model: ExportedModel) -> dict[str, dict]:
    """Stage -> ``{"feature_set", "feature_set_version", "config"}`` of every feature table the model reads: its
    prosody block's sets, and Praat's for a dialogue state (the state's turn summaries read it). Folders exported
    before feature sets were chosen hold Praat's only."""
    record = model.record
    tables = dict(record.get("feature_tables") or {})
    if "prosody" not in tables and (record["state"] or "feature_tables" not in record):
        tables["prosody"] = {"feature_set": "praat", "feature_set_version": record.get("prosody_feature_set"),
                             "config": record.get("prosody_config", {})}
    return tables


def prediction_stages(model: ExportedModel) -> list[str]:
    """The stages new audio goes through for ``model``: speech and the feature tables it reads."""
    return ["speech", *feature_table_records(model)]


def extract_config(model: ExportedModel, speech_id: str, num_files: int, batch_seconds: float = 0.0) -> ExtractConfig:
    """The speech and feature-table settings the model was trained with, for ``num_files`` new files."""
    few = num_files <= 32  # a handful of files is done before worker processes would have started
    stored_speech = model.record["speech_config"]
    tables = {stage: _config(stage_spec(stage).config_type, table["config"], workers=1 if few else 0)
              for stage, table in feature_table_records(model).items()}
    return ExtractConfig(
        speech=_config(SpeechConfig, stored_speech, model=speech_id, batch_seconds=batch_seconds, frame_layers=(),
                       num_workers=0 if few else stored_speech.get("num_workers", 1)), **tables)


def check_speech_weights(model: ExportedModel, reader: CacheReader, speech_id: str) -> None:
    """Refuse features made with other speech weights than the model was trained on."""
    checksum = reader.provenance("speech")["model"].get("weights_sha256")
    if checksum != model.speech_checksum:
        raise InputError(f"{speech_id}: speech model weights differ from the ones this model was trained on "
                         f"(sha256 {checksum} != {model.speech_checksum}); use --speech-model with those weights")


def check_feature_versions(model: ExportedModel, reader: CacheReader) -> None:
    """Refuse feature tables computed by another version of their feature set than the model was trained on (e.g.
    ``praat-v1`` -> ``praat-v2``, or another openSMILE release): the heads would read other numbers."""
    for stage, table in feature_table_records(model).items():
        trained, now = table.get("feature_set_version"), reader.provenance(stage).get("feature_set_version")
        if trained is not None and trained != now:
            raise InputError(f"{model.folder}: trained on {stage} features of version {trained}, but this version of "
                             f"the tool computes {now}; re-train and export the model here, or predict with the "
                             "version it was made with")


def once_per_file(failures: list[Failure]) -> list[Failure]:
    """One failure per audio file (a bad file fails the speech and the prosody stage alike): the first."""
    seen: dict[str, Failure] = {}
    for failure in failures:
        seen.setdefault(failure.path, failure)
    return list(seen.values())


@contextmanager
def quiet(*loggers: str):  # noqa: ANN202
    """Extraction's progress messages (stages written into a temporary cache) are not news to a predict user."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@dataclass
class PredictionInputs:
    """What the heads and the dialogue context need of new audio, row-aligned with ``manifest``:
    ``speech`` ``[n, D]`` float32 (the model's layer) or ``[n, L+1, D]`` float16 (``weighted``, as cached),
    ``state_speech`` ``[n, D]`` float32 (the state's layer, None without a state), ``prosody`` ``[n, P]`` (the
    model's feature sets side by side), ``state_prosody`` ``[n, F]`` (Praat's, for the state; None without one);
    ``ok`` ``[n]`` bool."""

    manifest: pl.DataFrame
    ok: np.ndarray
    speech: np.ndarray
    prosody: np.ndarray
    state_speech: np.ndarray | None
    state_prosody: np.ndarray | None


def read_prediction_inputs(model: ExportedModel, reader: CacheReader) -> PredictionInputs:
    """The rows of a cache holding the speech stage and feature tables of new audio, reduced to what ``model``
    reads."""
    pooled = reader.read("speech", "pooled")
    features = model.record["features"]
    layer = features["layer"]
    state_layer = state_config_from_dict(model.record["state"]["config"]).speech_layer if model.record["state"] else None
    tables = {table.get("feature_set", "praat"): stage for stage, table in feature_table_records(model).items()}
    sets = features.get("prosody_sets", ["praat"]) if features["use_prosody"] else []
    prosody = np.concatenate([reader.read(tables[name], "values") for name in sets], axis=1) if sets else \
        np.zeros((len(reader), 0), np.float32)
    return PredictionInputs(reader.manifest, reader.ok(prediction_stages(model)),
                            pooled if layer == "weighted" else select_layer(pooled, layer), prosody,
                            None if state_layer is None else select_layer(pooled, state_layer),
                            None if state_layer is None else reader.read("prosody", "values"))


def concat_inputs(parts: list[PredictionInputs], manifest: pl.DataFrame) -> PredictionInputs:
    """Parts read from several caches as one, for ``manifest`` (their manifests' rows, in this order)."""
    states = [p.state_speech for p in parts]
    return PredictionInputs(manifest, np.concatenate([p.ok for p in parts]),
                            np.concatenate([p.speech for p in parts]), np.concatenate([p.prosody for p in parts]),
                            None if states[0] is None else np.concatenate(states),
                            None if states[0] is None else np.concatenate([p.state_prosody for p in parts]))


def predict_inputs(model: ExportedModel, inputs: PredictionInputs) -> pl.DataFrame:
    """Predictions for the usable rows: the dialogue context (in ``dialog_id``, ``start_s`` order), then the heads."""
    m, ok, features = inputs.manifest, inputs.ok, model.record["features"]
    state = None
    if model.record["state"]:
        config = state_config_from_dict(model.record["state"]["config"])
        state = state_kind(config).replay(model.context, config, inputs.state_speech, inputs.state_prosody,
                                          build_sequences(m, ok, config.grouping), m["speaker"].to_numpy())
    rows = np.flatnonzero(ok)
    speakers = m["speaker"].to_numpy()[rows]
    if features.get("per_speaker_norm"):
        check_speaker_rows(speakers)
    values, attention = head_outputs(model, inputs.speech[rows].astype(np.float32) if features["use_speech"] else None,
                                     inputs.prosody[rows] if features["use_prosody"] else None,
                                     state[rows] if state is not None else None, speakers)
    columns = {"utt_id": m["utt_id"].to_numpy()[rows], "path": m["path"].to_numpy()[rows],
               "valence": values[:, 0], "arousal": values[:, 1], **attention}
    return pl.DataFrame(columns)


MIN_SPEAKER_ROWS = 10  # a speaker's mean and sd from fewer files (or segments) would be mostly noise


def check_speaker_rows(speakers: np.ndarray) -> None:
    """A speaker-normalised model z-scores each speaker with their own files: refuse unnamed speakers and speakers
    with fewer than ``MIN_SPEAKER_ROWS`` usable files or segments, naming them."""
    if "unknown" in set(speakers):
        raise InputError("this model normalises each speaker with their own statistics (trained with --speaker-norm): "
                         "give --manifest with a speaker column for every file")
    names, counts = np.unique(speakers, return_counts=True)
    few = [f"{name} ({count})" for name, count in zip(names, counts) if count < MIN_SPEAKER_ROWS]
    if few:
        raise InputError(f"this model normalises each speaker with their own statistics (--speaker-norm), which needs "
                         f"at least {MIN_SPEAKER_ROWS} usable files or segments per speaker; too few for: "
                         f"{', '.join(few[:10])}")


def predict_cached(model: ExportedModel, reader: CacheReader) -> pl.DataFrame:
    """Predictions for the rows of a cache holding the speech and prosody stages of new audio."""
    return predict_inputs(model, read_prediction_inputs(model, reader))


def segment_id(utt_id: str, k: int) -> str:
    """The row id of segment ``k`` of file ``utt_id`` (``_segment_failure`` reads it back from the right)."""
    return f"{utt_id}@{k}"


def segment_rows(file: dict, bounds: np.ndarray, first: int, folder: Path) -> list[dict]:
    """Prediction-manifest rows of segments ``first..`` of one file (``bounds`` ``[k, 2]`` seconds), their audio at
    ``folder/<k>.wav``: one dialogue per file (the context runs over its segments in time order), the segment's
    start as ``start_s``. A manifest's ``dialog_id`` does not join files here: two files' segments would
    interleave by time."""
    return [{**file, "utt_id": segment_id(file["utt_id"], first + k), "path": str(folder / f"{first + k}.wav"),
             "duration_s": float(end - start), "start_s": float(start), "dialog_id": f"file:{file['utt_id']}"}
            for k, (start, end) in enumerate(bounds)]


def predict_segments(model: ExportedModel, files: pl.DataFrame, config: SegmentConfig, speech_id: str, device: str,
                     on_error: str, chunk_segments: int = 256, batch_seconds: float = 0.0
                     ) -> tuple[pl.DataFrame, list[Failure]]:
    """Each file as a time series: segments planned by ``config`` (``pipeline.corpora.segments``), extracted
    ``chunk_segments`` at a time into a temporary cache and folder that are deleted before the next chunk, so
    memory and disk hold one chunk plus, per segment, the features the heads read (``PredictionInputs``).
    Rows: ``utt_id`` (the file's), ``segment``, ``start_s``, ``end_s`` (seconds in the file), ``path``, valence,
    arousal (+ attention weights). A segment that fails is reported as ``path@start-end s``."""
    plans, silent = [], []
    for file in files.to_dicts():
        try:
            bounds = plan_file_segments(file["path"], config)
        except AudioError as err:  # unreadable: reported, the other files predicted
            silent.append(Failure(file["utt_id"], "segments", file["path"], str(err)))
            continue
        if not len(bounds):
            silent.append(Failure(file["utt_id"], "segments", file["path"], "no speech found (no stretch louder than "
                                  "12 dB over the recording's noise floor); --split fixed predicts it anyway"))
        plans.append((file, bounds))
    work = [(f, k) for f, (_, bounds) in enumerate(plans) for k in range(len(bounds))]
    parts, manifests, failures = [], [], []
    for start in range(0, len(work), chunk_segments):
        chunk = work[start : start + chunk_segments]
        with tempfile.TemporaryDirectory(prefix="predict-segments-") as tmp, quiet("pipeline", "cache"):
            rows = []
            for f in dict.fromkeys(f for f, _ in chunk):
                file, bounds = plans[f]
                ks = [k for g, k in chunk if g == f]
                folder = Path(tmp) / str(f)
                folder.mkdir()
                write_segments(file["path"], bounds[ks], [folder / f"{k}.wav" for k in ks])
                rows += segment_rows(file, bounds[ks], ks[0], folder)
            manifest = normalise_manifest(pl.DataFrame(rows, infer_schema_length=None))
            path = Path(tmp) / "segments.h5"
            extract(path, manifest, prediction_stages(model),
                    extract_config(model, speech_id, len(rows), batch_seconds), device=device, on_error=on_error)
            reader = CacheReader(path)
            check_speech_weights(model, reader, speech_id)
            check_feature_versions(model, reader)
            parts.append(read_prediction_inputs(model, reader))
            manifests.append(reader.manifest)
            failures += reader.failures
        if len(work) > chunk_segments:  # a long recording takes minutes: say how far it is
            log.info("predict: %d of %d segments extracted", min(start + chunk_segments, len(work)), len(work))
    inputs = concat_inputs(parts, pl.concat(manifests)) if parts else None
    if inputs is None or not inputs.ok.any():  # nothing to predict: the failures say why
        return pl.DataFrame(schema={"utt_id": pl.String, "valence": pl.Float64, "arousal": pl.Float64}), \
            silent + [_segment_failure(f, plans) for f in failures]
    frame = predict_inputs(model, inputs)
    # back from segment rows to files and times
    origin = pl.DataFrame([{"utt_id": segment_id(file["utt_id"], k), "file_id": file["utt_id"],
                            "file_path": file["path"], "segment": k, "seg_start_s": float(start), "end_s": float(end)}
                           for file, bounds in plans for k, (start, end) in enumerate(bounds)])
    frame = (frame.join(origin, on="utt_id", how="left")
             .drop("utt_id", "path").rename({"file_id": "utt_id", "file_path": "path", "seg_start_s": "start_s"})
             .sort("utt_id", "start_s", maintain_order=True))
    first = ["utt_id", "segment", "start_s", "end_s", "path", "valence", "arousal"]
    frame = frame.select(first + [c for c in frame.columns if c not in first])
    return frame, silent + [_segment_failure(f, plans) for f in failures]


def _segment_failure(failure: Failure, plans: list[tuple[dict, np.ndarray]]) -> Failure:
    """A failure of segment ``<file>@k`` named by the recording and the segment's times."""
    file_id, _, k = failure.utt_id.rpartition("@")
    for file, bounds in plans:
        if file["utt_id"] == file_id and k.isdigit() and int(k) < len(bounds):
            start, end = bounds[int(k)]
            return Failure(file_id, failure.stage, f"{file['path']}@{start:.1f}-{end:.1f} s", failure.reason)
    return failure
