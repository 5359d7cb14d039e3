"""Command line of the speech-emotion feature cache: thin wiring over ``pipeline``, ``cache`` and ``heads``
(and ``demo``, the built-in end-to-end run).

Run ``python cli.py --help``. User mistakes print one line and exit with status 2.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never hang on a network that is not there
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Heavy modules (torch, transformers) are imported inside the commands: worker processes started with
# "spawn" re-import this file, and should not pay for them.
from core.errors import InputError, report_problems  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Extract speech, prosody and dialogue-state features once; train valence/arousal heads in seconds.")
cache_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect and merge feature caches.")
app.add_typer(cache_app, name="cache")


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)


warnings.showwarning = _warn_line


_ALLOW_SHARED_HELP = ("accept a speaker or dialogue with rows in two folds or partitions (refused by default: test "
                      "scores would be optimistic); every table and report then carries a warning")


@app.command()
def manifest(
    corpus: str = typer.Option(..., help="iemocap | emodb | msp-podcast | manifest"),
    root: Optional[str] = typer.Option(None, help="corpus folder (IEMOCAP_full_release/, EmoDB, or MSP-Podcast with Audios/ and Labels/)"),
    manifest_file: Optional[str] = typer.Option(None, "--manifest", help="your CSV/Parquet manifest (--corpus manifest)"),
    out: Path = typer.Option(..., help="where to write the normalised manifest (.csv or .parquet)"),
    strict: bool = typer.Option(False, help="fail on the first problem instead of skipping the utterance"),
    allow_shared_speakers: bool = typer.Option(False, "--allow-shared-speakers", help=_ALLOW_SHARED_HELP),
) -> None:
    """Write the normalised utterance table of a corpus."""
    from core.columns import manifest_splits
    from core.protocol import test_set_names
    from pipeline.corpora import build_manifest, check_disjoint
    from pipeline.corpora.manifest import write_manifest

    df, problems = build_manifest(corpus, root, manifest_file)
    report_problems(problems, strict, what=f"corpus {corpus}")
    check_disjoint(df, allow_shared_speakers)
    write_manifest(df, out)
    splits = manifest_splits(df)
    protocol = f"{df['fold'].n_unique()} folds" if splits is None else \
        f"partitions train, dev, {', '.join(test_set_names(splits))}"
    typer.echo(f"{out}: {df.height} utterances, {df['speaker'].n_unique()} speakers, "
               f"{protocol}, {df['dialog_id'].n_unique()} dialogues"
               + (f" ({len(problems)} skipped)" if problems else ""))


@app.command()
def extract(
    corpus: str = typer.Option(..., help="iemocap | emodb | msp-podcast | manifest"),
    cache: Path = typer.Option(..., help="the HDF5 cache to create or complete"),
    root: Optional[str] = typer.Option(None, help="corpus folder"),
    manifest_file: Optional[str] = typer.Option(None, "--manifest", help="your CSV/Parquet manifest"),
    speech_model: str = typer.Option("microsoft/wavlm-large", help="hub id or local folder of a WavLM-family model"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    stages: str = typer.Option("speech,prosody,state", help="comma-separated stages to run if the cache lacks them"),
    prosody: str = typer.Option("praat", help="the feature sets the prosody stage computes: praat | egemaps "
                                "(openSMILE eGeMAPS v02, 88 functionals) | praat,egemaps; a set added later is "
                                "computed without recomputing the others"),
    on_error: str = typer.Option("skip", help="skip: record bad files in the failures table; fail: stop (exit 2)"),
    batch_seconds: float = typer.Option(0.0, help="padded audio seconds per speech batch (0 = auto: 120 on CUDA, 8 on CPU)"),
    window_s: float = typer.Option(30.0, help="longer utterances are embedded in windows of this many seconds"),
    precision: str = typer.Option("auto", help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16"),
    frame_layers: str = typer.Option("", help="also store the frame sequences of these hidden states, e.g. 12,24"),
    workers: int = typer.Option(0, help="prosody (praat, egemaps) processes (0 = all cores)"),
    loader_workers: int = typer.Option(1, help="DataLoader processes decoding audio for the speech stage"),
    state_grouping: str = typer.Option("dialog", help="state sequences: dialog | speaker | utterance"),
    state_kind: Optional[str] = typer.Option(None, help="dialogue state: ema-predictions (default with 3 folds or "
                                             "more: the previous turns' out-of-fold predicted valence/arousal) | "
                                             "ema-features (default with fewer folds) | ema-features-speaker | mamba "
                                             "(the learned updater); README 'The dialogue state'"),
    state_epochs: int = typer.Option(20, help="mamba: at most this many epochs per updater"),
    state_width: int = typer.Option(64, help="mamba: width of the state vector"),
    ema: float = typer.Option(0.8, help="mamba: EMA coefficient a of the dialogue state"),
    learn_ema: bool = typer.Option(False, help="learn a (clipped to [0.6, 0.95])"),
    strict: bool = typer.Option(False, help="fail on manifest problems instead of skipping utterances"),
    force: bool = typer.Option(False, help="replace an existing cache made with other settings"),
    allow_shared_speakers: bool = typer.Option(False, "--allow-shared-speakers", help=_ALLOW_SHARED_HELP),
    update_manifest: bool = typer.Option(False, "--update-manifest", help="the manifest changed in columns the stored "
                                         "dialogue states depend on (folds, speakers, dialogue order; labels for "
                                         "the cross-fitted kinds): store it and recompute the state stage"),
    shard: Optional[str] = typer.Option(None, help="i/n: compute shard i of n (job arrays), then `cache merge`; "
                                                   "under torchrun each rank takes its shard by itself"),
    write_block_mb: int = typer.Option(0, help="memory for writing a finished stage into the cache, in MiB (0 = "
                                               "an eighth of what the machine has available, 16-512)"),
) -> None:
    """Run the extraction stages the cache does not hold yet (resumable; sharded under torchrun or --shard)."""
    if write_block_mb < 0:  # before the corpus is read, which can take minutes
        raise InputError(f"--write-block-mb {write_block_mb}: must be 0 (automatic) or a number of MiB")
    from pipeline.corpora import build_manifest, check_disjoint
    from pipeline.extract import ExtractConfig
    from pipeline.launch import launch_extract
    from pipeline.models.state_model import StateModelConfig
    from pipeline.stages.egemaps import EgemapsConfig
    from pipeline.stages.prosody import ProsodyConfig
    from pipeline.stages.registry import requested_stages
    from pipeline.stages.speech import SpeechConfig
    from pipeline.stages.state import StateConfig, default_kind

    df, problems = build_manifest(corpus, root, manifest_file)
    report_problems(problems, strict, what=f"corpus {corpus}")
    check_disjoint(df, allow_shared_speakers)
    state_kind = state_kind or _stored_state_kind(cache) or default_kind(df)
    config = ExtractConfig(
        speech=SpeechConfig(model=speech_model, batch_seconds=batch_seconds, window_s=window_s,
                            precision=precision, num_workers=loader_workers,
                            frame_layers=_int_list(frame_layers, "--frame-layers")),
        prosody=ProsodyConfig(workers=workers),
        egemaps=EgemapsConfig(workers=workers),
        state=StateConfig(kind=state_kind, model=StateModelConfig(ema=ema, learn_ema=learn_ema, d_state=state_width),
                          grouping=state_grouping, epochs=state_epochs),
    )
    wanted = requested_stages([s.strip() for s in stages.split(",") if s.strip()],
                              {"prosody": [s.strip() for s in prosody.split(",") if s.strip()]})
    launched = launch_extract(cache, df, wanted, config, device, on_error, force, shard, update_manifest,
                              write_block_bytes=write_block_mb << 20)
    if not launched.published:
        _echo_shard(str(launched.shard), launched.failures)
        if not launched.torchrun:
            typer.echo(f"when every shard is done: python cli.py cache merge --cache {cache}")
        return
    _echo_extracted(cache, df.height, wanted, launched.failures, config.state.kind)


def _stored_state_kind(cache: Path) -> str | None:
    """The state kind an existing cache holds: running the same command again keeps it (the default kind may
    have changed since the cache was made)."""
    from cache import CacheReader

    try:
        reader = CacheReader(cache) if cache.is_file() else None
    except InputError:
        return None  # a damaged cache: extract reports it
    from pipeline.models.state_kinds import state_kind

    return state_kind(reader.provenance("state")).name if reader is not None and "state" in reader.stages else None


def _echo_shard(shard: str, failures: dict) -> None:
    for stage, stage_failures in failures.items():
        typer.echo(f"{stage}: shard {shard} committed" + (f", {len(stage_failures)} failed" if stage_failures else ""))


def _echo_extracted(cache: Path, rows: int, wanted: list[str], failures: dict, state_kind: str) -> None:
    for stage, stage_failures in failures.items():
        if stage == "state":
            from pipeline.models.state_kinds import state_kind as kind_of

            how = kind_of(state_kind).label_use
            typer.echo(f"state: {state_kind} dialogue states for every fold or test set ({how})")
            continue
        typer.echo(f"{stage}: {rows - len(stage_failures)} of {rows} utterances"
                   + (f", {len(stage_failures)} failed (see `cache info`)" if stage_failures else ""))
    if not failures:
        typer.echo(f"{cache}: already holds {', '.join(wanted)}; nothing to do")


_RUNS_HELP = "run folders, or folders holding run folders (repeat: --runs a --runs b)"
_BOOTSTRAP_HELP = ("speaker-bootstrap resamples where the design's interval is a bootstrap (one test set), and for "
                   "pooled and per-fold intervals (0 = none; the t interval over folds needs none)")
_SEEDS_HELP = "how many seeds per variant and fold: seeds 0..N-1 (default 1)"
_SEED_HELP = "which seeds instead of --seeds, e.g. 7 or 0,3,7"
_BASELINE_HELP = ("the run label (= variant spec, e.g. shared) the others are compared with (default: the first "
                  "label)")

# Training options default to None: "not given", so TrainConfig's own defaults apply (one place for them).
_HEAD_OPTIONS = dict(
    layer=typer.Option(None, help="speech layer: last (default) | mean | N (0 = CNN output) | weighted (learned mix)"),
    no_speech=typer.Option(False, "--no-speech", help="leave the speech block out"),
    no_prosody=typer.Option(False, "--no-prosody", help="leave the prosody block out"),
    prosody=typer.Option(None, "--prosody", help="feature sets of the prosody block: praat (default) | egemaps | "
                         "praat,egemaps (side by side); the cache must hold them (extract --prosody)"),
    state=typer.Option(False, "--state/--no-state", help="use the dialogue state (off by default: no state kind met the "
                                                        "context target on held-out data; README 'The dialogue state')"),
    speaker_norm=typer.Option(False, "--speaker-norm", help="z-score speech/prosody per speaker (unlabelled stats)"),
    epochs=typer.Option(None, help="at most this many epochs (early stopping on validation CCC; default 60)"),
    lr=typer.Option(None, help="learning rate of shared parts (default 1e-3)"),
    lr_valence=typer.Option(None, help="learning rate of the valence branch (default --lr)"),
    lr_arousal=typer.Option(None, help="learning rate of the arousal branch (default --lr)"),
    loss_weight_valence=typer.Option(None, help="weight of the valence loss (default 1)"),
    loss_weight_arousal=typer.Option(None, help="weight of the arousal loss (default 1)"),
    mse_weight=typer.Option(None, help="add this times the MSE to 1 - CCC (default 0)"),
    batch_size=typer.Option(None, help="utterances per step (default 0 = auto: an eighth of the training rows, "
                                       "64-256)"),
    device=typer.Option("cpu", help="cpu | cuda | auto. Heads are small: a CPU trains a fold in seconds and gives "
                                    "the same numbers on every machine"),
    group_by=typer.Option(None, metavar="COLUMNS", help="also report results per group of these manifest columns, "
                                                        "e.g. age_band (gender is always broken down where filled)"),
)


def _names(text: Optional[str]) -> tuple[str, ...]:
    return tuple(c.strip() for c in (text or "").split(",") if c.strip())


def _seed_list(seeds: Optional[str], seed: Optional[str] = None) -> list[int]:
    """``--seeds N`` (how many: seeds 0..N-1; default 1) or ``--seed 0,3,7`` (which), never both."""
    if seeds is not None and seed is not None:
        raise InputError(f"give --seeds N (how many: seeds 0..N-1) or --seed {seed} (which), not both")
    if seed is not None:
        try:
            chosen = [int(v) for v in seed.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--seed '{seed}': expected seeds such as 0 or 0,3,7") from None
        if not chosen or len(set(chosen)) != len(chosen) or min(chosen) < 0:
            raise InputError(f"--seed '{seed}': give distinct non-negative seeds, e.g. 0,3,7")
        return chosen
    if seeds is None:
        return [0]
    if not seeds.strip().isdigit():
        hint = f"; for these seeds use --seed {seeds}" if "," in seeds else ""
        raise InputError(f"--seeds '{seeds}': expected how many seeds to train (a whole number such as 3: seeds "
                         f"0..N-1){hint}")
    if int(seeds) < 1:
        raise InputError("--seeds must be at least 1")
    return list(range(int(seeds)))


@app.command("train-heads")
def train_heads(
    cache: Path = typer.Option(..., help="a cache with at least the speech or prosody stage"),
    fold: Optional[str] = typer.Option(None, help="test fold K (the others train; validation = held-out training "
                                                  "speakers), or 'all' for a final model trained on every labelled "
                                                  "row (for export); --out is the run folder"),
    folds: Optional[str] = typer.Option(None, help="several test folds instead, e.g. 1-5, 1,3 or all; --out then "
                                                   "holds one run folder per fold (fold1, fold2, ...)"),
    split: Optional[str] = typer.Option(None, help="corpora with predefined partitions (MSP-Podcast, a manifest "
                                                   "with a split column): the test set, e.g. Test1 (trains on train, "
                                                   "stops early on dev); several (Test1,Test2) or all: --out holds "
                                                   "one run folder per test set"),
    out: Path = typer.Option(..., help="run folder to write (with --folds/several --split: the folder of the run "
                                       "folders)"),
    variant: str = typer.Option("separate-attn", help="shared | separate | separate-attn | linear, with "
                                                      "+switches and +setting=value (see ablate)"),
    seeds: Optional[str] = typer.Option(None, metavar="N", help=_SEEDS_HELP),
    seed: Optional[str] = typer.Option(None, metavar="LIST", help=_SEED_HELP),
    label: Optional[str] = typer.Option(None, help="name of the run in tables (default: the variant spec with "
                                                   "every setting that differs from the defaults)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a run already in --out (whole)"),
    layer: Optional[str] = _HEAD_OPTIONS["layer"], no_speech: bool = _HEAD_OPTIONS["no_speech"],
    no_prosody: bool = _HEAD_OPTIONS["no_prosody"], prosody: Optional[str] = _HEAD_OPTIONS["prosody"],
    state: bool = _HEAD_OPTIONS["state"],
    speaker_norm: bool = _HEAD_OPTIONS["speaker_norm"], epochs: Optional[int] = _HEAD_OPTIONS["epochs"],
    lr: Optional[float] = _HEAD_OPTIONS["lr"], lr_valence: Optional[float] = _HEAD_OPTIONS["lr_valence"],
    lr_arousal: Optional[float] = _HEAD_OPTIONS["lr_arousal"],
    loss_weight_valence: Optional[float] = _HEAD_OPTIONS["loss_weight_valence"],
    loss_weight_arousal: Optional[float] = _HEAD_OPTIONS["loss_weight_arousal"],
    mse_weight: Optional[float] = _HEAD_OPTIONS["mse_weight"], batch_size: Optional[int] = _HEAD_OPTIONS["batch_size"],
    device: str = _HEAD_OPTIONS["device"], group_by: Optional[str] = _HEAD_OPTIONS["group_by"],
) -> None:
    """Train valence/arousal heads for one fold (or several) from the cache (never runs the speech model)."""
    import time

    from heads.training.experiment import train_experiments
    from heads.training.variants import config_from_options
    from pipeline.runtime.device import resolve_device

    config = config_from_options(variant, layer, no_speech, no_prosody, prosody, state, speaker_norm, epochs=epochs,
                                 lr=lr, lr_valence=lr_valence, lr_arousal=lr_arousal,
                                 loss_weight_valence=loss_weight_valence, loss_weight_arousal=loss_weight_arousal,
                                 mse_weight=mse_weight, batch_size=batch_size)
    seed_list = _seed_list(seeds, seed)
    started = time.perf_counter()

    def say(run) -> None:  # noqa: ANN001 - heads.training.experiment.TrainedExperiment, printed as it is written
        if run.metrics is None:  # a final model: no test rows
            record = run.record
            report = "the test sets' scores" if record.get("protocol") == "partitions" else "the cross-validated one"
            typer.echo(f"{out}: final model '{record['label']}' trained on {record['split_sizes']['train']} "
                       f"utterances (validation speakers {', '.join(record['validation_speakers'])}); no test rows, "
                       f"so no score: report {report}. Next: python cli.py export --run {out} --out MODEL_DIR")
            return
        m = run.metrics
        typer.echo(f"{run.run_dir}: {run.name}, {label or run.label}, {len(seed_list)} seed(s); "
                   f"test CCC-V {m['ccc_v']:.3f} CCC-A {m['ccc_a']:.3f} MSE-V {m['mse_v']:.3f} MSE-A {m['mse_a']:.3f}")

    trained = train_experiments(cache, config, seed_list, out, fold, folds, split, resolve_device(device), label,
                                overwrite, _names(group_by), on_trained=say)
    if fold == "all":
        return
    partitions = trained[0].record.get("protocol") == "partitions"
    typer.echo(f"{len(trained)} {'test set' if partitions else 'fold'}(s) in {time.perf_counter() - started:.1f} s"
               + (f"; evaluate with: python cli.py eval --runs {out}" if len(trained) > 1 else ""))


@app.command()
def export(
    run: Path = typer.Option(..., help="one run folder (train-heads --out/foldK)"),
    out: Path = typer.Option(..., help="the model folder to write"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing model folder"),
    onnx: bool = typer.Option(False, "--onnx", help="also write the speech model (fp32 and int8) and the heads as "
                              "ONNX, for predict --runtime onnx | onnx-int8 (CPU)"),
    speech_model: Optional[str] = typer.Option(None, help="with --onnx: hub id or folder of the speech model to "
                                               "export (default: the one the run's cache recorded; other weights "
                                               "are refused)"),
) -> None:
    """Write a self-contained model folder (safetensors, statistics, config, model card) for `predict`."""
    from heads.deployment.export import export_model, run_context_projection
    from heads.training.runs import read_run

    if speech_model and not onnx:
        raise InputError("--speech-model is the speech model exported with --onnx: give --onnx too")
    record, _ = read_run(run)
    folder = export_model(run, out, run_context_projection(record), overwrite, onnx, speech_model)
    typer.echo(f"{folder}: model '{record['label']}' (fold {record['fold']}, {len(record['seeds'])} seed(s)); "
               f"use it with: python cli.py predict --model {folder}{' --runtime onnx' if onnx else ''} FILE ...")


@app.command()
def predict(
    files: Optional[list[str]] = typer.Argument(None, metavar="AUDIO", hidden=True, help="audio files to predict"),
    model: Path = typer.Option(..., help="a model folder written by `export`"),
    audio: Optional[list[str]] = typer.Option(None, "--audio", metavar="FILE", help="an audio file (repeat the "
                                              "option, or list the files after the options)"),
    manifest_file: Optional[str] = typer.Option(None, "--manifest", help="CSV/Parquet with a path column (and "
                                                "optionally utt_id, speaker, dialog_id, start_s for context)"),
    out: Optional[Path] = typer.Option(None, help="write the predictions here (.csv or .parquet); default: print"),
    speech_model: Optional[str] = typer.Option(None, help="hub id or folder of the speech model (default: the "
                                               "one the model was trained with; other weights are refused)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    on_error: str = typer.Option("skip", help="skip: report bad files and predict the rest; fail: stop (exit 2)"),
    cache: Optional[Path] = typer.Option(None, help="keep the extracted features in this cache (default: none kept)"),
    clip: bool = typer.Option(False, "--clip", help="limit valence and arousal to the range of the training labels "
                                                    "(the heads are regressions: without it a prediction can leave "
                                                    "the scale)"),
    segment: Optional[float] = typer.Option(None, metavar="SECONDS", help="predict each file as a time series of "
                                            "segments at most this long (4 suits long recordings; default: whole "
                                            "files)"),
    hop: Optional[float] = typer.Option(None, metavar="SECONDS", help="seconds between segment starts (default: "
                                        "half of --segment)"),
    split: Optional[str] = typer.Option(None, help="energy (default): the speech between pauses, long stretches cut "
                                        "into windows; fixed: windows every --hop from the start (see README)"),
    report: Optional[Path] = typer.Option(None, metavar="HTML", help="also write an HTML page plotting the "
                                          "predictions (valence/arousal over time with --segment)"),
    batch_seconds: float = typer.Option(0.0, help="padded audio seconds per speech batch (0 = automatic: 120 on "
                                        "CUDA, 8 on CPU); results do not depend on it"),
    runtime: str = typer.Option("torch", help="torch | onnx | onnx-int8: ONNX Runtime on the CPU, fp32 or with "
                                "int8 matrix products in the speech model (a model folder exported with --onnx; "
                                "refused where export measured it more than 0.01 from torch)"),
) -> None:
    """Valence and arousal of new recordings with an exported model."""
    from heads.deployment.predict import load_model, predict_audio
    from pipeline.corpora.segments import SegmentConfig

    if (hop is not None or split is not None) and segment is None:
        raise InputError("--hop and --split cut files into segments: give --segment SECONDS too")
    segments = None if segment is None else SegmentConfig(segment, segment / 2 if hop is None else hop,
                                                          split or SegmentConfig.split)
    exported = load_model(model)
    frame, failures = predict_audio(exported, [*(audio or []), *(files or [])] or None, manifest_file,
                                    speech_model, device, on_error, str(cache) if cache else None, clip, segments,
                                    batch_seconds, runtime=runtime)
    for failure in failures:
        typer.echo(f"skipped {failure.path}: {failure.reason}", err=True)
    if frame.height == 0:
        raise InputError(f"no file could be predicted ({len(failures)} skipped, each named above)")
    if report is not None:
        from heads.reporting.prediction_report import write_prediction_report

        typer.echo(f"{write_prediction_report(frame, report, exported)}: plots of {frame.height} prediction(s)")
    if out is None:
        shown = ["utt_id", *(["segment", "start_s", "end_s"] if segments else []), "valence", "arousal",
                 *[c for c in ("valence_sd", "arousal_sd") if c in frame.columns]]
        with __import__("polars").Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
            typer.echo(frame.select(shown))
        return
    from core.files import write_atomically

    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, frame.write_parquet if out.suffix == ".parquet" else frame.write_csv)
    typer.echo(f"{out}: {frame.height} prediction(s)" + (f", {len(failures)} file(s) skipped" if failures else ""))


@app.command("eval")
def eval_runs(
    runs: list[Path] = typer.Option(..., "--runs", metavar="PATH", help=_RUNS_HELP),
    out: Path = typer.Option(Path("eval_out"), help="folder for the tables and plots"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="also write the metrics JSON here"),
    baseline: Optional[str] = typer.Option(None, metavar="LABEL", help=_BASELINE_HELP + "; here also a folder "
                                           "of that label's runs, which are then evaluated too"),
    bootstrap: int = typer.Option(2000, help=_BOOTSTRAP_HELP),
) -> None:
    """CCC, Pearson, MSE, RMSE per fold, across folds and pooled, with intervals; differences from a baseline."""
    from heads.evaluation.evaluate import evaluate_runs
    from heads.reporting.tables import write_evaluation
    from heads.training.runs import expand_runs, read_run

    run_dirs = expand_runs(runs)
    baseline_label = baseline
    if baseline is not None and Path(baseline).is_dir():
        baseline_dirs = expand_runs([Path(baseline)])
        labels = {read_run(d)[0]["label"] for d in baseline_dirs}
        if len(labels) != 1:
            raise InputError(f"--baseline {baseline}: expected the runs of one label, found {sorted(labels)}")
        baseline_label = labels.pop()
        run_dirs = baseline_dirs + [d for d in run_dirs if d.resolve() not in {b.resolve() for b in baseline_dirs}]
    elif baseline is not None:  # the baseline's runs first: tables list it first
        labels = {d: read_run(d)[0]["label"] for d in run_dirs}
        run_dirs = sorted(run_dirs, key=lambda d: labels[d] != baseline)
    markdown, results = write_evaluation(evaluate_runs(run_dirs), out, json_path, _stats(bootstrap), baseline_label)
    typer.echo(markdown)
    for label, s in results["runs"].items():
        if s["attention_mean"]:
            a = s["attention_mean"]
            typer.echo(f"{label}: mean attention, valence->prosody {a['attn_valence_prosody']:.2f}, "
                       f"arousal->speech {a['attn_arousal_speech']:.2f}")
    typer.echo(f"tables, metrics.json and plots in {out}/")


def _stats(bootstrap: int):
    from heads.evaluation.stats import StatsConfig

    if bootstrap < 0:
        raise InputError("--bootstrap must be 0 (no intervals) or a number of resamples")
    return StatsConfig(resamples=bootstrap)


@app.command()
def ablate(
    cache: Path = typer.Option(..., help="a cache with the stages the variants need"),
    variants: str = typer.Option("shared,separate,separate-attn,linear",
                                 help="comma-separated specs: variant[+no-speech|+no-prosody|+state|+speaker-norm|"
                                      "+layer=last|mean|weighted|N|+prosody=praat|egemaps|praat/egemaps]; variants: "
                                      "shared, separate, separate-attn, linear"),
    folds: str = typer.Option("all", help="e.g. 1-5, 1,3 or all"),
    split: Optional[str] = typer.Option(None, help="with predefined partitions: test sets, e.g. Test1,Test2 "
                                                   "(default: all)"),
    seeds: Optional[str] = typer.Option(None, metavar="N", help=_SEEDS_HELP),
    seed: Optional[str] = typer.Option(None, metavar="LIST", help=_SEED_HELP),
    out: Path = typer.Option(Path("ablation"), help="folder for runs, tables, plots and report.html"),
    baseline: Optional[str] = typer.Option(None, metavar="LABEL", help=_BASELINE_HELP),
    bootstrap: int = typer.Option(2000, help=_BOOTSTRAP_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace runs already in --out (each whole)"),
    epochs: Optional[int] = _HEAD_OPTIONS["epochs"], lr: Optional[float] = _HEAD_OPTIONS["lr"],
    batch_size: Optional[int] = _HEAD_OPTIONS["batch_size"], device: str = _HEAD_OPTIONS["device"],
    group_by: Optional[str] = _HEAD_OPTIONS["group_by"],
) -> None:
    """All variants x folds x seeds in one process, the cache loaded once; table with intervals, differences
    from the baseline, plots and report."""
    import time

    from cache.reader import CacheReader
    from heads.reporting.report import write_report
    from heads.studies.ablation import run_ablation
    from heads.training.features import corpus_experiments
    from heads.training.train import TrainConfig
    from heads.training.variants import config_from_options, parse_experiments, run_label
    from pipeline.runtime.device import resolve_device

    def build(spec: str) -> TrainConfig:
        return config_from_options(spec, epochs=epochs, lr=lr, batch_size=batch_size)

    configs = [build(spec) for spec in variants.split(",") if spec.strip()]
    if not configs:
        raise InputError("--variants is empty")
    baseline_label = run_label(build(baseline)) if baseline else None
    if baseline_label and baseline_label not in {run_label(c) for c in configs}:
        raise InputError(f"--baseline {baseline} is not among --variants")
    seed_list = _seed_list(seeds, seed)
    stats = _stats(bootstrap)
    fold_list = parse_experiments(folds, split, *corpus_experiments(CacheReader(cache).manifest))
    started = time.perf_counter()
    markdown, evaluation, results = run_ablation(cache, configs, fold_list, seed_list, out,
                                                 resolve_device(device), stats, baseline_label, overwrite,
                                                 _names(group_by))
    report = write_report(evaluation, out / "report.html", title=f"Head ablation on {cache.name}", results=results)
    typer.echo(markdown)
    typer.echo(f"{len(configs)} variants x {len(fold_list)} folds x {len(seed_list)} seed(s) in "
               f"{time.perf_counter() - started:.1f} s; tables and plots in {out}/; report {report}")


@app.command()
def cross(
    caches: str = typer.Option(..., metavar="A.h5,B.h5[,...]", help="caches of two corpora or more, made with the "
                               "same speech model and stages; each trains heads tested on every other, and on itself "
                               "by its own folds"),
    variants: str = typer.Option("shared,separate-attn", help="comma-separated variant specs (as in ablate; no "
                                                              "+state: the state is fitted per corpus)"),
    seeds: Optional[str] = typer.Option(None, metavar="N", help=_SEEDS_HELP),
    seed: Optional[str] = typer.Option(None, metavar="LIST", help=_SEED_HELP),
    out: Path = typer.Option(Path("cross"), help="folder for the runs, the matrix, the tables and report.html"),
    scale: str = typer.Option("common", help="score on the common scale -1..1 (common) or on each test corpus's own "
                                             "scale (test); README 'Does it transfer?'"),
    test_partition: Optional[str] = typer.Option(None, metavar="NAME", help="test a partitioned corpus (train/dev/"
                                                 "test sets, e.g. MSP-Podcast) on this test set only, e.g. Test1; "
                                                 "corpora of k folds are tested on every labelled row"),
    bootstrap: int = typer.Option(2000, help=_BOOTSTRAP_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace runs already in --out (each whole)"),
    epochs: Optional[int] = _HEAD_OPTIONS["epochs"], device: str = _HEAD_OPTIONS["device"],
) -> None:
    """Does it transfer? Train on each corpus, test on every other (and on itself by folds): a matrix with
    intervals, per-group results and a report."""
    import time

    import polars as pl

    from core.files import write_atomically
    from heads.reporting.report import write_cross_report
    from heads.reporting.tables import matrix_markdown
    from heads.studies.cross import matrix, run_cross
    from heads.training.variants import config_from_options
    from pipeline.runtime.device import resolve_device

    paths = [Path(c.strip()) for c in caches.split(",") if c.strip()]
    if len(paths) < 2:
        raise InputError("--caches needs two caches or more, e.g. --caches iemocap.h5,msp.h5")
    configs = [config_from_options(spec, epochs=epochs) for spec in variants.split(",") if spec.strip()]
    seed_list = _seed_list(seeds, seed)
    started = time.perf_counter()
    cells = run_cross(paths, configs, seed_list, out, resolve_device(device), _stats(bootstrap), scale, overwrite,
                      test_partition)
    rows = matrix(cells)
    text = matrix_markdown(rows, test_partition)
    write_atomically(out / "matrix.md", lambda tmp: tmp.write_text(text + "\n"))
    write_atomically(out / "matrix.csv", pl.DataFrame(rows).drop("ccc_v_ci", "ccc_a_ci").write_csv)
    report = write_cross_report(cells, rows, out / "report.html", scale=scale, test_partition=test_partition)
    typer.echo(text)
    typer.echo(f"{len(paths)} corpora x {len(configs)} variants x {len(seed_list)} seed(s) in "
               f"{time.perf_counter() - started:.1f} s; every cell's tables in {out}/<train>-on-<test>/; report {report}")


@app.command()
def report(
    runs: list[Path] = typer.Option(..., "--runs", metavar="PATH", help=_RUNS_HELP),
    out: Path = typer.Option(Path("report.html"), help="the HTML file to write, or a folder (report.html in it)"),
    title: str = typer.Option("Valence / arousal heads", help="report title"),
    baseline: Optional[str] = typer.Option(None, metavar="LABEL", help=_BASELINE_HELP),
    bootstrap: int = typer.Option(2000, help=_BOOTSTRAP_HELP),
) -> None:
    """One self-contained HTML report: table with intervals, differences from a baseline (forest plot),
    per-fold bars, scatter, attention, per speaker and category, layer weights, provenance."""
    from heads.evaluation.evaluate import evaluate_runs
    from heads.reporting.report import write_report
    from heads.training.runs import expand_runs

    evaluation = evaluate_runs(expand_runs(runs))
    if out.is_dir() or not out.suffix:  # --out is a folder elsewhere in the CLI: accept one here too
        out = out / "report.html"
    typer.echo(f"report: {write_report(evaluation, out, title=title, stats=_stats(bootstrap), baseline=baseline)}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), help="folder for the corpus, model, cache, runs and report"),
    corpus: str = typer.Option("auto", help="auto (EmoDB if ../shared/corpora/emodb exists, else synthetic) | emodb | synthetic"),
    seeds: int = typer.Option(1, help="seeds per variant and fold"),
    prosody: str = typer.Option("praat", help="the heads' prosody block: praat | egemaps (openSMILE eGeMAPS v02) | "
                                "praat,egemaps"),
) -> None:
    """The whole pipeline on a built-in corpus: manifest -> extract -> ablate (4 variants x 5 folds, baseline shared) -> report."""
    from demo import run_demo

    run_demo(out, corpus, seeds, prosody)


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise InputError(f"{option} '{text}': expected comma-separated layer indices such as 12,24") from err
    if any(v < 0 for v in values):
        raise InputError(f"{option}: layer indices count from 0 (the CNN output) and cannot be negative")
    return values


def _cache_path(cache_option: Optional[Path], cache_argument: Optional[Path], command: str) -> Path:
    """``--cache PATH`` (as every other command), or the old positional PATH with a deprecation note."""
    if cache_option is not None and cache_argument is not None:
        raise InputError(f"give the cache once: `cache {command} --cache PATH`")
    if cache_argument is not None:
        typer.echo(f"note: `cache {command} PATH` is deprecated; use `cache {command} --cache PATH`", err=True)
    path = cache_option or cache_argument
    if path is None:
        raise InputError(f"`cache {command}` needs --cache PATH")
    return path


@cache_app.command("info")
def cache_info(
    cache: Optional[Path] = typer.Option(None, help="an HDF5 feature cache"),
    cache_argument: Optional[Path] = typer.Argument(None, metavar="PATH", hidden=True, help="deprecated: use --cache"),
    as_json: bool = typer.Option(False, "--json", help="print the full record (provenance, failures) as JSON"),
) -> None:
    """What a cache holds: rows, hours, speakers, folds, labels, stages, undefined prosody features, failures."""
    import json
    from dataclasses import asdict

    from cache.reader import CacheReader
    from cache.summary import cache_summary, format_summary
    from pipeline.stages.registry import stage_facts

    reader = CacheReader(_cache_path(cache, cache_argument, "info"))
    summary = cache_summary(reader, stage_facts(reader))
    if as_json:
        record = {**summary, "config": reader.config, "provenance": {s: reader.provenance(s) for s in reader.stages},
                  "failure_list": [asdict(f) for f in reader.failures]}
        typer.echo(json.dumps(record, indent=2, sort_keys=True, default=str))
    else:
        typer.echo(format_summary(summary, reader.failures))


@cache_app.command("merge")
def cache_merge(
    cache: Optional[Path] = typer.Option(None, help="the cache every `extract --shard i/n` wrote into"),
    cache_argument: Optional[Path] = typer.Argument(None, metavar="PATH", hidden=True, help="deprecated: use --cache"),
    device: str = typer.Option("auto", help="device of the state stage: auto | cpu | cuda"),
) -> None:
    """Publish the shards of `extract --shard i/n` into the cache, then run the state stage."""
    from cache import CacheReader
    from pipeline.launch import merge_shards

    path = _cache_path(cache, cache_argument, "merge")
    failures = merge_shards(path, device)
    reader = CacheReader(path)
    from pipeline.models.state_kinds import state_kind

    kind = state_kind(reader.provenance("state")).name if "state" in reader.stages else ""
    _echo_extracted(path, len(reader), list(failures), failures, kind)


def main() -> None:
    import errno
    import logging

    try:  # typer >= 0.24 carries its own copy of click
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - older typer on plain click
        from click import exceptions as click_errors

    from pipeline.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # 2x faster CPU training of the state updaters; see pipeline/runtime/allocator.py
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        code = app(standalone_mode=False)  # errors come back here, to become one line each
    except InputError as err:
        _fail(str(err))
    except click_errors.NoArgsIsHelpError as err:
        err.show()  # a command given no arguments shows its help
        sys.exit(2)
    except click_errors.ClickException as err:  # usage errors: unknown option, bad value, missing option
        _fail(f"{err.format_message()}{_extra_argument_hint(err.format_message())} "
              f"(see `python cli.py {(_command_name() + ' ') if _command_name() else ''}--help`)")
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except OSError as err:  # a full disk, a read-only folder, a file that vanished: never a traceback
        where = err.filename or "a file being written or read"
        reason = err.strerror or str(err) or type(err).__name__
        hint = (" (committed work is kept; free space or fix permissions and run the same command again)"
                if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, None) else "")
        _fail(f"{where}: {reason}{hint}")
    if code == 130:  # typer turns Ctrl-C into exit code 130, silently
        typer.echo("interrupted: committed work is kept; run the same command again to resume", err=True)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(2)


def _command_name() -> str:
    """The command the user typed (``train-heads``, ``cache info``), or "" when it is not one of ours."""
    words = [a for a in sys.argv[1:3] if not a.startswith("-")]
    if words[:1] == ["cache"]:
        return " ".join(words[:2]) if words[1:2] and words[1] in {c.name for c in cache_app.registered_commands} \
            else "cache"
    known = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    return words[0] if words[:1] and words[0] in known else ""


def _extra_argument_hint(message: str) -> str:
    """For "unexpected extra argument": name the option that takes one value, as the user typed it."""
    if "unexpected extra argument" not in message:
        return ""
    args = sys.argv[1:]
    extra = message.rsplit("(", 1)[-1].rstrip(")").split()
    first = args.index(extra[0]) if extra and extra[0] in args else -1
    option = next((a for a in reversed(args[:first]) if a.startswith("--")), None) if first > 0 else None
    if option is None:
        return ""
    return f"; {option} takes one value: repeat it for each ({option} {args[first - 1]} {option} {extra[0]})"


if __name__ == "__main__":
    main()
