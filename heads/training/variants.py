"""Head configurations named by short specs and back (``parse_variant`` and ``run_label`` are inverses),
and fold ranges.

A spec is a variant, then ``+``-separated switches: feature switches (``no-speech``, ``no-prosody``,
``state`` (use the dialogue state; off by default), ``no-state``, ``speaker-norm``, ``layer=last|mean|weighted|N``,
``prosody=praat|egemaps|praat/egemaps``: the feature sets of the prosody block, side by side) and
training settings as ``name=value``
with the ``TrainConfig`` field in kebab case (``lr=3e-4``, ``batch-size=64``, ``mse-weight=0.5``). A run's
label is its spec with every setting that differs from the defaults, so runs that differ only in
hyperparameters get different labels and can share one table.
"""

from __future__ import annotations

from dataclasses import fields, replace

from core.errors import InputError
from heads.training.features import FeatureConfig
from heads.training.models import VARIANTS
from heads.training.train import TrainConfig
from pipeline.features.layers import check_layer_choice

SWITCHES = ("no-speech", "no-prosody", "state", "no-state", "speaker-norm")


def prosody_sets(text: str, spec: str = "") -> tuple[str, ...]:
    """``praat/egemaps`` -> ``("egemaps", "praat")``: the sets in one canonical order, so equal choices get equal
    labels (whether the cache holds them is checked when the arrays are read)."""
    sets = tuple(sorted({part.strip() for part in text.split("/") if part.strip()}))
    if not sets or not all(part.replace("-", "").replace("_", "").isalnum() for part in sets):
        raise InputError(f"'{spec or text}': name feature sets such as egemaps, or several side by side: "
                         "prosody=praat/egemaps in a variant spec, --prosody praat,egemaps as an option")
    return sets


def _settings() -> dict[str, str]:
    """Kebab-case name -> TrainConfig field for every scalar training setting."""
    return {f.name.replace("_", "-"): f.name for f in fields(TrainConfig) if f.name not in ("variant", "features")}


def _setting_value(field_name: str, text: str, spec: str) -> float | int | bool | None:
    kind = next(f.type for f in fields(TrainConfig) if f.name == field_name)  # annotations are strings here
    try:
        if "None" in kind and text.lower() == "none":
            return None
        if kind == "bool":
            if text.lower() not in ("0", "1", "true", "false", "on", "off"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "on")
        return int(text) if kind == "int" else float(text)
    except ValueError:
        raise InputError(f"'{spec}': {field_name.replace('_', '-')}={text} is not a "
                         f"{'switch (on/off)' if kind == 'bool' else 'number'}") from None


def parse_variant(spec: str, base: TrainConfig) -> TrainConfig:
    """``variant[+switch...]`` -> a TrainConfig derived from ``base`` (see the module docstring)."""
    name, *switches = spec.strip().split("+")
    if name not in VARIANTS:
        raise InputError(f"unknown head variant '{name}' in '{spec}' (choose from {', '.join(VARIANTS)})")
    features, settings = base.features, {}
    for switch in switches:
        key, _, value = switch.partition("=")
        if switch == "no-speech":
            features = replace(features, use_speech=False)
        elif switch == "no-prosody":
            features = replace(features, use_prosody=False)
        elif switch == "state":
            features = replace(features, use_state=True)
        elif switch == "no-state":
            features = replace(features, use_state=False)
        elif switch == "speaker-norm":
            features = replace(features, per_speaker_norm=True)
        elif key == "layer" and value:
            features = replace(features, layer=check_layer_choice(value))
        elif key == "prosody" and value:
            features = replace(features, prosody_sets=prosody_sets(value, spec))
        elif key in _settings() and value:
            settings[_settings()[key]] = _setting_value(_settings()[key], value, spec)
        else:
            raise InputError(f"unknown switch '{switch}' in '{spec}' ({', '.join(SWITCHES)}, layer=..., prosody=..., or a "
                             f"setting: {', '.join(f'{k}=...' for k in _settings())})")
    if name == "linear" and features.layer == "weighted":
        raise InputError(f"'{spec}': the linear head is fitted in closed form on one speech layer; "
                         "use layer=last, layer=mean or layer=N")
    return replace(base, variant=name, features=features, **settings)


def config_from_options(spec: str, layer: str | None = None, no_speech: bool = False, no_prosody: bool = False,
                        prosody: str | None = None, state: bool = False, speaker_norm: bool = False,
                        **settings: float | int | None) -> TrainConfig:
    """The one way a command builds its ``TrainConfig``: the defaults, then the options given on the command line
    (``None``: not given), then the switches of ``spec`` (``parse_variant``), which win."""
    base = TrainConfig()
    features = replace(base.features, use_speech=not no_speech, use_prosody=not no_prosody, use_state=state,
                       per_speaker_norm=speaker_norm, **({"layer": check_layer_choice(layer)} if layer is not None else {}),
                       **({"prosody_sets": prosody_sets(prosody.replace(",", "/"), f"--prosody {prosody}")}
                          if prosody is not None else {}))
    unknown = [k for k in settings if k not in _settings().values()]
    if unknown:
        raise TypeError(f"not TrainConfig settings: {unknown}")
    return parse_variant(spec, replace(base, features=features, **{k: v for k, v in settings.items() if v is not None}))


def run_label(config: TrainConfig) -> str:
    """The spec of ``config``: its variant, feature switches, and every training setting that differs from
    the defaults, e.g. ``separate-attn+state+layer=weighted+lr=0.0003`` (the state is off by default, so a label
    names it when it is used)."""
    f = config.features
    parts = [config.variant]
    parts += [s for s, on in (("no-speech", not f.use_speech), ("no-prosody", not f.use_prosody),
                              ("state", f.use_state), ("speaker-norm", f.per_speaker_norm)) if on]
    if f.layer != "last":
        parts.append(f"layer={f.layer}")
    if f.use_prosody and f.prosody_sets != FeatureConfig.prosody_sets:
        parts.append(f"prosody={'/'.join(f.prosody_sets)}")
    defaults = TrainConfig()
    for name, field_name in _settings().items():
        value = getattr(config, field_name)
        if value != getattr(defaults, field_name):
            if isinstance(value, bool):
                parts.append(f"{name}={'on' if value else 'off'}")
            else:
                parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return "+".join(parts)


def parse_experiments(folds: str | None, split: str | None, available: list[int], test_sets: list[str] | None,
                      option: str = "--folds") -> list[int]:
    """The experiments a command names: ``folds`` (``1-5``, ``1,3``, ``all``) on a corpus with k folds, ``split``
    (``Test1``, ``Test1,Test2``, ``all``) on one with predefined partitions (``test_sets`` in number order);
    returns fold numbers (a test set's number is its position in ``test_sets``, from 1)."""
    if test_sets is None:
        if split is not None:
            raise InputError(f"--split {split}: this cache has folds {sorted(available)}, not predefined partitions; "
                             "use --fold/--folds")
        return parse_folds(folds or "all", available, option)
    if folds not in (None, "all"):
        raise InputError(f"--fold(s) {folds}: this cache has predefined partitions; name a test set with --split "
                         f"({', '.join(test_sets)} or all)")
    if split in (None, "all"):
        if not test_sets:
            raise InputError("--split all: this corpus has no test set (only train and dev partitions)")
        return list(range(1, len(test_sets) + 1))
    number = {name.lower(): i for i, name in enumerate(test_sets, start=1)}
    chosen = [part.strip() for part in split.split(",") if part.strip()]
    unknown = [name for name in chosen if name.lower() not in number]
    if unknown or not chosen:
        raise InputError(f"--split {split}: no test set {', '.join(unknown) or '(empty)'} in this cache (test sets: "
                         f"{', '.join(test_sets)}; train and dev are not test sets)")
    return [number[name.lower()] for name in chosen]


def parse_folds(text: str, available: list[int], option: str = "--folds") -> list[int]:
    """``1-5``, ``1,3,4`` or ``all`` -> fold numbers, each of which must exist (errors name ``option``)."""
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
        raise InputError(f"{option} '{text}': expected e.g. 1-5, 1,3 or all") from err
    if not folds:
        raise InputError(f"{option} '{text}': names no fold (a range goes upwards: 1-5)")
    missing = [f for f in folds if f not in available]
    if missing:
        raise InputError(f"{option} {text}: the cache has no fold {', '.join(map(str, missing))} (its folds: "
                         f"{', '.join(map(str, sorted(available)))})")
    return folds
