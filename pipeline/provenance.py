"""Facts recorded with every cache stage and head run: package versions and time."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from cache.writer import utc_now

__all__ = ["package_versions", "utc_now"]

_PACKAGES = ("torch", "torchaudio", "transformers", "praat-parselmouth", "numpy", "h5py", "polars", "mamba-ssm")


def package_versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found

