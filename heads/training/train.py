"""Train one head on one fold: AdamW, 1 - CCC loss (+ optional MSE), early stopping on validation CCC.

Read top to bottom: build the model, split parameters into branch groups, loop over epochs, keep the
weights of the best validation epoch, predict the test rows on the corpus scale.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from core.errors import InputError
from core.metrics import ccc_loss
from heads.training.features import FeatureConfig, FoldTensors, SplitTensors
from heads.training.models import BlockSizes, build_head
from heads.training.optim import AdamW
from heads.training.ridge import fit_ridge
from heads.training.streaming import StreamedSpeech


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a head run (saved as JSON beside the weights)."""

    variant: str = "separate-attn"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    prosody_dim: int = 64  # raw Praat features are projected to this width
    dropout: float = 0.3
    block_dropout: float = 0.0  # probability of zeroing a whole input block of an utterance (heads.training.models)
    epochs: int = 60  # at most this many epochs (validation passes)
    epoch_rows: int = 65536  # an epoch of a larger training set is this many rows of its shuffled pass (below)
    batch_size: int = 0  # 0 = auto: an eighth of the training rows, between 64 and 256 (docs/benchmarks.md)
    lr: float = 1e-3  # shared parts (projections, layer mix) and the shared head
    lr_valence: float | None = None  # valence branch; None = lr
    lr_arousal: float | None = None  # arousal branch; None = lr
    lr_layer_mix: float = 1e-2  # softmax logits of a learned layer mix (few parameters, needs a larger step)
    weight_decay: float = 1e-2
    loss_weight_valence: float = 1.0
    loss_weight_arousal: float = 1.0
    mse_weight: float = 0.0  # added MSE term (on the standardised scale)
    grad_clip: float = 1.0
    patience: int = 6  # epochs without a better validation mean CCC before stopping
    min_delta: float = 1e-3  # smaller validation gains do not count as better
    val_fraction: float = 0.1  # share of training utterances held out as whole dialogue groups (core.protocol)
    state_gate: bool = True  # with a state: also train without it, keep the better on validation (heads.training.experiment)

    def __post_init__(self) -> None:
        """Refuse settings no training can use (one ``InputError`` naming the setting), before any work."""
        def bad(name: str, value: object, what: str) -> None:
            raise InputError(f"{name.replace('_', '-')} {value}: {what}")

        for name in ("lr", "lr_layer_mix", "grad_clip"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                bad(name, value, "must be a positive number")
        for name in ("lr_valence", "lr_arousal"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                bad(name, value, "must be a positive number")
        for name in ("weight_decay", "loss_weight_valence", "loss_weight_arousal", "mse_weight", "min_delta"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                bad(name, value, "must be a number >= 0")
        if self.loss_weight_valence + self.loss_weight_arousal <= 0:
            bad("loss_weight_valence", self.loss_weight_valence, "and loss-weight-arousal cannot both be 0")
        for name in ("dropout", "block_dropout"):
            value = getattr(self, name)
            if not (np.isfinite(value) and 0 <= value < 1):
                bad(name, value, "must be in [0, 1)")
        if not (np.isfinite(self.val_fraction) and 0 < self.val_fraction < 1):
            bad("val_fraction", self.val_fraction, "must be in (0, 1)")
        for name in ("epochs", "epoch_rows", "patience", "prosody_dim"):
            if getattr(self, name) < 1:
                bad(name, getattr(self, name), "must be at least 1")
        if self.batch_size < 0:
            bad("batch_size", self.batch_size, "must be 0 (automatic) or a number of utterances")


@dataclass
class TrainedHead:
    model: torch.nn.Module
    sizes: BlockSizes
    best_epoch: int
    best_val_ccc: float
    history: list[dict]  # one entry per epoch (empty for the closed-form linear head)
    details: dict = field(default_factory=dict)  # variant-specific facts for run.json (e.g. ridge penalties)


def epoch_positions(pending: torch.Tensor, n: int, epoch_rows: int, new_pass: Callable[[], torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(this epoch's training positions, the rest of the pass)``. A training set of at most ``epoch_rows`` rows
    is one whole shuffled pass per epoch; a larger one (MSP-Podcast: 170k rows) is validated, and can stop early,
    every ``epoch_rows`` rows of its pass, the pass continuing where the last epoch stopped: early stopping counts
    optimisation progress, not passes over a corpus that large."""
    if len(pending) == 0:
        pending = new_pass()
    if n <= epoch_rows:
        return pending, pending[:0]
    return pending[:epoch_rows], pending[epoch_rows:]


def resolve_batch_size(batch_size: int, train_rows: int) -> int:
    """``batch_size``, or for 0 (auto) ``train_rows / 8`` clipped to [64, 256]: a small corpus still gets
    several optimiser steps per epoch (with 256, EmoDB's ~380 training rows made 1-2 steps an epoch)."""
    return batch_size if batch_size > 0 else int(np.clip(train_rows // 8, 64, 256))


def block_sizes(fold: FoldTensors, config: TrainConfig) -> BlockSizes:
    speech = fold.train.speech
    return BlockSizes(
        speech=speech.shape[-1] if config.features.use_speech and fold.effective.use_speech else 0,
        speech_layers=speech.shape[1] if speech.dim() == 3 else 1,
        prosody_raw=fold.train.prosody.shape[1],
        prosody=config.prosody_dim if fold.effective.use_prosody else 0,
        state=fold.train.state.shape[1] if fold.effective.use_state else 0,
    )


def parameter_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """Valence-branch, arousal-branch and shared parameters with their own learning rates."""
    groups: dict[str, list] = {"valence": [], "arousal": [], "shared": [], "layer_mix": []}
    for name, param in model.named_parameters():
        branch = name.split(".")[0].split("_")[0]
        if name == "inputs.layer_logits":
            groups["layer_mix"].append(param)
        else:
            groups[branch if branch in ("valence", "arousal") else "shared"].append(param)
    lrs = {"valence": config.lr_valence or config.lr, "arousal": config.lr_arousal or config.lr, "shared": config.lr,
           "layer_mix": config.lr_layer_mix}
    return [{"params": p, "lr": lrs[k], "name": k, "weight_decay": 0.0 if k == "layer_mix" else config.weight_decay}
            for k, p in groups.items() if p]


def loss_fn(pred: torch.Tensor, true: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    weights = pred.new_tensor([config.loss_weight_valence, config.loss_weight_arousal])
    per_dim = ccc_loss(pred, true)
    if config.mse_weight:
        per_dim = per_dim + config.mse_weight * ((pred - true) ** 2).mean(0)
    return (weights * per_dim).sum() / weights.sum()


@torch.no_grad()
def predict(model: torch.nn.Module, split: SplitTensors) -> tuple[torch.Tensor, dict | None]:
    """Standardised predictions [n, 2] and attention weights of one split (eval mode), on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    if isinstance(split.speech, StreamedSpeech):  # block by block: the split is not in memory
        speech = split.speech.to(device)
        parts = [model(x, split.prosody[rows].to(device), split.state[rows].to(device)) for rows, x in speech.blocks()]
        if not parts:  # no rows (a final model's test split): the model's own empty outputs
            parts = [model(torch.zeros(0, *speech.shape[1:], device=device), split.prosody.to(device),
                           split.state.to(device))]
        pred = torch.cat([p for p, _ in parts])
        attention = None if parts[0][1] is None else {k: torch.cat([a[k] for _, a in parts]) for k in parts[0][1]}
    else:
        pred, attention = model(split.speech.to(device), split.prosody.to(device), split.state.to(device))
    return pred.cpu(), None if attention is None else {k: v.cpu() for k, v in attention.items()}


def attention_columns(attention: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The attention weights of ``predict`` as the columns of predictions.csv: each branch's ``w[0]`` (valence
    -> prosody, arousal -> speech) and ``w[1]`` (the other blocks)."""
    return {"attn_valence_prosody": attention["valence"][:, 0].numpy(),
            "attn_valence_other": attention["valence"][:, 1].numpy(),
            "attn_arousal_speech": attention["arousal"][:, 0].numpy(),
            "attn_arousal_other": attention["arousal"][:, 1].numpy()}


def validation_ccc(model: torch.nn.Module, split: SplitTensors) -> np.ndarray:
    """[2] validation CCC of valence and arousal."""
    pred, _ = predict(model, split)
    return (1 - ccc_loss(pred, split.targets.cpu())).numpy()


def train_head(fold: FoldTensors, config: TrainConfig, seed: int, device: torch.device = torch.device("cpu"),
               on_epoch: Callable[[dict], None] | None = None) -> TrainedHead:
    """Train one seed on ``device``; the batch order comes from a CPU generator, so it is the same anywhere.
    ``on_epoch`` receives each epoch's history entry with the best validation CCC so far (for progress).
    The ``linear`` variant is fitted in closed form instead (``heads.training.ridge``; seeds do not change it)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    sizes = block_sizes(fold, config)
    if config.variant == "linear":
        if isinstance(fold.train.speech, StreamedSpeech):
            raise InputError("the linear head is fitted in closed form on the speech block in memory; with a block "
                             "too large for memory (--layer weighted) train a neural variant or choose one layer")
        model = build_head("linear", sizes)
        splits = [(s.speech, s.prosody, s.state, s.targets) for s in (fold.train, fold.validation)]
        penalties, val_ccc, path = fit_ridge(model, *splits)
        return TrainedHead(model.eval(), sizes, 0, val_ccc, [], {"ridge_penalty": penalties, "ridge_path": path})
    model = build_head(config.variant, sizes, config.dropout, config.block_dropout).to(device)
    optimizer = AdamW(parameter_groups(model, config))  # torch's fused AdamW update, see heads/training/optim.py
    train, validation = fold.train.to(device), fold.validation.to(device)
    n = len(train.rows)
    batch_size = resolve_batch_size(config.batch_size, n)
    best_ccc, best_epoch, best_state, history = -np.inf, -1, None, []
    new_pass = (lambda: train.speech.epoch_order(generator)) if isinstance(train.speech, StreamedSpeech) else \
        (lambda: torch.randperm(n, generator=generator))  # streamed: block-shuffled (heads.training.streaming)
    pending = torch.zeros(0, dtype=torch.int64)
    for epoch in range(config.epochs):
        model.train()
        order, pending = epoch_positions(pending, n, config.epoch_rows, new_pass)
        total = 0.0
        # Drop a final sliver of < 32 rows: CCC over a handful of rows is too noisy to learn from.
        remainder = len(order) % batch_size
        stop = len(order) if len(order) < batch_size or remainder >= 32 else len(order) - remainder
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size].to(device)
            pred, _ = model(train.speech[idx], train.prosody[idx], train.state[idx])
            loss = loss_fn(pred, train.targets[idx], config)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        per_dimension = validation_ccc(model, validation)
        val = float(per_dimension.mean())
        history.append({"epoch": epoch, "train_loss": total / stop, "val_ccc": val,
                        "val_ccc_v": float(per_dimension[0]), "val_ccc_a": float(per_dimension[1])})
        improved = val > best_ccc + config.min_delta
        if improved:
            best_ccc, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch({**history[-1], "best_val_ccc": best_ccc, "best_epoch": best_epoch, "epochs": config.epochs})
        if not improved and epoch - best_epoch >= config.patience:
            break
    if best_state is None:  # every validation CCC was undefined (NaN): nothing to choose an epoch by
        raise InputError(f"no epoch gave a defined validation CCC on the {len(validation.rows)} validation "
                         "utterance(s): the validation split is too small or its labels are constant")
    model.load_state_dict(best_state)
    model.eval()
    return TrainedHead(model, sizes, best_epoch, float(best_ccc), history)
