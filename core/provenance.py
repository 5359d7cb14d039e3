"""Facts recorded with every cache stage and head run: package versions and time."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

_PACKAGES = ("torch", "torchaudio", "transformers", "praat-parselmouth", "numpy", "h5py", "polars", "mamba-ssm")


def utc_now() -> str:
    """The current time as ISO 8601 in UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour the results depend on."""
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def code_version() -> str:
    """This code's git commit (``+dirty`` with uncommitted changes) where it runs from a clone, else the
    installed package version."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"git {commit}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        try:
            return f"speech-emotion-cache {version('speech-emotion-cache')}"
        except PackageNotFoundError:
            return "unknown"


def table_fingerprint(rows: list[tuple]) -> str:
    """sha256 (first 16 hex digits) of a table's rows in order: the same corpus manifest gives the same value."""
    import hashlib

    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr(row).encode())
    return digest.hexdigest()[:16]
