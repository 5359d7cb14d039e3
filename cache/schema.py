"""Names and layout of the HDF5 cache. Every other module reads and writes through these names.

Layout (N utterances, in manifest order; row i of every dataset is utterance ``manifest/utt_id[i]``)::

    /                          attrs: schema_version, created_utc, config (JSON of the extract config)
    /manifest/<column>         [N]   one dataset per manifest column (strings utf-8, floats NaN for null)
    /speech/pooled             [N, L+1, D] float16   masked mean over valid frames of every hidden state
    /speech/ok                 [N]   bool            row holds a real value (False: see /failures)
    /prosody/values            [N, F] float32        Praat features, NaN where undefined
    /prosody/defined           [N, F] bool           False where the feature is undefined (NaN)
    /prosody/names             [F]   str             feature names (see pipeline/features/prosody.py)
    /prosody/ok                [N]   bool
    /egemaps/{values,defined,names,ok}                openSMILE eGeMAPS v02 functionals, as /prosody (F = 88)
    /state/fold_<k>            [N, d_state] float32  dialogue state for fold k's experiments
    /state/ok                  [N]   bool
    /failures/{utt_id,stage,path,reason}  [M] str    utterances a stage could not process, and why
    /<stage> attrs: provenance (JSON: model id, weights checksum, feature-set version, config,
                    package versions, created_utc)

Datasets are chunked in ~4 MiB blocks of rows (the speech block per hidden state as well, ``(rows, 1, D)``, so
one layer reads 1/(L+1) of it; ``cache.integrity``), and a fold is read with one slice per dataset, never one
HDF5 read per utterance. Numeric datasets carry Fletcher-32 chunk checksums, text datasets and
JSON attributes a SHA-256 digest (``cache.integrity``): a damaged file is an error, never different data.

Every group with a ``provenance`` attribute is a stage. Which stages exist, and what each one's datasets
mean, is the pipeline's stage registry (``pipeline.stages.registry``); this layer knows only the layout.
Groups are kept in the order they were written (HDF5 link creation order).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 2  # 2: explicit null masks, checksums (cache.integrity); 1 is still read
READABLE_SCHEMAS = (1, 2)
NULL_SUFFIX = ".null"  # /manifest/<column>.null [N] bool: the rows where <column> is null (schema 2)
MANIFEST_GROUP = "manifest"
FAILURES_GROUP = "failures"
FAILURE_FIELDS = ("utt_id", "stage", "path", "reason")
PROVENANCE_ATTR = "provenance"
OK_DATASET = "ok"  # per stage: [N] bool


@dataclass(frozen=True)
class Failure:
    """An utterance a stage could not process: its id, the stage, the audio file and the reason."""

    utt_id: str
    stage: str
    path: str
    reason: str
