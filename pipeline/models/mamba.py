"""The Mamba block (Gu & Dao 2023), parameterised as ``mamba_ssm.modules.mamba_simple.Mamba``.

``selective_scan`` has two implementations of one function: mamba-ssm's fused CUDA kernel when the package
is installed and the tensors are on CUDA, else the reference recurrence in PyTorch below (any device).

The recurrence, per channel d and state n, with zero-order-hold A and Euler B as in Mamba::

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t
    y_t = <C_t, h_t> + D * x_t
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

try:  # optional CUDA extra: pip install '.[cuda]'
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan
except ImportError:  # the reference path computes the same function
    _cuda_selective_scan = None


def kernel_available(device: torch.device) -> bool:
    return _cuda_selective_scan is not None and device.type == "cuda"


def selective_scan_reference(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Causal selective scan, step by step in time.

    ``x``, ``dt``: [batch, T, d_inner] (dt already positive); ``A``: [d_inner, n] (negative);
    ``B``, ``C``: [batch, T, n]; ``D``: [d_inner]. Returns ``y`` [batch, T, d_inner].
    """
    batch, steps, d_inner = x.shape
    decay = torch.exp(dt.unsqueeze(-1) * A)  # [b, T, d, n]
    drive = dt.unsqueeze(-1) * B.unsqueeze(2) * x.unsqueeze(-1)  # [b, T, d, n]
    h = x.new_zeros(batch, d_inner, A.shape[1])
    ys = []
    # unbind, not [:, t]: the backward of t slices would each allocate a full [b, T, d, n] gradient.
    for decay_t, drive_t, c_t in zip(decay.unbind(1), drive.unbind(1), C.unbind(1)):
        h = decay_t * h + drive_t
        ys.append((h * c_t.unsqueeze(1)).sum(-1))
    return torch.stack(ys, 1) + x * D


def selective_scan(x, dt, A, B, C, D):  # noqa: ANN001, ANN201 - same shapes as the reference
    """Fused CUDA kernel when available, else the PyTorch reference. Same inputs, same function."""
    if kernel_available(x.device):
        y = _cuda_selective_scan(x.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous(), A.contiguous(),
                                 B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), D.float())
        return y.transpose(1, 2)
    return selective_scan_reference(x, dt, A, B, C, D)


class Mamba(nn.Module):
    """One Mamba mixer: ``[batch, T, d_model] -> [batch, T, d_model]``, causal in T."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_min: float = 0.001, dt_max: float = 0.1):
        super().__init__()
        d_inner = expand * d_model
        self.d_inner, self.dt_rank = d_inner, math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # S4D-real initialisation of A and Mamba's dt initialisation (inverse softplus of a log-uniform dt).
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        steps = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :steps].transpose(1, 2))  # causal: left padding only
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.A_log.shape[1], self.A_log.shape[1]], dim=-1)
        dt = F.softplus(self.dt_proj(dt))
        y = selective_scan(x, dt, -torch.exp(self.A_log.float()), B, C, self.D)
        return self.out_proj(y * F.silu(z))
