"""Shared fixtures: synthetic corpora and tiny, randomly initialised WavLM checkpoints on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from testing.random_wavlm import save_random_wavlm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EMODB = Path(os.environ.get("EMODB_ROOT") or REPO.parent / "shared" / "corpora" / "emodb")
EMODB_MISSING = f"EmoDB is not at {EMODB} (set EMODB_ROOT to its folder to run this check of the real corpus)"


@pytest.fixture(scope="session")
def tiny_wavlm(tmp_path_factory) -> Path:
    """A tiny layer-norm WavLM (like wavlm-large) saved as a checkpoint folder."""
    return save_random_wavlm(tmp_path_factory.mktemp("tiny_wavlm_layer"), "tiny", norm="layer")


@pytest.fixture(scope="session")
def tiny_wavlm_group(tmp_path_factory) -> Path:
    """A tiny group-norm WavLM (like the base models) saved as a checkpoint folder."""
    return save_random_wavlm(tmp_path_factory.mktemp("tiny_wavlm_group"), "tiny", norm="group")
