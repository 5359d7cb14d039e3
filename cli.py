"""Command line of the speech-emotion feature cache: thin wiring over ``pipeline``, ``cache`` and ``heads``.

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

from pipeline.problems import InputError, report_problems  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Extract speech, prosody and dialogue-state features once; train valence/arousal heads in seconds.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect feature caches.")
app.add_typer(cache_app, name="cache")


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)


warnings.showwarning = _warn_line


@app.command()
def manifest(
    corpus: str = typer.Option(..., help="iemocap | emodb | manifest"),
    root: Optional[str] = typer.Option(None, help="corpus folder (IEMOCAP_full_release/ or EmoDB)"),
    manifest_file: Optional[str] = typer.Option(None, "--manifest", help="your CSV/Parquet manifest (--corpus manifest)"),
    out: Path = typer.Option(..., help="where to write the normalised manifest (.csv or .parquet)"),
    strict: bool = typer.Option(False, help="fail on the first problem instead of skipping the utterance"),
) -> None:
    """Write the normalised utterance table of a corpus."""
    from pipeline.corpora import build_manifest
    from pipeline.manifest import write_manifest

    df, problems = build_manifest(corpus, root, manifest_file)
    report_problems(problems, strict, what=f"corpus {corpus}")
    write_manifest(df, out)
    typer.echo(f"{out}: {df.height} utterances, {df['speaker'].n_unique()} speakers, "
               f"{df['fold'].n_unique()} folds, {df['dialog_id'].n_unique()} dialogues"
               + (f" ({len(problems)} skipped)" if problems else ""))


@app.command()
def extract(
    corpus: str = typer.Option(..., help="iemocap | emodb | manifest"),
    cache: Path = typer.Option(..., help="the HDF5 cache to create or complete"),
    root: Optional[str] = typer.Option(None, help="corpus folder"),
    manifest_file: Optional[str] = typer.Option(None, "--manifest", help="your CSV/Parquet manifest"),
    speech_model: str = typer.Option("microsoft/wavlm-large", help="hub id or local folder of a WavLM-family model"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    stages: str = typer.Option("speech,prosody", help="comma-separated stages to run if the cache lacks them"),
    on_error: str = typer.Option("skip", help="skip: record bad files in the failures table; fail: stop (exit 2)"),
    batch_seconds: float = typer.Option(120.0, help="padded audio seconds per speech batch"),
    window_s: float = typer.Option(30.0, help="longer utterances are embedded in windows of this many seconds"),
    precision: str = typer.Option("auto", help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16"),
    workers: int = typer.Option(0, help="prosody processes (0 = all cores)"),
    loader_workers: int = typer.Option(1, help="DataLoader processes decoding audio for the speech stage"),
    strict: bool = typer.Option(False, help="fail on manifest problems instead of skipping utterances"),
    force: bool = typer.Option(False, help="replace an existing cache made with other settings"),
) -> None:
    """Run the extraction stages the cache does not hold yet (resumable)."""
    from pipeline.corpora import build_manifest
    from pipeline.extract import ExtractConfig, extract as run_extract
    from pipeline.prosody_stage import ProsodyConfig
    from pipeline.speech_stage import SpeechConfig

    df, problems = build_manifest(corpus, root, manifest_file)
    report_problems(problems, strict, what=f"corpus {corpus}")
    config = ExtractConfig(
        speech=SpeechConfig(model=speech_model, batch_seconds=batch_seconds, window_s=window_s,
                            precision=precision, num_workers=loader_workers),
        prosody=ProsodyConfig(workers=workers),
    )
    wanted = [s.strip() for s in stages.split(",") if s.strip()]
    failures = run_extract(cache, df, wanted, config, device=device, on_error=on_error, force=force)
    for stage, stage_failures in failures.items():
        typer.echo(f"{stage}: {df.height - len(stage_failures)} of {df.height} utterances"
                   + (f", {len(stage_failures)} failed (see `cache info`)" if stage_failures else ""))
    if not failures:
        typer.echo(f"{cache}: already holds {', '.join(wanted)}; nothing to do")


@cache_app.command("info")
def cache_info(cache: Path = typer.Argument(..., help="an HDF5 feature cache")) -> None:
    """What a cache holds: rows, stages, shapes, provenance and failures."""
    import json

    from cache.reader import CacheReader

    reader = CacheReader(cache)
    m = reader.manifest
    typer.echo(f"{cache}: {len(reader)} utterances, {m['speaker'].n_unique()} speakers, "
               f"{m['fold'].n_unique()} folds, {m['dialog_id'].n_unique()} dialogues; created {reader.created_utc}")
    for stage in reader.stages:
        ok = reader.read(stage, "ok")
        shapes = reader.dataset_shapes(stage)
        typer.echo(f"[{stage}] {int(ok.sum())} of {len(ok)} rows ok; "
                   + ", ".join(f"{k} {v}" for k, v in shapes.items()))
        typer.echo("  provenance: " + json.dumps(reader.provenance(stage), sort_keys=True))
    if reader.failures:
        typer.echo(f"failures ({len(reader.failures)}):")
        for f in reader.failures[:50]:
            typer.echo(f"  [{f.stage}] {f.utt_id} {f.path}: {f.reason}")


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        app()
    except InputError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: committed work is kept; run the same command again to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
