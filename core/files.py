"""Files that appear whole or not at all: written under a temporary name beside the target, then renamed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def temp_for(path: Path) -> Path:
    """The temporary name this process writes ``path`` under before renaming it into place."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` then rename ``tmp`` over ``path``: a failed write (a full disk, a read-only folder) leaves
    the old file or none, never a truncated one, and its ``OSError`` names ``path``. Returns ``path``."""
    path = Path(path)
    tmp = temp_for(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None or str(err.filename) == str(tmp):  # name the file the user asked for
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path
