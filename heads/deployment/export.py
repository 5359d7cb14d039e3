"""``export``: a trained run as a self-contained model folder (``heads.deployment.model_folder`` describes the folder).

Built beside its target and renamed into place, so a refusal or a crash leaves the old folder or none. With
``--onnx`` each runtime is checked against torch on the run's own audio before the folder is final.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from safetensors.numpy import save_file as save_numpy

from core.errors import InputError
from core.processes import process_alive
from core.provenance import utc_now
from heads.deployment.model_folder import CHECKSUMS, CONTEXT_FILE, FORMAT_VERSION, MODEL_FILE, sha256_file
from heads.deployment.onnx_heads import RUNTIMES, stage_onnx
from heads.deployment.predict import MIN_SPEAKER_ROWS, load_model, predict_audio
from heads.training.features import tables_of_provenance
from heads.training.runs import read_run

CHECK_FILES = 16  # files of the run's own audio each runtime is checked on at export


def export_model(run_dir: str | Path, out: str | Path, context: dict[str, np.ndarray] | None,
                 overwrite: bool = False, onnx: bool = False, speech_model: str | None = None) -> Path:
    """Write the model folder of the run in ``run_dir`` to ``out``. ``context`` is what gives new audio the run's
    dialogue context (``run_context_projection``), None for a run without state. ``onnx``:
    also the speech model (from ``speech_model``, default the id the cache recorded; other weights are refused)
    and the heads as ONNX (``heads.deployment.onnx_heads``)."""
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
        "feature_tables": used_feature_tables(features, provenance),
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
        model["onnx"]["checked"] = check_runtimes(out, record, speech_model)
        _write_record(out, model)


def used_feature_tables(features: dict, provenance: dict[str, dict]) -> dict[str, dict]:
    """Stage -> ``{"feature_set", "feature_set_version", "config"}`` of the feature sets the model's prosody block
    reads (``predict`` runs those stages with these settings)."""
    if not features.get("use_prosody"):
        return {}
    tables = tables_of_provenance(provenance)
    return {tables[name]: {"feature_set": name,
                           "feature_set_version": provenance[tables[name]].get("feature_set_version"),
                           "config": provenance[tables[name]].get("config", {})}
            for name in features.get("prosody_sets", ["praat"])}


def _write_record(out: Path, model: dict) -> None:
    """``model.json``, the model card and CHECKSUMS (of every file in the folder)."""
    (out / MODEL_FILE).write_text(json.dumps(model, indent=1, default=str))
    (out / "README.md").write_text(model_card(model))
    files = sorted(p.name for p in out.iterdir() if p.name != CHECKSUMS)
    (out / CHECKSUMS).write_text("".join(f"{sha256_file(out / name)}  {name}\n" for name in files))


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
    """What gives new audio the context the run's test rows got (``StateKind.exported``,
    ``pipeline.models.state_kinds``): for the untrained kinds the turn projection fitted, as in the state stage, on
    the usable rows outside the run's test fold (all usable rows for ``--fold all``), and for ``ema-predictions`` the
    first-pass predictor fitted there; for the learned kind its updater, checked (``checked_updater``). None
    without a state."""
    if not record["effective_features"].get("use_state"):
        return None
    from cache import CacheReader
    from pipeline.models.state_kinds import state_kind
    from pipeline.models.state_model import state_config_from_dict
    from pipeline.stages.state import load_state_inputs  # the cache's rows as the state stage reads them

    path = Path(record["cache"])
    if not path.is_file():
        raise InputError(f"{path}: the run's cache is needed once, to export its dialogue-context projection")
    reader = CacheReader(path)
    config = state_config_from_dict(reader.provenance("state")["config"])
    inputs = load_state_inputs(reader, config)
    if not state_kind(config).learned:
        return state_kind(config).exported(inputs, record["fold"], config)
    return checked_updater(reader, inputs, record["fold"], config)


def checked_updater(reader, inputs, fold: int, config) -> dict[str, np.ndarray]:  # noqa: ANN001
    """The learned state's updater for ``fold`` (``StateKind.exported``: ``pipeline.models.state_updater.
    exported_updater``), refused unless it reproduces the states the cache holds for the fold's test rows: a cache
    made on a GPU, or by other package versions, can hold states that training again here does not give exactly."""
    from core.protocol import TRAIN_SPLIT
    from pipeline.models.state_kinds import state_kind

    kind = state_kind(config)
    updater = kind.exported(inputs, fold, config)
    usable_test = inputs.usable & (inputs.folds == fold) if inputs.splits is None else \
        inputs.usable & (inputs.splits != TRAIN_SPLIT)
    sequences = [s for s in inputs.sequences if usable_test[s].any()]
    cast = {k: np.asarray(v, np.float32) for k, v in updater.items()}  # as saved in the model folder
    mine = kind.replay(cast, config, inputs.z[:, : inputs.speech_width], inputs.z[:, inputs.speech_width :],
                       sequences, inputs.speakers)[usable_test]
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
* prosody: feature set(s) {', '.join(f"`{t['feature_set_version']}`" for t in model.get('feature_tables', {}).values()) or 'none'}
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

    from heads.deployment.predict import load_model
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


def check_files(record: dict, count: int = CHECK_FILES) -> pl.DataFrame:
    """Up to ``count`` readable, usable rows of the run's cache (``utt_id, path, speaker, dialog_id, start_s``): its
    test fold first; for a speaker-normalised model the rows of one speaker with enough of them
    (``heads.deployment.predict.MIN_SPEAKER_ROWS``), since predict normalises each speaker by their own files. Refused when
    none can be read here."""
    from cache import CacheReader

    cache = Path(record["cache"])
    if not cache.is_file():
        raise InputError(f"{cache}: export --onnx checks each runtime against torch on the run's own audio, and the "
                         "run's cache is not here")
    reader = CacheReader(cache)
    rows = reader.manifest.with_columns(pl.Series("ok", reader.ok(["speech", "prosody"])))
    rows = rows.filter(pl.col("ok") & pl.col("path").map_elements(lambda p: Path(p).is_file(), return_dtype=pl.Boolean))
    rows = rows.sort(pl.col("fold") != record.get("fold"), maintain_order=True)
    if record["effective_features"].get("per_speaker_norm"):
        counts = rows.group_by("speaker", maintain_order=True).len().filter(pl.col("len") >= MIN_SPEAKER_ROWS)
        rows = rows.filter(pl.col("speaker") == counts["speaker"][0]) if counts.height else rows.head(0)
        count = max(count, MIN_SPEAKER_ROWS)
    rows = rows.head(count).select("utt_id", "path", "speaker", "dialog_id", "start_s")
    if not rows.height:
        raise InputError(f"{cache}: export --onnx checks each runtime against torch on the run's own audio, and no "
                         "usable file of the cache (for a speaker-normalised model: no speaker with "
                         f"{MIN_SPEAKER_ROWS} of them) can be read here")
    return rows


def check_runtimes(folder: Path, record: dict, speech_model: str | None) -> dict:
    """Predict ``check_files`` (as a manifest: their speakers and dialogue order too) with the exported folder in
    every runtime: ``{"files": n, runtime: largest |difference| of valence or arousal from torch on the label
    scale}``."""
    model = load_model(folder)
    with tempfile.TemporaryDirectory(prefix="onnx-check-") as tmp:
        manifest = Path(tmp) / "check.csv"
        check_files(record).write_csv(manifest)
        reference, _ = predict_audio(model, None, str(manifest), speech_model, "cpu")
        out: dict = {"files": reference.height}
        for runtime in RUNTIMES[1:]:
            other, _ = predict_audio(model.with_runtime(runtime, checked_only=False), None, str(manifest), None, "cpu",
                                     runtime=runtime)
            joined = reference.join(other, on="utt_id", suffix="_other")
            if not joined.height:
                raise InputError(f"{folder}: no check file could be predicted with --runtime {runtime}")
            out[runtime] = float(max((joined[d] - joined[f"{d}_other"]).abs().max() for d in ("valence", "arousal")))
    return out
