"""The columns of the normalised manifest (one row per utterance), shared by corpora, cache and heads.

Ratings use the corpus's own scale (IEMOCAP and our EmoDB mapping: 1-5; MSP-Podcast: 1-7), declared per row in
``scale_low`` / ``scale_high`` (the readers fill them; a user's manifest may give them): ``core.labels`` maps
ratings of different corpora onto one common scale for cross-corpus work.

A corpus is evaluated either by k folds (``fold`` 1..k, leave one out) or by predefined partitions (``split``:
``train``, ``dev`` and named test sets). With partitions, ``fold`` numbers the test sets (1 = the first test
set in name order, see ``core.protocol.partition_folds``) and is 0 on train and dev rows, so every fold-keyed
record (runs, predictions, states) also serves partitions. The order of the dicts is the
column order of every manifest file and of the cache's ``/manifest`` group.
"""

from __future__ import annotations

import numpy as np
import polars as pl

# name -> dtype
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
    "split": pl.String(),  # predefined partitions: "train", "dev" or a test set's name; null for fold corpora
    "gender": pl.String(),  # "female" / "male" where the corpus says; per-group results (heads.evaluation.evaluate)
    "scale_low": pl.Float64(),  # the rating scale's ends (valence and arousal share one scale)
    "scale_high": pl.Float64(),
}
ALL_COLUMNS = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
TARGETS = ("valence", "arousal")  # what the heads predict, in this order


def manifest_splits(manifest: pl.DataFrame) -> np.ndarray | None:
    """``[N]`` str: the partition of every row of a corpus with predefined partitions; None for a k-fold
    corpus (its ``split`` column is all null)."""
    return None if manifest["split"].null_count() == manifest.height else manifest["split"].to_numpy()
