"""The heads' AdamW: torch's fused update over parameter groups, checked against independent references."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from heads.training.optim import AdamW


def _groups(seed: int) -> list[dict]:
    torch.manual_seed(seed)
    a, b, frozen = torch.randn(5, 3), torch.randn(4), torch.randn(2)
    return [{"params": [a.requires_grad_()], "lr": 1e-2, "weight_decay": 0.1, "name": "a"},
            {"params": [b.requires_grad_(), frozen.requires_grad_()], "lr": 3e-3, "weight_decay": 0.0}]


def _run(optimizer, groups: list[dict], steps: int) -> list[torch.Tensor]:  # noqa: ANN001
    torch.manual_seed(1)
    a, (b, _frozen) = groups[0]["params"][0], groups[1]["params"]
    for _ in range(steps):
        optimizer.zero_grad()
        (a.square().sum() * torch.rand(()) + (b ** 3).sum()).backward()  # `frozen` gets no gradient
        optimizer.step()
    return [p.detach().clone() for g in groups for p in g["params"]]


def test_matches_torch_optim_adamw_with_per_group_learning_rates_and_decay():
    ours, theirs = _groups(0), _groups(0)
    got = _run(AdamW(ours), ours, steps=7)
    expected = _run(torch.optim.AdamW(theirs, foreach=False), theirs, steps=7)  # the single-tensor loop
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)


def test_follows_the_adamw_formula_written_out():
    param = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    lr, wd, (b1, b2), eps = 0.05, 0.2, (0.9, 0.999), 1e-8
    optimizer = AdamW([{"params": [param], "lr": lr, "weight_decay": wd}])
    x, m, v = param.detach().numpy().copy(), np.zeros(3), np.zeros(3)
    for t in range(1, 6):
        optimizer.zero_grad()
        (param ** 4).sum().backward()
        g = 4 * x ** 3
        optimizer.step()
        x = x * (1 - lr * wd)  # decoupled weight decay
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        x = x - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(param.detach().numpy(), x, rtol=1e-12)


def test_parameters_without_a_gradient_stay_put():
    groups = _groups(0)
    frozen_before = groups[1]["params"][1].detach().clone()
    _run(AdamW(groups), groups, steps=3)
    assert torch.equal(groups[1]["params"][1], frozen_before)


def test_training_a_head_does_not_import_torch_dynamo():
    # The reason this module exists: torch.optim.Optimizer imports torch._dynamo (~0.9 s) on first use.
    code = ("import sys, torch\nfrom heads.training.optim import AdamW\n"
            "p = torch.nn.Parameter(torch.ones(3)); o = AdamW([{'params': [p], 'lr': 0.1, 'weight_decay': 0.0}])\n"
            "p.sum().backward(); o.step()\nprint('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
