"""One writer per cache: an exclusive lock file naming its owner (pid, host, start time).

Readers never take it: the cache file is only ever replaced atomically, so a reader sees the old or the
new file, whole. A lock left by a dead process on this host is detected and cleared.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from cache.paths import CachePaths, temp_for
from core.errors import InputError
from core.processes import process_alive
from core.provenance import utc_now


class CacheLock:
    """``with CacheLock(cache_path): ...`` holds ``<cache>.lock`` (or, with ``shard_tag``, the lock of one
    job-array shard) or raises ``InputError`` at once."""

    def __init__(self, cache_path: str | Path, shard_tag: str | None = None):
        paths = CachePaths(cache_path)
        self.cache = paths.file
        self.path = paths.shard_lock(shard_tag) if shard_tag else paths.lock
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}

    def _read_owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def __enter__(self) -> "CacheLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_for(self.path)
        tmp.write_text(json.dumps(self.owner))
        try:
            for _ in range(2):
                try:
                    os.link(tmp, self.path)  # atomic: fails if the lock exists, never leaves it half-written
                    return self
                except FileExistsError:
                    other = self._read_owner()
                    stale = other is not None and other.get("host") == self.owner["host"] and not process_alive(int(other["pid"]))
                    if not stale:
                        who = f"pid {other['pid']} on {other['host']} since {other['since']}" if other else "an unknown process"
                        raise InputError(f"{self.cache}: another extract is writing this cache ({who}); wait for it "
                                         f"or use another --cache (if that process is gone, delete {self.path})") from None
                    self.path.unlink(missing_ok=True)  # its owner died: clear it and try once more
            raise InputError(f"{self.cache}: could not take the writer lock {self.path}")
        finally:
            tmp.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        if self._read_owner() == self.owner:
            self.path.unlink(missing_ok=True)
