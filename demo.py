"""The built-in demo (``python cli.py demo``): a corpus with no download, a small random WavLM, every
stage, the ablation of four head variants, a report, and an exported model predicting files it never saw.
An application on top of the packages, like cli.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import polars as pl
import typer

from core.errors import InputError
from heads.deployment.export import export_model, run_context_projection
from heads.deployment.predict import load_model
from heads.reporting.report import write_report
from heads.studies.ablation import run_ablation
from heads.training.runs import read_run
from heads.training.train import TrainConfig
from heads.training.variants import parse_variant, prosody_sets
from pipeline.corpora import build_manifest
from pipeline.corpora.synthetic import write_synthetic_corpus
from pipeline.extract import ExtractConfig, extract
from pipeline.stages.registry import requested_stages
from pipeline.stages.speech import SpeechConfig
from testing.random_wavlm import save_random_wavlm

SHARED_EMODB = Path(os.environ.get("EMODB_ROOT") or Path(__file__).resolve().parents[1] / "shared" / "corpora" / "emodb")
UNTRAINED_NOTE = ("The speech model is a tiny, randomly initialised WavLM built on this machine: its embeddings are "
                  "untrained, so speech-only results mean nothing. The pipeline, caching, dialogue states and head "
                  "training are the real ones; replace --speech-model with microsoft/wavlm-large for real results.")


def run_demo(out: str | Path, corpus: str = "auto", seeds: int = 1, prosody: str = "praat") -> Path:
    """The demo into ``out``; ``prosody``: the feature sets of the heads' prosody block (``praat``, ``egemaps`` or
    ``praat,egemaps``; the dialogue state always reads Praat's)."""
    out = Path(out)
    sets = prosody_sets(prosody.replace(",", "/"), "--prosody")
    stages = requested_stages(["speech", "prosody"], {"prosody": list(dict.fromkeys(["praat", *sets]))})
    switch = "" if sets == ("praat",) else f"+prosody={'/'.join(sets)}"
    started = time.perf_counter()
    why = "asked for with --corpus"
    if corpus == "auto":
        corpus = "emodb" if SHARED_EMODB.is_dir() else "synthetic"
        why = (f"found at {SHARED_EMODB}" if corpus == "emodb" else
               f"EmoDB was not found at {SHARED_EMODB} (set EMODB_ROOT to its folder to use it)")
    if corpus == "emodb":
        if not SHARED_EMODB.is_dir():
            raise InputError(f"{SHARED_EMODB}: EmoDB is not here; set EMODB_ROOT to its folder or use --corpus synthetic")
        manifest, problems = build_manifest("emodb", root=str(SHARED_EMODB))
        description = "EmoDB: real utterances, categories mapped to valence/arousal"
    elif corpus == "synthetic":
        path = write_synthetic_corpus(out / "synthetic_corpus")
        manifest, problems = build_manifest("manifest", manifest=str(path))
        description = "synthetic dialogues (numpy glottal-pulse speech whose prosody encodes valence and arousal)"
    else:
        raise InputError(f"--corpus must be auto, emodb or synthetic, not {corpus}")
    typer.echo(f"[1/6] corpus: {description} ({why}); {manifest.height} utterances, "
               f"{manifest['fold'].n_unique()} folds")
    typer.echo(f"      NOTE: {UNTRAINED_NOTE}")
    model_dir = out / "tiny_wavlm"
    if not (model_dir / "config.json").is_file():
        save_random_wavlm(model_dir, "small")
    cache = out / f"{corpus}.h5"
    typer.echo(f"[2/6] extract {', '.join(stages)}, dialogue states -> {cache}")
    extract(cache, manifest, [*stages, "state"], ExtractConfig(speech=SpeechConfig(model=str(model_dir))),
            device="auto")
    typer.echo(f"[3/6] ablate shared / separate / separate-attn / linear on 5 folds (baseline: shared; prosody "
               f"block: {' and '.join(sets)})")
    configs = [parse_variant(v + switch, TrainConfig()) for v in ("shared", "separate", "separate-attn", "linear")]
    markdown, evaluation, results = run_ablation(cache, configs, sorted(set(manifest["fold"].to_list())),
                                                 list(range(seeds)), out / "ablation", baseline="shared" + switch,
                                                 overwrite=True)  # the demo's own folder: a re-run replaces it
    report = write_report(evaluation, out / "report.html", title=f"Demo: {corpus}", notes=UNTRAINED_NOTE,
                          results=results)
    typer.echo("[4/6] results:\n" + markdown)
    typer.echo(f"report: {report}  (tables, metrics.json and plots in {out / 'ablation'}/)")
    transfer(cache, corpus, model_dir, out, stages, switch)
    predict_unseen(manifest, out, next(label for label in evaluation.records if label.startswith("separate-attn")))
    typer.echo(f"{time.perf_counter() - started:.0f} s in all")
    return report


def transfer(cache: Path, corpus: str, model_dir: Path, out: Path, stages: list[str], switch: str = "") -> None:
    """Does it transfer? A second corpus, a small synthetic one rated 1-7 (other speakers, other scale), and the
    2 x 2 matrix of separate-attn trained on each and tested on each (``heads.studies.cross``)."""
    from heads.reporting.report import write_cross_report
    from heads.reporting.tables import matrix_markdown
    from heads.studies.cross import matrix, run_cross

    path = write_synthetic_corpus(out / "second_corpus", dialogs_per_fold=2, turns=8, seed=7, scale=(1.0, 7.0),
                                  name="rated7_")
    second, _ = build_manifest("manifest", manifest=str(path))
    other = out / "rated7.h5"
    extract(other, second, stages, ExtractConfig(speech=SpeechConfig(model=str(model_dir))), device="auto")
    typer.echo(f"[5/6] does it transfer? {corpus} (1-5) and a second, synthetic corpus rated 1-7 ({second.height} "
               "utterances): separate-attn trained on each, tested on each, scores on the common scale -1..1")
    cells = run_cross([cache, other], [parse_variant("separate-attn" + switch, TrainConfig())], [0], out / "cross",
                      overwrite=True)
    rows = matrix(cells)
    typer.echo(matrix_markdown(rows))
    typer.echo(f"report: {write_cross_report(cells, rows, out / 'cross' / 'report.html')}")


def predict_unseen(manifest: pl.DataFrame, out: Path, label: str) -> None:
    """Export the fold-1 model of run ``label`` and predict three fold-1 files: its test fold, never trained on."""
    run_dir = out / "ablation" / label / "fold1"
    model_dir = export_model(run_dir, out / "model", run_context_projection(read_run(run_dir)[0]), overwrite=True)
    files = manifest.filter(pl.col("fold") == 1).head(3)
    listing = out / "unseen.csv"
    files.select("utt_id", "path", "speaker", "dialog_id", "start_s").write_csv(listing)
    typer.echo(f"[6/6] predict 3 files of fold 1 (never trained on) with the exported model {model_dir}/:")
    predicted = load_model(model_dir).predict(manifest=str(listing), device="cpu")
    shown = predicted.join(files.select("utt_id", "valence", "arousal"), on="utt_id", suffix="_true")
    for row in shown.iter_rows(named=True):
        typer.echo(f"      {row['utt_id']}: valence {row['valence']:.2f} (label {row['valence_true']:.2f}), "
                   f"arousal {row['arousal']:.2f} (label {row['arousal_true']:.2f})")
    predict_long_recording(manifest.filter(pl.col("fold") == 1), out, model_dir)


def predict_long_recording(files: pl.DataFrame, out: Path, model_dir: Path, count: int = 12) -> None:
    """Join ``count`` files (a seeded random choice: never the names' order, which can encode the emotion) with
    pauses of 0.5-1.5 s into one recording and predict it as a time series of segments (``predict --segment``)."""
    import numpy as np
    import soundfile

    from heads.deployment.predict import predict_audio
    from heads.reporting.prediction_report import write_prediction_report
    from pipeline.corpora.segments import SegmentConfig
    from pipeline.features.audio import load_audio

    rng = np.random.default_rng(0)
    chosen = files[rng.permutation(files.height)[:count].tolist()]
    pieces, spans, t = [], [], 0.0
    for row in chosen.iter_rows(named=True):
        wave = load_audio(row["path"], 16000)
        pause = rng.normal(0, 1e-3, int(rng.uniform(0.5, 1.5) * 16000)).astype(np.float32)
        pieces += [pause, wave]
        t += len(pause) / 16000
        spans.append((t, t + len(wave) / 16000, row))
        t += len(wave) / 16000
    recording = out / "long_recording.wav"
    soundfile.write(recording, np.concatenate(pieces), 16000, subtype="FLOAT")
    model = load_model(model_dir)
    frame, _ = predict_audio(model, [str(recording)], None, None, "cpu", segments=SegmentConfig())
    report = write_prediction_report(frame, out / "long_recording.html", model)
    typer.echo(f"      and one {t:.0f}-second recording of {count} of those files joined by pauses, as segments "
               f"(predict {recording} --segment 4): {frame.height} segments, the first 5:")
    for row in frame.head(5).iter_rows(named=True):
        inside = [r for start, end, r in spans if start < row["end_s"] and end > row["start_s"]]
        label = ", ".join(f"{r['utt_id']} labels {r['valence']:.2f}/{r['arousal']:.2f}" for r in inside)
        typer.echo(f"      {row['start_s']:5.1f}-{row['end_s']:5.1f} s: valence {row['valence']:.2f}, arousal "
                   f"{row['arousal']:.2f}  ({label})")
    typer.echo(f"      plot over time: {report}")
