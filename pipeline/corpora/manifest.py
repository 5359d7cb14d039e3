"""The normalised utterance table every stage consumes: validation, ordering and files.

One row per utterance, with the columns of ``core.columns``. Rows are sorted by ``dialog_id, start_s`` so
that a dialogue's turns are contiguous and in time order.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.columns import ALL_COLUMNS, OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from core.errors import InputError
from core.files import write_atomically


def normalise_manifest(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to the schema, add missing optional columns as nulls, sort by ``dialog_id, start_s`` (stable).

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
    # Ties in start_s keep the reader's order, never the utt_id's: names can encode the label (EmoDB's do).
    return df.sort(["dialog_id", "start_s"], maintain_order=True)


def read_text_table(path: Path, header: tuple[str, ...]) -> pl.DataFrame:
    """A CSV (or ``.parquet``) label table as text columns; an empty or unreadable file is an ``InputError``
    naming it (``header``: the columns it should start with, for the message)."""
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path).cast(pl.String)
        return pl.read_csv(path, infer_schema_length=0)
    except pl.exceptions.NoDataError:
        raise InputError(f"{path}: the file is empty (expected a header line: {', '.join(header)})") from None
    except (pl.exceptions.PolarsError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        kind = "a Parquet file" if path.suffix == ".parquet" else "a comma-separated table with one value per column"
        raise InputError(f"{path}: cannot be read as {kind} ({first})") from None


def write_manifest(df: pl.DataFrame, path: str | Path) -> None:
    """Write a manifest as CSV (``.csv``) or Parquet (``.parquet``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, df.write_parquet if path.suffix == ".parquet" else df.write_csv)


def read_manifest(path: str | Path) -> pl.DataFrame:
    """Read a manifest written by ``write_manifest`` (already normalised: paths absolute)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest file not found")
    df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=0)
    return normalise_manifest(df)
