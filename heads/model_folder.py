"""A trained model as one self-contained folder (``export``), and loading it again (``load_model``).

    model/
      model.json            what the features are and how they are normalised: speech model id and weight
                            checksum, layer choice, prosody feature set and names, state kind and settings,
                            head variant, config, block sizes, seeds, training corpus, cross-validated metrics
      head_seed<k>.safetensors   head weights + z-scoring statistics + target scale (one per seed)
      context.safetensors   the dialogue context: the ema kinds' projection (speech mean/std/axes, prosody
                            mean/std) fitted on the training rows, or the learned (mamba) updater's weights and
                            input statistics
      README.md             the model card
      speech.onnx, speech.int8.onnx, head_seed<k>.onnx   with ``export --onnx`` only: the speech model and
                            the heads for ONNX Runtime (``heads.onnx_heads``; ``predict --runtime onnx|onnx-int8``)
      CHECKSUMS             sha256 of every file above; a changed or missing file is refused

No pickle anywhere: safetensors and JSON only, so loading a model cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from core.errors import InputError
from core.processes import process_alive
from core.provenance import utc_now
from core.standardise import standardise
from heads.models import BlockSizes
from heads.runs import load_head, read_run

MODEL_FILE = "model.json"
CONTEXT_FILE = "context.safetensors"
CHECKSUMS = "CHECKSUMS"
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_model(run_dir: str | Path, out: str | Path, context: dict[str, np.ndarray] | None,
                 overwrite: bool = False, onnx: bool = False, speech_model: str | None = None) -> Path:
    """Write the model folder of the run in ``run_dir`` to ``out``. ``context`` is what gives new audio the run's
    dialogue context (``run_context_projection``), None for a run without state. ``onnx``:
    also the speech model (from ``speech_model``, default the id the cache recorded; other weights are refused)
    and the heads as ONNX (``heads.onnx_heads``)."""
    record, _ = read_run(run_dir)
    features = record["effective_features"]
    if features.get("per_speaker_norm") and features.get("use_prosody") and not _has_stat(run_dir, record, "prosody_fill"):
        raise InputError(f"{run_dir}: a speaker-normalised run trained before its prosody fill values were saved; "
                         "train it again to export it")
    out = Path(out)
    heads = [Path(run_dir) / f"head_seed{seed}.safetensors" for seed in record["seeds"]]
    linked = [p for p in heads if p.is_symlink()]
    if linked:
        raise InputError(f"{linked[0]}: a symbolic link; a run's weights must be its own files (train it again)")
    if out.exists():
        if not overwrite:
            raise InputError(f"{out}: exists; choose another --out or pass --overwrite")
        if out.is_symlink() or not out.is_dir() or (any(out.iterdir()) and not (out / MODEL_FILE).is_file()):
            raise InputError(f"{out}: not a model folder written by export; --overwrite replaces only those "
                             "(nothing was deleted)")
    # Built beside ``out`` and renamed into place at the end: a refusal or a crash (the ONNX check included) leaves
    # the old folder, or none, never a half-written one.
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out.parent.glob(f".{out.name}.export-*"):  # of an export that was killed
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    building = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    try:
        _write_folder(building, Path(run_dir), record, heads, context, onnx, speech_model)
        if out.exists():
            shutil.rmtree(out)
        os.replace(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out


def _write_folder(out: Path, run_dir: Path, record: dict, heads: list[Path], context: dict[str, np.ndarray] | None,
                  onnx: bool, speech_model: str | None) -> None:
    """Every file of the model folder into the empty folder ``out`` (``export_model``)."""
    features = record["effective_features"]
    provenance = record.get("cache_provenance", {})
    state = provenance.get("state", {})
    staged = None
    if onnx:
        from heads.onnx_heads import stage_onnx

        staged = stage_onnx(run_dir, record, provenance.get("speech", {}).get("model", {}), speech_model, out)
    for head in heads:
        shutil.copyfile(head, out / head.name)
    if features.get("use_state"):
        save_numpy({k: np.ascontiguousarray(v, np.float32) for k, v in context.items()}, str(out / CONTEXT_FILE))
    speech = provenance.get("speech", {})
    model = {
        "format_version": FORMAT_VERSION, "exported_utc": utc_now(), "label": record["label"],
        "variant": record["config"]["variant"], "config": record["config"], "features": features,
        "sizes": record["sizes"], "seeds": record["seeds"], "fold": record["fold"],
        "test_set": record.get("test_set"), "protocol": record.get("protocol", "folds"),
        "speech_model": speech.get("model", {}), "speech_config": speech.get("config", {}),
        "prosody_feature_set": provenance.get("prosody", {}).get("feature_set_version"),
        "prosody_config": provenance.get("prosody", {}).get("config", {}),
        "state": {"kind": state.get("kind"), "config": state.get("config")} if features.get("use_state") else None,
        "target_range": record.get("target_range"),  # the training labels' range: predict --clip
        "seed_spread": seed_spread_check(run_dir, record),
        "training": {"cache": record.get("cache"), "split_sizes": record.get("split_sizes"),
                     "validation_speakers": record.get("validation_speakers"),
                     "metrics_per_seed": record.get("metrics_per_seed")},
    }
    if staged is not None:
        staged.move_into(out)
        model["onnx"] = staged.entry
    _write_record(out, model)
    if staged is not None:  # each runtime against torch on the run's own audio: predict refuses one too far off
        from heads.onnx_heads import check_runtimes

        model["onnx"]["checked"] = check_runtimes(out, record, speech_model)
        _write_record(out, model)


def _write_record(out: Path, model: dict) -> None:
    """``model.json``, the model card and CHECKSUMS (of every file in the folder)."""
    (out / MODEL_FILE).write_text(json.dumps(model, indent=1, default=str))
    (out / "README.md").write_text(model_card(model))
    files = sorted(p.name for p in out.iterdir() if p.name != CHECKSUMS)
    (out / CHECKSUMS).write_text("".join(f"{_sha256(out / name)}  {name}\n" for name in files))


def seed_spread_check(run_dir: Path, record: dict) -> dict | None:
    """``spread_correlation`` of the run's held-out predictions; None with one seed or without held-out rows (a
    ``--fold all`` model)."""
    _, predictions = read_run(run_dir)
    if len(record["seeds"]) < 2 or predictions.height == 0:
        return None
    return spread_correlation(predictions)


def spread_correlation(predictions: pl.DataFrame) -> dict:
    """How well the seeds' disagreement ranks the errors: per dimension, Spearman's rho between the sd over seeds
    and ``|mean over seeds - label|`` of each row (``predictions``: a run's per-seed rows), its 95 % interval
    (Fisher z with the Spearman variance 1.06 / (n - 3), Fieller et al. 1957), and ``reported``: the dimensions
    whose interval lies above 0. Only those get a ``<dimension>_sd`` column from ``predict``: a spread that does
    not rank the errors would look like a confidence without being one (benchmarks/bench_uncertainty.py found
    both cases)."""
    from scipy.stats import norm, spearmanr

    n = int(predictions["utt_id"].n_unique())
    out: dict = {"rows": n, "reported": []}
    for d in ("valence", "arousal"):
        rows = predictions.group_by("utt_id").agg(pl.col(f"{d}_pred").std().alias("sd"),
                                                  pl.col(f"{d}_pred").mean().alias("mean"),
                                                  pl.col(f"{d}_true").first().alias("true"))
        error = (rows["mean"] - rows["true"]).abs().to_numpy()
        sd = rows["sd"].to_numpy()
        defined = n > 3 and np.ptp(sd) > 0 and np.ptp(error) > 0  # a constant column has no rank correlation
        rho = float(spearmanr(sd, error).statistic) if defined else float("nan")
        half = norm.ppf(0.975) * np.sqrt(1.06 / max(n - 3, 1))
        low, high = (np.tanh(np.arctanh(np.clip(rho, -0.9999, 0.9999)) + s) for s in (-half, half))
        if not np.isfinite(rho):  # undefined (a constant column): stored as null, never reported
            out[f"rho_{d}"], out[f"ci_{d}"] = None, None
            continue
        out[f"rho_{d}"], out[f"ci_{d}"] = round(rho, 3), [round(float(low), 3), round(float(high), 3)]
        if low > 0:
            out["reported"].append(d)
    return out


def _has_stat(run_dir: str | Path, record: dict, name: str) -> bool:
    """Whether the run's first head file holds the normalisation statistic ``name`` (``stats.<name>``)."""
    from safetensors import safe_open

    with safe_open(str(Path(run_dir) / f"head_seed{record['seeds'][0]}.safetensors"), "np") as f:
        return f"stats.{name}" in f.keys()


def run_context_projection(record: dict) -> dict[str, np.ndarray] | None:
    """What gives new audio the context the run's test rows got (``pipeline.stages.state.context_model``): the turn
    projection fitted, as in the state stage, on the usable rows outside the run's test fold (all usable rows for
    ``--fold all``), and for ``ema-predictions`` the first-pass predictor fitted there. None without a state."""
    if not record["effective_features"].get("use_state"):
        return None
    from cache import CacheReader
    from pipeline.stages.state import context_model, load_state_inputs, state_config_from_dict

    path = Path(record["cache"])
    if not path.is_file():
        raise InputError(f"{path}: the run's cache is needed once, to export its dialogue-context projection")
    reader = CacheReader(path)
    config = state_config_from_dict(reader.provenance("state")["config"])
    inputs = load_state_inputs(reader, config)
    if config.kind != "mamba":
        return context_model(inputs, record["fold"], config)
    return checked_updater(reader, inputs, record["fold"], config)


def checked_updater(reader, inputs, fold: int, config) -> dict[str, np.ndarray]:  # noqa: ANN001
    """The learned state's updater for ``fold`` (``pipeline.stages.state.exported_updater``), refused unless it
    reproduces the states the cache holds for the fold's test rows: a cache made on a GPU, or by other package
    versions, can hold states that training again here does not give exactly."""
    from core.protocol import TRAIN_SPLIT
    from pipeline.stages.state import exported_updater, learned_states

    updater = exported_updater(inputs, fold, config)
    usable_test = inputs.usable & (inputs.folds == fold) if inputs.splits is None else \
        inputs.usable & (inputs.splits != TRAIN_SPLIT)
    sequences = [s for s in inputs.sequences if usable_test[s].any()]
    cast = {k: np.asarray(v, np.float32) for k, v in updater.items()}  # as saved in the model folder
    mine = learned_states(cast, config, inputs.z, sequences)[usable_test]
    cached = reader.read("state", f"fold_{fold}")[usable_test]
    largest = float(np.abs(mine - cached).max()) if len(mine) else 0.0
    if largest > 1e-4:
        made = reader.provenance("state").get("device_type", "another device")
        raise InputError(f"{reader.path}: the learned state's updater, trained again for export, does not reproduce "
                         f"the cached states of fold {fold} (largest difference {largest:.2g}; the cache's states were "
                         f"made on {made}); export on a machine of the kind that made the cache")
    return cast


def model_card(model: dict) -> str:
    """The model folder's README.md: what it was trained on, how well it did, what it is for."""
    speech = model["speech_model"]
    metrics = model["training"]["metrics_per_seed"] or {}
    fold = model["fold"]
    scores = ""
    if metrics and fold != 0:
        means = {k: np.mean([m[k] for m in metrics.values()]) for k in ("ccc_v", "ccc_a", "mse_v", "mse_a")}
        held_out = f"Test set {model['test_set']}" if model.get("protocol") == "partitions" else \
            f"Held-out fold {fold} (speakers never seen in training)"
        scores = (f"{held_out}, mean over {len(metrics)} seed(s): "
                  f"CCC-V {means['ccc_v']:.3f}, CCC-A {means['ccc_a']:.3f}, MSE-V {means['mse_v']:.3f}, "
                  f"MSE-A {means['mse_a']:.3f}. For intervals see the evaluation of all folds (`cli.py eval`).\n")
    elif model.get("protocol") == "partitions":
        scores = ("Trained on the corpus's train partition, stopped early on its dev partition (`--fold all`): it "
                  "has no test score of its own. Report the test sets' results of the same settings (`cli.py eval` "
                  "over `train-heads --split all`).\n")
    else:
        scores = ("Trained on every labelled utterance (`--fold all`): it has no held-out score of its own. "
                  "Report the cross-validated results of the same settings (`cli.py eval` over folds 1-K).\n")
    state = model["state"]
    return f"""# Valence/arousal model `{model['label']}`

* head: `{model['variant']}`, {len(model['seeds'])} seed(s) averaged; blocks: speech {model['features']['use_speech']}
  (layer `{model['features']['layer']}`), prosody {model['features']['use_prosody']}, dialogue state
  {state['kind'] if state else 'none'}
* speech model: `{speech.get('model_id')}` (weights sha256 `{speech.get('weights_sha256')}`); predictions with
  any other weights are refused
* prosody: feature set `{model['prosody_feature_set']}`
* training corpus: `{model['training']['cache']}`, fold `{'all (final model)' if fold == 0 else fold}`, split {model['training']['split_sizes']}
* training labels span {_ranges(model.get('target_range'))}; the heads are regressions and a prediction can leave
  that range (`predict --clip` limits it)
* exported {model['exported_utc']}{_onnx_note(model)}

## Results

{scores}
## Uncertainty

{_spread_text(model)}

## Intended use and limits

Research on valence and arousal in speech: outputs are on the training corpus's label scale and are only as
good as that corpus's match to your recordings (language, recording conditions, acted vs natural speech,
speakers). Not for decisions about individuals. With a dialogue state, context comes from the previous files
of the same `dialog_id` in `start_s` order; without a manifest, each file is predicted alone.

## Use

    python cli.py predict --model <this folder> a.wav b.flac --out predictions.csv

    from heads.model_folder import load_model
    predictions = load_model("<this folder>").predict(["a.wav", "b.flac"])
"""


def _onnx_note(model: dict) -> str:
    if not model.get("onnx"):
        return ""
    note = ("; with the speech model and heads as ONNX for `predict --runtime onnx` and `--runtime onnx-int8` "
            "(int8 matrix products in the speech model)")
    checked = model["onnx"].get("checked")
    if checked:
        note += (f". Checked against torch at export on {checked['files']} of the run's files: largest difference of "
                 f"valence or arousal {checked['onnx']:.3g} (onnx), {checked['onnx-int8']:.3g} (onnx-int8); a runtime "
                 "beyond 0.01 is refused by predict")
    return note


def _spread_text(model: dict) -> str:
    if len(model["seeds"]) < 2:
        return "One seed: `predict` gives no `valence_sd`/`arousal_sd` (export a run trained with `--seeds 3` or more)."
    check = model.get("seed_spread")
    if not check:
        return ("No held-out rows to check the seeds' spread against (a `--fold all` model), so `predict` gives no "
                "`valence_sd`/`arousal_sd`: export a fold run of the same settings to get them with their check.")
    measured = "; ".join(f"{d}: Spearman's rho {check[f'rho_{d}']:.2f} [{check[f'ci_{d}'][0]:.2f}, "
                         f"{check[f'ci_{d}'][1]:.2f}]" if check[f"rho_{d}"] is not None else f"{d}: undefined (no spread)"
                         for d in ("valence", "arousal"))
    shipped = ", ".join(f"`{d}_sd`" for d in check["reported"]) or "no spread column"
    return (f"The sd of the {len(model['seeds'])} seeds' predictions against the absolute error on this run's "
            f"{check['rows']} held-out rows: {measured}. `predict` gives {shipped}: a spread is reported only where "
            "its interval lies above 0. It ranks which predictions are likely further off; it is not an interval on "
            "the label scale.")


def _ranges(target_range: dict | None) -> str:
    if not target_range:
        return "an unrecorded range"
    return ", ".join(f"{d} {low:g}-{high:g}" for d, (low, high) in target_range.items())


def required_files(record: dict) -> set[str]:
    """Every file a model folder's ``model.json`` says it needs (each must be listed in CHECKSUMS)."""
    from heads.onnx_heads import onnx_files

    return {MODEL_FILE, "README.md", *(f"head_seed{s}.safetensors" for s in record.get("seeds", [])),
            *([CONTEXT_FILE] if record.get("state") else []), *onnx_files(record)}


def verify_checksums(folder: Path) -> None:
    """Refuse a model folder whose files differ from the ones exported, lack any, are not all listed in CHECKSUMS,
    or are symbolic links (a link could point at anything)."""
    listing = folder / CHECKSUMS
    if not (folder / MODEL_FILE).is_file() or not listing.is_file():
        raise InputError(f"{folder}: not a model folder (no {MODEL_FILE} or {CHECKSUMS}); make one with `cli.py export`")
    listed = {}
    for line in listing.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if not name or "/" in name or name.startswith("."):
            raise InputError(f"{listing}: a damaged line {line!r}; re-export the model")
        listed[name] = digest
    for name in [*listed, CHECKSUMS, MODEL_FILE]:
        if (folder / name).is_symlink():
            raise InputError(f"{folder / name}: a symbolic link; a model folder holds its own files")
    if MODEL_FILE not in listed:
        raise InputError(f"{listing}: does not list {MODEL_FILE}; re-export the model")
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"{path}: missing from the model folder")
        if _sha256(path) != digest:
            raise InputError(f"{path}: changed since export (sha256 differs); re-export the model")
    try:
        record = json.loads((folder / MODEL_FILE).read_text())
    except ValueError as err:
        raise InputError(f"{folder / MODEL_FILE}: not readable ({err}); re-export the model") from None
    unlisted = sorted(required_files(record) - set(listed))
    if unlisted:
        raise InputError(f"{listing}: does not list {', '.join(unlisted)}, which the model needs; re-export the model")


class ExportedModel:
    """A loaded model folder: heads (one per seed), their statistics, the context projection."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        verify_checksums(self.folder)
        self.record = json.loads((self.folder / MODEL_FILE).read_text())
        if self.record.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{self.folder}: model format {self.record.get('format_version')} is not "
                             f"{FORMAT_VERSION}, the one this version reads")
        sizes = BlockSizes(**self.record["sizes"])
        dropout = self.record["config"]["dropout"]
        self.heads = [load_head(self.folder / f"head_seed{s}.safetensors", self.record["variant"], sizes, dropout)
                      for s in self.record["seeds"]]
        self.context = load_numpy(str(self.folder / CONTEXT_FILE)) if self.record["state"] else None
        self.runtime, self.head_sessions = "torch", None  # with_runtime: ONNX Runtime sessions of the heads

    def with_runtime(self, runtime: str, checked_only: bool = True) -> ExportedModel:
        """This model with its heads run by ``runtime``: torch (this object), onnx or onnx-int8 (ONNX Runtime on
        the CPU; the folder must have been exported with ``--onnx``). The int8 runtime differs in the speech
        model only (``onnx_speech``). A runtime whose predictions export measured further than
        ``heads.onnx_heads.MAX_DIFFERENCE`` from torch's is refused (``checked_only=False``: measure it anyway)."""
        import copy

        from heads.onnx_heads import MAX_DIFFERENCE, RUNTIMES, load_head_sessions

        if runtime not in RUNTIMES:
            raise InputError(f"--runtime {runtime}: choose {', '.join(RUNTIMES)}")
        if runtime == "torch":
            return self
        if not self.record.get("onnx"):
            raise InputError(f"{self.folder}: exported without ONNX files, so --runtime {runtime} cannot run it; "
                             "export its run again with --onnx (python cli.py export --run RUN --out DIR --onnx)")
        measured = self.record["onnx"].get("checked", {}).get(runtime)
        if checked_only and (measured is None or measured > MAX_DIFFERENCE):
            found = "was not checked" if measured is None else f"moved valence or arousal by up to {measured:.3g}"
            raise InputError(f"{self.folder}: --runtime {runtime} {found} against torch on the run's own files at "
                             f"export, and it must stay within {MAX_DIFFERENCE} on the label scale; use --runtime "
                             f"{'onnx' if runtime == 'onnx-int8' else 'torch'}")
        model = copy.copy(self)
        model.runtime, model.head_sessions = runtime, load_head_sessions(self.folder, self.record)
        return model

    def onnx_speech(self, speech_model: str | None, device: str) -> str:
        """The speech model file of this model's ONNX runtime (``speech.onnx`` or ``speech.int8.onnx``), which
        runs on the CPU; ``--speech-model`` (torch weights) and ``--device cuda`` do not apply and are refused."""
        if speech_model:
            raise InputError(f"--speech-model chooses the torch weights; --runtime {self.runtime} runs the speech "
                             f"model exported into {self.folder}")
        if device not in ("auto", "cpu"):
            raise InputError(f"--device {device}: --runtime {self.runtime} runs on the CPU (ONNX Runtime); use "
                             "--runtime torch on a GPU")
        return str(self.folder / self.record["onnx"]["speech_int8" if self.runtime == "onnx-int8" else "speech"])

    @property
    def speech_checksum(self) -> str | None:
        return self.record["speech_model"].get("weights_sha256")

    def predict(self, audio: list[str] | None = None, manifest: str | None = None, speech_model: str | None = None,
                device: str = "auto", on_error: str = "skip", cache: str | None = None,
                clip: bool = False, runtime: str = "torch", segments=None, batch_seconds: float = 0.0):  # noqa: ANN001, ANN201
        """Valence and arousal of new audio (``heads.predict.predict_audio``); returns a polars DataFrame.
        ``runtime``: torch, onnx or onnx-int8 (``with_runtime``); ``segments``: a
        ``pipeline.corpora.segments.SegmentConfig`` to predict each file as a time series."""
        import logging

        from heads.predict import predict_audio

        frame, skipped = predict_audio(self, audio, manifest, speech_model, device, on_error, cache, clip,
                                       segments=segments, batch_seconds=batch_seconds, runtime=runtime)
        for failure in skipped:
            logging.getLogger(__name__).warning("skipped %s: %s", failure.path, failure.reason)
        return frame


def load_model(folder: str | Path) -> ExportedModel:
    """Load a folder written by ``cli.py export`` (checksums verified first)."""
    return ExportedModel(folder)


def head_outputs(model: ExportedModel, speech: np.ndarray | None, prosody: np.ndarray | None,
                 state: np.ndarray | None, speakers: np.ndarray | None = None
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mean over seeds of the heads on raw features (z-scored here with each head's saved statistics), run by
    ``model.runtime``: ``([n, 2] valence/arousal on the corpus scale, {column -> [n]})``, the columns being
    ``valence_sd`` and ``arousal_sd`` (sd over the seeds, where ``spread_correlation`` reported it) and the
    attention weights. A speaker-normalised model
    (``--speaker-norm``) first z-scores speech and prosody with each of ``speakers``' own rows, as training did."""
    from heads.features import SplitTensors, per_speaker_zscore
    from heads.train import attention_columns, predict

    n = len(prosody if prosody is not None else speech)
    by_speaker = model.record["features"].get("per_speaker_norm", False)

    def block(values: np.ndarray | None, name: str, stats: dict[str, np.ndarray]) -> torch.Tensor:
        if values is None or f"{name}_mean" not in stats:
            return torch.zeros(n, 0)
        if by_speaker and name != "state":
            if name == "prosody":
                values = np.where(np.isnan(values), stats["prosody_fill"], values)
            values = per_speaker_zscore(values, speakers)
        z = standardise(values, stats[f"{name}_mean"], stats[f"{name}_std"])  # as in training
        return torch.from_numpy(np.nan_to_num(z, nan=0.0).astype(np.float32))

    outputs, attention = [], []
    for k, (head, stats) in enumerate(model.heads):
        split = SplitTensors(np.arange(n), block(speech, "speech", stats), block(prosody, "prosody", stats),
                             block(state, "state", stats), torch.zeros(n, 2), np.zeros((n, 2)))
        if model.runtime == "torch":
            pred, attn = predict(head, split)
        else:  # the same z-scored blocks into the ONNX graph of this seed's head
            from heads.onnx_heads import run_head_onnx

            blocks = {"speech": split.speech.numpy(), "prosody": split.prosody.numpy(), "state": split.state.numpy()}
            pred, attn = run_head_onnx(model.head_sessions[k], blocks)
        outputs.append(pred.numpy() * stats["target_std"] + stats["target_mean"])
        if attn is not None:
            attention.append(attention_columns(attn))
    columns = {k: np.mean([a[k] for a in attention], 0) for k in attention[0]} if attention else {}
    reported = (model.record.get("seed_spread") or {}).get("reported", [])
    if len(outputs) > 1 and reported:  # the seeds' disagreement, where it ranked held-out errors (model card)
        spread = np.std(outputs, axis=0, ddof=1)
        columns = {**{f"{d}_sd": spread[:, i] for i, d in enumerate(("valence", "arousal")) if d in reported},
                   **columns}
    return np.mean(outputs, 0), columns
