"""Readers that turn a corpus on disk into the normalised manifest (``pipeline.corpora.manifest``)."""

from pipeline.corpora.emodb import read_emodb
from pipeline.corpora.generic import read_generic_manifest
from pipeline.corpora.iemocap import read_iemocap
from pipeline.corpora.msp_podcast import read_msp_podcast

__all__ = ["check_disjoint", "read_emodb", "read_generic_manifest", "read_iemocap", "read_msp_podcast"]

CORPORA = ("iemocap", "emodb", "msp-podcast", "manifest")
_READERS = {"iemocap": read_iemocap, "emodb": read_emodb, "msp-podcast": read_msp_podcast}  # corpora read from --root


def build_manifest(corpus: str, root: str | None = None, manifest: str | None = None):  # noqa: ANN201
    """``(manifest DataFrame, problems)`` of a corpus: ``iemocap``/``emodb``/``msp-podcast`` read ``root``,
    ``manifest`` reads the user's CSV/Parquet ``manifest``. A corpus with no usable utterance is an ``InputError``."""
    from core.errors import InputError

    if corpus == "manifest":
        if not manifest:
            raise InputError("--corpus manifest needs --manifest FILE")
        df, problems = read_generic_manifest(manifest)
    elif corpus not in CORPORA:
        raise InputError(f"unknown corpus '{corpus}' (choose from {', '.join(CORPORA)})")
    elif not root:
        raise InputError(f"--corpus {corpus} needs --root DIR")
    else:
        df, problems = _READERS[corpus](root)
    if df.height == 0:
        reasons = "; ".join(str(p) for p in problems[:3]) + (f"; ... {len(problems) - 3} more" if len(problems) > 3 else "")
        raise InputError(f"{root or manifest}: no usable utterances in this {corpus} corpus "
                         f"({reasons or 'no labelled audio files found'})")
    return df, problems


ALLOW_SHARED_FLAG = "--allow-shared-speakers"


def check_disjoint(df, allow_shared: bool = False) -> list:  # noqa: ANN001 - polars.DataFrame -> [SharedGroup]
    """Refuse a manifest in which a speaker or a dialogue has rows in two folds or two partitions (an
    ``InputError`` naming the first offenders and the counts), unless ``allow_shared``: then return them (runs
    record them, and every table and report shows a warning)."""
    import logging

    from core.columns import manifest_splits
    from core.errors import InputError
    from core.protocol import describe_shared, experiment_places, shared_groups

    groups = shared_groups(df["speaker"].to_numpy(), df["dialog_id"].to_numpy(),
                           experiment_places(df["fold"].to_numpy(), manifest_splits(df)))
    if groups and not allow_shared:
        raise InputError(f"{describe_shared(groups)}. Test scores would be optimistic; fix the folds or partitions, "
                         f"or pass {ALLOW_SHARED_FLAG} to accept it (every table and report then warns)")
    if groups:
        logging.getLogger(__name__).warning("%s; accepted (%s): tables and reports will warn", describe_shared(groups),
                                            ALLOW_SHARED_FLAG)
    return groups
