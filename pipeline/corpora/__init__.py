"""Readers that turn a corpus on disk into the normalised manifest (``pipeline.corpora.manifest``)."""

from pipeline.corpora.emodb import read_emodb
from pipeline.corpora.generic import read_generic_manifest
from pipeline.corpora.iemocap import read_iemocap

__all__ = ["read_emodb", "read_generic_manifest", "read_iemocap"]

CORPORA = ("iemocap", "emodb", "manifest")


def build_manifest(corpus: str, root: str | None = None, manifest: str | None = None):  # noqa: ANN201
    """``(manifest DataFrame, problems)`` of a corpus: ``iemocap``/``emodb`` read ``root``, ``manifest``
    reads the user's CSV/Parquet ``manifest``."""
    from core.errors import InputError

    if corpus == "manifest":
        if not manifest:
            raise InputError("--corpus manifest needs --manifest FILE")
        return read_generic_manifest(manifest)
    if corpus not in CORPORA:
        raise InputError(f"unknown corpus '{corpus}' (choose from {', '.join(CORPORA)})")
    if not root:
        raise InputError(f"--corpus {corpus} needs --root DIR")
    return read_iemocap(root) if corpus == "iemocap" else read_emodb(root)
