"""Head models over fused utterance features ``[speech, prosody, state]``.

* ``shared``: one MLP, d_in -> 256 -> 128 -> 2 (valence, arousal): the research note's baseline.
* ``separate``: a valence MLP and an arousal MLP over the same fused input.
* ``separate-attn``: the research note's design. Each branch has an attention MLP
  (Linear(d_in, 256) -> Tanh -> Linear(256, 2) -> Softmax) giving two weights per utterance. The valence
  branch scales the prosody block by w[0] and the speech and state blocks by w[1]; the arousal branch
  scales the speech block by w[0] and the prosody and state blocks by w[1]. Each weighted input goes to
  its own MLP (Linear-LayerNorm-ReLU-Dropout 256, same 128, Linear(128, 1)).
* ``linear``: the baseline every comparison can include: one linear map of ``[speech, prosody, state]``
  (raw standardised Praat features, no projection) to valence and arousal, fitted in closed form by ridge
  regression (``heads.training.ridge``), not by gradient descent.

Raw Praat features enter through a projection to 64 dimensions; with ``layer="weighted"`` the speech
block is a learned softmax mix of all cached hidden states (as in SUPERB). Every forward returns
``(prediction [B, 2], attention {"valence": [B, 2], "arousal": [B, 2]} or None)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

VARIANTS = ("shared", "separate", "separate-attn", "linear")


@dataclass(frozen=True)
class BlockSizes:
    """Widths of the input blocks; 0 means the block is switched off."""

    speech: int  # D (hidden size of the speech model)
    speech_layers: int  # L+1 when the speech block is a learned layer mix, else 1
    prosody_raw: int  # F raw Praat features
    prosody: int  # projected width (64), 0 when off
    state: int  # d_state, 0 when off


def mlp_head(d_in: int, d_out: int, dropout: float) -> nn.Sequential:
    """Linear-LayerNorm-ReLU-Dropout (256), the same (128), Linear(128, d_out)."""
    return nn.Sequential(
        nn.Linear(d_in, 256), nn.LayerNorm(256), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(256, 128), nn.LayerNorm(128), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(128, d_out),
    )


def attention_mlp(d_in: int) -> nn.Sequential:
    """Linear(d_in, 256) -> Tanh -> Linear(256, 2) -> Softmax: two weights that sum to 1."""
    return nn.Sequential(nn.Linear(d_in, 256), nn.Tanh(), nn.Linear(256, 2), nn.Softmax(dim=-1))


def blockwise_linear(linear: nn.Linear, blocks: Sequence[torch.Tensor],
                     scales: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """``linear(cat([x * w for x, w in zip(blocks, scales)], -1))``, computed one block at a time.

    The same function of the same parameters as concatenating first (``weight``'s columns follow the
    blocks' order), but a per-utterance scale ``w`` [B, 1] multiplies the product ``x @ W_k.T`` [B, out]
    instead of the block [B, d_k], and autograd computes no input gradient for blocks that need none
    (cached speech and state). On CPU this cuts a training step's matrix work by about a third.
    ``blocks``: [B, d_k] each; ``scales``: one [B, 1] or None per block.
    """
    # One split (its backward is one concatenation), not a slice per block (a zero-filled full gradient each).
    columns = linear.weight.split([x.shape[-1] for x in blocks], dim=1)
    out = linear.bias
    for x, weight, w in zip(blocks, columns, scales or [None] * len(blocks)):
        if x.shape[-1]:
            part = x @ weight.T
            out = out + (part if w is None else part * w)
    return out


def mlp_head_on_blocks(head: nn.Sequential, blocks: Sequence[torch.Tensor],
                       scales: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """``head`` (from ``mlp_head`` or ``attention_mlp``) applied to the concatenated, scaled blocks."""
    x = blockwise_linear(head[0], blocks, scales)
    for layer in head[1:]:
        x = layer(x)
    return x


class FusedInput(nn.Module):
    """Builds the speech, prosody and state blocks from cached tensors.

    ``block_dropout`` (training only): each utterance's speech, prosody and state block is zeroed (its
    training mean, since inputs are z-scored) with this probability, independently, and kept blocks are scaled
    by ``1 / (1 - p)`` as in dropout. A head then cannot rely on one block alone, and a block that carries
    no information costs less: the head learns to do without it."""

    def __init__(self, sizes: BlockSizes, block_dropout: float = 0.0):
        super().__init__()
        self.sizes = sizes
        self.block_dropout = block_dropout
        self.layer_logits = nn.Parameter(torch.zeros(sizes.speech_layers)) if sizes.speech_layers > 1 else None
        self.prosody_proj = nn.Linear(sizes.prosody_raw, sizes.prosody) if sizes.prosody else None

    @property
    def d_in(self) -> int:
        return (self.sizes.speech if self.sizes.speech else 0) + self.sizes.prosody + self.sizes.state

    def layer_weights(self) -> torch.Tensor | None:
        return None if self.layer_logits is None else torch.softmax(self.layer_logits, 0)

    def forward(self, speech: torch.Tensor, prosody: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``speech`` [B, D] or [B, L+1, D]; ``prosody`` [B, F]; ``state`` [B, d_state] -> three blocks."""
        batch = speech.shape[0]
        if not self.sizes.speech:
            s = speech.new_zeros(batch, 0)
        elif self.layer_logits is not None:
            s = torch.einsum("l,bld->bd", self.layer_weights(), speech)
        else:
            s = speech
        p = self.prosody_proj(prosody) if self.prosody_proj is not None else speech.new_zeros(batch, 0)
        c = state if self.sizes.state else speech.new_zeros(batch, 0)
        if self.training and self.block_dropout > 0:
            keep = torch.rand(batch, 3, device=speech.device) >= self.block_dropout
            scale = keep.to(speech.dtype) / (1 - self.block_dropout)  # [B, 3]
            s, p, c = (x * scale[:, k : k + 1] if x.shape[1] else x for k, x in enumerate((s, p, c)))
        return s, p, c


class SharedHead(nn.Module):
    def __init__(self, sizes: BlockSizes, dropout: float = 0.3, block_dropout: float = 0.0):
        super().__init__()
        self.inputs = FusedInput(sizes, block_dropout)
        self.head = mlp_head(self.inputs.d_in, 2, dropout)

    def forward(self, speech, prosody, state):  # noqa: ANN001, ANN201
        return mlp_head_on_blocks(self.head, self.inputs(speech, prosody, state)), None


class SeparateHeads(nn.Module):
    def __init__(self, sizes: BlockSizes, dropout: float = 0.3, block_dropout: float = 0.0):
        super().__init__()
        self.inputs = FusedInput(sizes, block_dropout)
        self.valence = mlp_head(self.inputs.d_in, 1, dropout)
        self.arousal = mlp_head(self.inputs.d_in, 1, dropout)

    def forward(self, speech, prosody, state):  # noqa: ANN001, ANN201
        blocks = self.inputs(speech, prosody, state)
        return torch.cat([mlp_head_on_blocks(self.valence, blocks), mlp_head_on_blocks(self.arousal, blocks)], -1), None


class SeparateAttnHeads(nn.Module):
    def __init__(self, sizes: BlockSizes, dropout: float = 0.3, block_dropout: float = 0.0):
        super().__init__()
        self.inputs = FusedInput(sizes, block_dropout)
        d_in = self.inputs.d_in
        self.valence_attention, self.arousal_attention = attention_mlp(d_in), attention_mlp(d_in)
        self.valence = mlp_head(d_in, 1, dropout)
        self.arousal = mlp_head(d_in, 1, dropout)

    def forward(self, speech, prosody, state):  # noqa: ANN001, ANN201
        blocks = self.inputs(speech, prosody, state)  # (s, p, c)
        wv = mlp_head_on_blocks(self.valence_attention, blocks)  # [B, 2]: (prosody, other)
        wa = mlp_head_on_blocks(self.arousal_attention, blocks)  # [B, 2]: (speech, other)
        # Valence head sees [s * wv1, p * wv0, c * wv1]; arousal head [s * wa0, p * wa1, c * wa1].
        valence = mlp_head_on_blocks(self.valence, blocks, [wv[:, 1:], wv[:, :1], wv[:, 1:]])
        arousal = mlp_head_on_blocks(self.arousal, blocks, [wa[:, :1], wa[:, 1:], wa[:, 1:]])
        return torch.cat([valence, arousal], -1), {"valence": wv, "arousal": wa}


class LinearHead(nn.Module):
    """``Linear(d_speech + F + d_state, 2)`` over the concatenated standardised blocks (one speech layer)."""

    def __init__(self, sizes: BlockSizes, dropout: float = 0.0, block_dropout: float = 0.0):
        super().__init__()
        if sizes.speech_layers > 1:
            raise ValueError("the linear head takes one speech layer (last, mean or N), not a learned mix")
        self.sizes = sizes
        self.linear = nn.Linear(sizes.speech + (sizes.prosody_raw if sizes.prosody else 0) + sizes.state, 2)

    def blocks(self, speech: torch.Tensor, prosody: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``[B, d_in]``: the blocks the head uses, concatenated."""
        parts = [speech if self.sizes.speech else None, prosody if self.sizes.prosody else None,
                 state if self.sizes.state else None]
        return torch.cat([x for x in parts if x is not None], -1)

    def forward(self, speech, prosody, state):  # noqa: ANN001, ANN201
        return self.linear(self.blocks(speech, prosody, state)), None


def build_head(variant: str, sizes: BlockSizes, dropout: float = 0.3, block_dropout: float = 0.0) -> nn.Module:
    classes = {"shared": SharedHead, "separate": SeparateHeads, "separate-attn": SeparateAttnHeads,
               "linear": LinearHead}
    if variant not in classes:
        raise ValueError(f"unknown head variant '{variant}' (choose from {', '.join(VARIANTS)})")
    return classes[variant](sizes, dropout, block_dropout)
