"""The normalised utterance table every stage consumes: its columns, validation, ordering and files.

One row per utterance. Ratings use the corpus's own scale (IEMOCAP and our EmoDB mapping: 1-5).
Rows are sorted by ``dialog_id, start_s`` so that a dialogue's turns are contiguous and in time order.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.problems import InputError

# name -> dtype; the order is the column order of every manifest file.
REQUIRED_COLUMNS: dict[str, pl.DataType] = {
    "utt_id": pl.String(),
    "path": pl.String(),  # absolute path of the audio file
    "duration_s": pl.Float64(),  # seconds
    "sample_rate": pl.Int64(),  # Hz, of the file on disk
    "speaker": pl.String(),
    "dialog_id": pl.String(),
    "start_s": pl.Float64(),  # seconds from the start of the dialogue
    "fold": pl.Int64(),
    "valence": pl.Float64(),
    "arousal": pl.Float64(),
}
OPTIONAL_COLUMNS: dict[str, pl.DataType] = {
    "dominance": pl.Float64(),
    "emotion": pl.String(),
}
ALL_COLUMNS = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}


def normalise_manifest(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to the schema, add missing optional columns as nulls, sort by ``dialog_id, start_s``.

    Raises ``InputError`` for a missing required column or a duplicated ``utt_id``.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"manifest lacks required column(s): {', '.join(missing)}")
    for name, dtype in OPTIONAL_COLUMNS.items():
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=dtype).alias(name))
    df = df.select([pl.col(n).cast(t) for n, t in ALL_COLUMNS.items()])
    duplicated = df.filter(pl.col("utt_id").is_duplicated())["utt_id"].unique().to_list()
    if duplicated:
        raise InputError(f"duplicate utt_id in manifest: {', '.join(sorted(duplicated)[:10])}")
    return df.sort(["dialog_id", "start_s", "utt_id"], maintain_order=True)


def write_manifest(df: pl.DataFrame, path: str | Path) -> None:
    """Write a manifest as CSV (``.csv``) or Parquet (``.parquet``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.write_parquet(path)
    else:
        df.write_csv(path)


def read_manifest(path: str | Path) -> pl.DataFrame:
    """Read a manifest written by ``write_manifest`` (already normalised: paths absolute)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest file not found")
    df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=0)
    return normalise_manifest(df)
