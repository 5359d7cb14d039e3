"""Which torch device a command runs on."""

from __future__ import annotations

import os

import torch

from core.errors import InputError


def resolve_device(device: str) -> torch.device:
    """``auto`` = CUDA when available (the local rank's GPU under torchrun), else CPU."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"--device {device}: this tool runs on cpu or cuda (use auto, cpu, cuda or cuda:N)")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here (use --device cpu or auto)")
    return resolved
