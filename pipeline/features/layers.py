"""Which cached hidden states a consumer uses: one vocabulary for the state stage and the heads.

    last        the last hidden state
    N           hidden state N (0 = the CNN encoder's output; negative counts from the end)
    mean        the mean of all hidden states
    weighted    a learned softmax mix of all hidden states (only where it is trained: the heads)
"""

from __future__ import annotations

import numpy as np

from core.errors import InputError

NAMED = ("last", "mean", "weighted")


def check_layer_choice(choice: str, allow_weighted: bool = True) -> str:
    """``choice`` itself when it is in the vocabulary; a clear ``InputError`` otherwise."""
    if choice in NAMED and (allow_weighted or choice != "weighted"):
        return choice
    try:
        int(choice)
    except ValueError:
        allowed = "last | mean | N" + (" | weighted" if allow_weighted else "")
        raise InputError(f"layer '{choice}': expected {allowed}") from None
    return choice


def layer_index(choice: str, num_hidden_states: int) -> int:
    """``last`` or an integer (negative counts from the end) -> 0..L."""
    index = num_hidden_states - 1 if choice == "last" else int(choice)
    if not -num_hidden_states <= index < num_hidden_states:
        raise InputError(f"layer {choice}: the cache has hidden states 0..{num_hidden_states - 1}")
    return index % num_hidden_states


def reads_every_layer(choice: str) -> bool:
    """Whether ``choice`` needs all hidden states (``mean``, ``weighted``) rather than one."""
    return choice in ("mean", "weighted")


def select_layer(pooled: np.ndarray, choice: str) -> np.ndarray:
    """``[N, L+1, D]`` (any float dtype) -> ``[N, D]`` float32 for ``last``, ``N`` or ``mean``."""
    if choice == "weighted":
        raise InputError("layer 'weighted' is a learned mix; it cannot be selected without training")
    if choice == "mean":
        return pooled.astype(np.float32).mean(1)
    return pooled[:, layer_index(choice, pooled.shape[1])].astype(np.float32)
