"""Head configurations named by short specs (``separate-attn+no-state+layer=weighted``) and back
(``parse_variant`` and ``run_label`` are inverses), and fold ranges."""

from __future__ import annotations

from dataclasses import replace

from core.errors import InputError
from heads.models import VARIANTS
from heads.train import TrainConfig
from pipeline.features.layers import check_layer_choice

SWITCHES = ("no-speech", "no-prosody", "no-state", "speaker-norm")


def parse_variant(spec: str, base: TrainConfig) -> TrainConfig:
    """``variant[+switch...]`` -> a TrainConfig derived from ``base``. Switches: no-speech, no-prosody,
    no-state, speaker-norm, layer=last|mean|weighted|N."""
    name, *switches = spec.strip().split("+")
    if name not in VARIANTS:
        raise InputError(f"unknown head variant '{name}' in '{spec}' (choose from {', '.join(VARIANTS)})")
    features = base.features
    for switch in switches:
        if switch == "no-speech":
            features = replace(features, use_speech=False)
        elif switch == "no-prosody":
            features = replace(features, use_prosody=False)
        elif switch == "no-state":
            features = replace(features, use_state=False)
        elif switch == "speaker-norm":
            features = replace(features, per_speaker_norm=True)
        elif switch.startswith("layer="):
            features = replace(features, layer=check_layer_choice(switch.split("=", 1)[1]))
        else:
            raise InputError(f"unknown switch '{switch}' in '{spec}' ({', '.join(SWITCHES)}, layer=...)")
    if name == "linear" and features.layer == "weighted":
        raise InputError(f"'{spec}': the linear head is fitted in closed form on one speech layer; "
                         "use layer=last, layer=mean or layer=N")
    return replace(base, variant=name, features=features)


def run_label(config: TrainConfig) -> str:
    """Short name of a variant and its switches, e.g. ``separate-attn+no-state+layer=weighted``."""
    f = config.features
    parts = [config.variant]
    parts += [s for s, on in (("no-speech", not f.use_speech), ("no-prosody", not f.use_prosody),
                              ("no-state", not f.use_state), ("speaker-norm", f.per_speaker_norm)) if on]
    if f.layer != "last":
        parts.append(f"layer={f.layer}")
    return "+".join(parts)


def parse_folds(text: str, available: list[int]) -> list[int]:
    """``1-5``, ``1,3,4`` or ``all`` -> fold numbers, each of which must exist."""
    if text == "all":
        return sorted(available)
    folds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                folds.extend(range(int(lo), int(hi) + 1))
            else:
                folds.append(int(part))
    except ValueError as err:
        raise InputError(f"--folds '{text}': expected e.g. 1-5, 1,3 or all") from err
    missing = [f for f in folds if f not in available]
    if missing:
        raise InputError(f"--folds: the cache has no fold(s) {missing} (folds: {sorted(available)})")
    return folds
