"""The one HDF5 feature cache: its schema (``schema``), paths on disk (``paths``), atomic writer
(``writer``; in-place additions under an undo journal, ``journal``), resumable work parts (``parts``), writer lock
(``lock``) and reader (``reader``)."""

from cache.paths import CachePaths
from cache.reader import CacheReader
from cache.schema import SCHEMA_VERSION, Failure
from cache.writer import add_stage, create_cache

__all__ = ["SCHEMA_VERSION", "CachePaths", "CacheReader", "Failure", "add_stage", "create_cache"]
