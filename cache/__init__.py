"""The one HDF5 feature cache: its schema (``schema``), atomic writer (``writer``), resumable work parts
(``parts``) and fold reader (``reader``)."""

from cache.reader import CacheReader, FoldSplit
from cache.schema import SCHEMA_VERSION, Failure
from cache.writer import add_stage, create_cache

__all__ = ["SCHEMA_VERSION", "CacheReader", "Failure", "FoldSplit", "add_stage", "create_cache"]
