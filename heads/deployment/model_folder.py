"""A trained model as one self-contained folder: its layout, verifying and loading it (``ExportedModel``), and the
heads' outputs on raw features. ``heads.deployment.export`` writes it; ``heads.deployment.predict`` predicts new audio with it.

    model/
      model.json            what the features are and how they are normalised: speech model id and weight
                            checksum, layer choice, prosody feature set and names, state kind and settings,
                            head variant, config, block sizes, seeds, training corpus, cross-validated metrics
      head_seed<k>.safetensors   head weights + z-scoring statistics + target scale (one per seed)
      context.safetensors   the dialogue context: the ema kinds' projection (speech mean/std/axes, prosody
                            mean/std) fitted on the training rows, or the learned (mamba) updater's weights and
                            input statistics
      README.md             the model card
      speech.onnx, speech.int8.onnx, head_seed<k>.onnx   with ``export --onnx`` only: the speech model and
                            the heads for ONNX Runtime (``heads.deployment.onnx_heads``; ``predict --runtime onnx|onnx-int8``)
      CHECKSUMS             sha256 of every file above; a changed or missing file is refused

No pickle anywhere: safetensors and JSON only, so loading a model cannot run code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy

from core.errors import InputError
from core.standardise import standardise
from heads.training.models import BlockSizes
from heads.training.runs import load_head

MODEL_FILE = "model.json"
CONTEXT_FILE = "context.safetensors"
CHECKSUMS = "CHECKSUMS"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def required_files(record: dict) -> set[str]:
    """Every file a model folder's ``model.json`` says it needs (each must be listed in CHECKSUMS)."""
    from heads.deployment.onnx_heads import onnx_files

    return {MODEL_FILE, "README.md", *(f"head_seed{s}.safetensors" for s in record.get("seeds", [])),
            *([CONTEXT_FILE] if record.get("state") else []), *onnx_files(record)}


def verify_checksums(folder: Path) -> None:
    """Refuse a model folder whose files differ from the ones exported, lack any, are not all listed in CHECKSUMS,
    or are symbolic links (a link could point at anything)."""
    listing = folder / CHECKSUMS
    if not (folder / MODEL_FILE).is_file() or not listing.is_file():
        raise InputError(f"{folder}: not a model folder (no {MODEL_FILE} or {CHECKSUMS}); make one with `cli.py export`")
    listed = {}
    for line in listing.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if not name or "/" in name or name.startswith("."):
            raise InputError(f"{listing}: a damaged line {line!r}; re-export the model")
        listed[name] = digest
    for name in [*listed, CHECKSUMS, MODEL_FILE]:
        if (folder / name).is_symlink():
            raise InputError(f"{folder / name}: a symbolic link; a model folder holds its own files")
    if MODEL_FILE not in listed:
        raise InputError(f"{listing}: does not list {MODEL_FILE}; re-export the model")
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"{path}: missing from the model folder")
        if sha256_file(path) != digest:
            raise InputError(f"{path}: changed since export (sha256 differs); re-export the model")
    try:
        record = json.loads((folder / MODEL_FILE).read_text())
    except ValueError as err:
        raise InputError(f"{folder / MODEL_FILE}: not readable ({err}); re-export the model") from None
    unlisted = sorted(required_files(record) - set(listed))
    if unlisted:
        raise InputError(f"{listing}: does not list {', '.join(unlisted)}, which the model needs; re-export the model")


class ExportedModel:
    """A loaded model folder: heads (one per seed), their statistics, the context projection."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        verify_checksums(self.folder)
        self.record = json.loads((self.folder / MODEL_FILE).read_text())
        if self.record.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{self.folder}: model format {self.record.get('format_version')} is not "
                             f"{FORMAT_VERSION}, the one this version reads")
        sizes = BlockSizes(**self.record["sizes"])
        dropout = self.record["config"]["dropout"]
        self.heads = [load_head(self.folder / f"head_seed{s}.safetensors", self.record["variant"], sizes, dropout)
                      for s in self.record["seeds"]]
        self.context = load_numpy(str(self.folder / CONTEXT_FILE)) if self.record["state"] else None
        self.runtime, self.head_sessions = "torch", None  # with_runtime: ONNX Runtime sessions of the heads

    def with_runtime(self, runtime: str, checked_only: bool = True) -> ExportedModel:
        """This model with its heads run by ``runtime``: torch (this object), onnx or onnx-int8 (ONNX Runtime on
        the CPU; the folder must have been exported with ``--onnx``). The int8 runtime differs in the speech
        model only (``onnx_speech``). A runtime whose predictions export measured further than
        ``heads.deployment.onnx_heads.MAX_DIFFERENCE`` from torch's is refused (``checked_only=False``: measure it anyway)."""
        import copy

        from heads.deployment.onnx_heads import MAX_DIFFERENCE, RUNTIMES, load_head_sessions

        if runtime not in RUNTIMES:
            raise InputError(f"--runtime {runtime}: choose {', '.join(RUNTIMES)}")
        if runtime == "torch":
            return self
        if not self.record.get("onnx"):
            raise InputError(f"{self.folder}: exported without ONNX files, so --runtime {runtime} cannot run it; "
                             "export its run again with --onnx (python cli.py export --run RUN --out DIR --onnx)")
        measured = self.record["onnx"].get("checked", {}).get(runtime)
        if checked_only and (measured is None or measured > MAX_DIFFERENCE):
            found = "was not checked" if measured is None else f"moved valence or arousal by up to {measured:.3g}"
            raise InputError(f"{self.folder}: --runtime {runtime} {found} against torch on the run's own files at "
                             f"export, and it must stay within {MAX_DIFFERENCE} on the label scale; use --runtime "
                             f"{'onnx' if runtime == 'onnx-int8' else 'torch'}")
        model = copy.copy(self)
        model.runtime, model.head_sessions = runtime, load_head_sessions(self.folder, self.record)
        return model

    def onnx_speech(self, speech_model: str | None, device: str) -> str:
        """The speech model file of this model's ONNX runtime (``speech.onnx`` or ``speech.int8.onnx``), which
        runs on the CPU; ``--speech-model`` (torch weights) and ``--device cuda`` do not apply and are refused."""
        if speech_model:
            raise InputError(f"--speech-model chooses the torch weights; --runtime {self.runtime} runs the speech "
                             f"model exported into {self.folder}")
        if device not in ("auto", "cpu"):
            raise InputError(f"--device {device}: --runtime {self.runtime} runs on the CPU (ONNX Runtime); use "
                             "--runtime torch on a GPU")
        return str(self.folder / self.record["onnx"]["speech_int8" if self.runtime == "onnx-int8" else "speech"])

    @property
    def speech_checksum(self) -> str | None:
        return self.record["speech_model"].get("weights_sha256")

def head_outputs(model: ExportedModel, speech: np.ndarray | None, prosody: np.ndarray | None,
                 state: np.ndarray | None, speakers: np.ndarray | None = None
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mean over seeds of the heads on raw features (z-scored here with each head's saved statistics), run by
    ``model.runtime``: ``([n, 2] valence/arousal on the corpus scale, {column -> [n]})``, the columns being
    ``valence_sd`` and ``arousal_sd`` (sd over the seeds, where ``spread_correlation`` reported it) and the
    attention weights. A speaker-normalised model
    (``--speaker-norm``) first z-scores speech and prosody with each of ``speakers``' own rows, as training did."""
    from heads.training.features import SplitTensors, speaker_normalised
    from heads.training.train import attention_columns, predict

    n = len(prosody if prosody is not None else speech)
    by_speaker = model.record["features"].get("per_speaker_norm", False)

    def block(values: np.ndarray | None, name: str, stats: dict[str, np.ndarray]) -> torch.Tensor:
        if values is None or f"{name}_mean" not in stats:
            return torch.zeros(n, 0)
        if by_speaker and name != "state":
            values = speaker_normalised(values, speakers, stats.get(f"{name}_fill"))
        z = standardise(values, stats[f"{name}_mean"], stats[f"{name}_std"])  # as in training
        return torch.from_numpy(np.nan_to_num(z, nan=0.0).astype(np.float32))

    outputs, attention = [], []
    for k, (head, stats) in enumerate(model.heads):
        split = SplitTensors(np.arange(n), block(speech, "speech", stats), block(prosody, "prosody", stats),
                             block(state, "state", stats), torch.zeros(n, 2), np.zeros((n, 2)))
        if model.runtime == "torch":
            pred, attn = predict(head, split)
        else:  # the same z-scored blocks into the ONNX graph of this seed's head
            from heads.deployment.onnx_heads import run_head_onnx

            blocks = {"speech": split.speech.numpy(), "prosody": split.prosody.numpy(), "state": split.state.numpy()}
            pred, attn = run_head_onnx(model.head_sessions[k], blocks)
        outputs.append(pred.numpy() * stats["target_std"] + stats["target_mean"])
        if attn is not None:
            attention.append(attention_columns(attn))
    columns = {k: np.mean([a[k] for a in attention], 0) for k in attention[0]} if attention else {}
    reported = (model.record.get("seed_spread") or {}).get("reported", [])
    if len(outputs) > 1 and reported:  # the seeds' disagreement, where it ranked held-out errors (model card)
        spread = np.std(outputs, axis=0, ddof=1)
        columns = {**{f"{d}_sd": spread[:, i] for i, d in enumerate(("valence", "arousal")) if d in reported},
                   **columns}
    return np.mean(outputs, 0), columns
