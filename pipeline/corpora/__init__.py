"""Readers that turn a corpus on disk into the normalised manifest (``pipeline.corpora.manifest``)."""

from pipeline.corpora.emodb import read_emodb
from pipeline.corpora.generic import read_generic_manifest
from pipeline.corpora.iemocap import read_iemocap
from pipeline.corpora.msp_podcast import read_msp_podcast

__all__ = ["read_emodb", "read_generic_manifest", "read_iemocap", "read_msp_podcast"]

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
