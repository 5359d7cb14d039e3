"""The dialogue-state updater: a causal Mamba over a dialogue's utterances, then an EMA.

    u_t = LayerNorm(W_out . Mamba(W_in . z)_t)        increments, [batch, T, d_state]
    c_t = a * c_{t-1} + (1 - a) * u_t,  c_0 = 0      context, [batch, T, d_state]

``z_t`` is the utterance's cached speech vector concatenated with its standardised prosody vector. An
auxiliary head predicts valence and arousal from ``[W_in z_t, c_t]``; it exists only to train the
updater (so the state carries emotional context) and is not stored.

Also the settings of the whole state stage (``StateConfig``, every kind's; stored with the cache), so that the
stage, the updater's training (``pipeline.models.state_updater``) and the kinds (``pipeline.models.state_kinds``)
share them without importing the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import nn

from pipeline.models.mamba import Mamba


@dataclass(frozen=True)
class StateModelConfig:
    d_model: int = 256
    n_layers: int = 2
    d_state: int = 64  # width of the context vector c_t
    ssm_state: int = 16  # Mamba's per-channel SSM state size
    ema: float = 0.8  # a
    learn_ema: bool = False  # learn a, clipped to [0.6, 0.95]
    dropout: float = 0.1
    input_dropout: float = 0.0  # dropout on the standardised inputs z (training only)


LEGACY_KIND = "mamba"  # the kind of a state stored before kinds had names (its provenance and config lack "kind")


@dataclass(frozen=True)
class StateConfig:
    """Settings of the state stage (stored with the cache)."""

    # ema-predictions | ema-features | ema-features-speaker | mamba (``pipeline.models.state_kinds``);
    # ema-predictions measured best (README, "The dialogue state"); it is cross-fitted, so it needs 3 folds or
    # partitions (``pipeline.models.state_kinds.default_kind``)
    kind: str = "ema-predictions"
    model: StateModelConfig = field(default_factory=StateModelConfig)  # its ``ema`` serves every kind
    grouping: str = "dialog"  # sequences: dialog_id | speaker | each utterance alone
    speech_layer: str = "mean"  # z's speech part: mean | last | N (pipeline.features.layers)
    context_components: int = 16  # ema kinds: principal components kept of the speech block
    context_decay: float = 0.5  # ema kinds: weight a of a turn one step further back (bench_context.py)
    epochs: int = 20  # mamba: at most this many epochs, each visiting every training sequence as a random crop
    window: int = 32  # crop length (utterances) for training; inference runs whole sequences
    burn_in: int = 4  # crop positions (after a cold start) left out of the loss
    batch_size: int = 32  # crops per step
    lr: float = 2e-3
    weight_decay: float = 1e-2
    val_fraction: float = 0.2  # share of each updater's training rows held out (whole dialogue groups) to stop early
    patience: int = 3  # epochs without a better validation CCC before an updater stops (with val_fraction)
    seed: int = 0


def state_config_from_dict(stored: dict) -> StateConfig:
    """The ``StateConfig`` stored with a cache (``asdict`` form) back as a config; unknown keys are ignored, and a
    config stored before kinds had names is of the ``LEGACY_KIND``."""
    names = {f.name for f in fields(StateConfig)}
    model = StateModelConfig(**{k: v for k, v in stored.get("model", {}).items()
                                if k in {f.name for f in fields(StateModelConfig)}})
    values = {k: v for k, v in stored.items() if k in names and k != "model"}
    return StateConfig(**{"kind": LEGACY_KIND, **values}, model=model)


def ema_weights(a: torch.Tensor, steps: int) -> torch.Tensor:
    """[T, T] lower-triangular matrix with ``W[t, s] = (1 - a) * a**(t - s)`` for s <= t, so ``c = W @ u``."""
    t = torch.arange(steps, device=a.device)
    lag = (t[:, None] - t[None, :]).clamp(min=0).to(a.dtype)
    return torch.where(t[:, None] >= t[None, :], (1 - a) * a**lag, torch.zeros((), dtype=a.dtype, device=a.device))


class DialogueStateUpdater(nn.Module):
    def __init__(self, d_input: int, config: StateModelConfig):
        super().__init__()
        self.config = config
        self.w_in = nn.Linear(d_input, config.d_model)
        self.mamba = nn.ModuleList(Mamba(config.d_model, config.ssm_state) for _ in range(config.n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(config.d_model) for _ in range(config.n_layers))
        self.w_out = nn.Linear(config.d_model, config.d_state)
        self.out_norm = nn.LayerNorm(config.d_state)
        self.dropout = nn.Dropout(config.dropout)
        # a = 0.6 + 0.35 * sigmoid(theta) keeps a learned EMA inside [0.6, 0.95]; theta starts at config.ema.
        start = min(max((config.ema - 0.6) / 0.35, 1e-4), 1 - 1e-4)
        self.ema_theta = nn.Parameter(torch.logit(torch.tensor(start)), requires_grad=config.learn_ema)
        self.aux = nn.Sequential(nn.Linear(config.d_model + config.d_state, 64), nn.ReLU(), nn.Linear(64, 2))

    def ema(self) -> torch.Tensor:
        if not self.config.learn_ema:
            return torch.tensor(self.config.ema)
        return 0.6 + 0.35 * torch.sigmoid(self.ema_theta)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` [batch, T, d_input] (padding at the end) -> ``(c [batch, T, d_state], aux [batch, T, 2])``."""
        if self.training and self.config.input_dropout > 0:
            z = nn.functional.dropout(z, self.config.input_dropout)
        h = self.w_in(z)
        x = h
        for mamba, norm in zip(self.mamba, self.norms):
            x = x + self.dropout(mamba(norm(x)))  # pre-norm residual, as in Mamba's blocks
        u = self.out_norm(self.w_out(x))
        c = torch.einsum("ts,bsd->btd", ema_weights(self.ema().to(u.dtype), u.shape[1]), u)
        return c, self.aux(torch.cat([h, c], -1))
