"""AdamW for the heads: torch's own fused AdamW update (``torch.optim.adamw.adamw``) over parameter groups.

Why not ``torch.optim.AdamW``: adding the first parameter group to any ``torch.optim.Optimizer`` imports
``torch._dynamo`` for its compile hooks, 0.8-0.9 s on this 2-core CPU (about 8 % of a ``train-heads``
command), and the heads never compile. The update is the same function through the same kernel; tests
check the parameters against ``torch.optim.AdamW`` and against the AdamW formula written out in numpy.
"""

from __future__ import annotations

import torch
from torch.optim.adamw import adamw


class AdamW:
    """Decoupled-weight-decay Adam over groups ``{"params": [...], "lr": float, "weight_decay": float}``.

    Like ``torch.optim.AdamW``: parameters without a gradient are skipped (their step count does not
    advance); other keys of a group (e.g. ``"name"``) are kept for the caller.
    """

    def __init__(self, groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param_groups = [{**group, "params": list(group["params"])} for group in groups]
        self.betas, self.eps = betas, eps
        # Per parameter: first and second moment [same shape], step count (a float32 scalar tensor on the
        # parameter's device, as the fused kernel wants).
        self.state = {
            param: (torch.zeros_like(param), torch.zeros_like(param),
                    torch.zeros((), dtype=torch.float32, device=param.device))
            for group in self.param_groups for param in group["params"]
        }

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            exp_avgs, exp_avg_sqs, steps = zip(*(self.state[p] for p in params))
            adamw(params, [p.grad for p in params], list(exp_avgs), list(exp_avg_sqs), [], list(steps),
                  fused=True, amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=group["lr"],
                  weight_decay=group["weight_decay"], eps=self.eps, maximize=False)
