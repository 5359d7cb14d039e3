"""A model folder's networks as ONNX (``export --onnx``) and its heads run by ONNX Runtime (``predict --runtime``).

``export --onnx`` adds to the folder (all listed in ``model.json`` under ``"onnx"`` and in CHECKSUMS):

* ``speech.onnx``: the speech model the heads were trained on (``pipeline.models.onnx_speech``; its weights'
  checksum must be the one in ``model.json``), and ``speech.int8.onnx``, its MatMul/Gemm-int8 copy;
* ``head_seed<k>.onnx``: each seed's head. Inputs: the z-scored blocks the head uses (``speech`` ``[n, D]``, or
  ``[n, L+1, D]`` for a learned layer mix; ``prosody`` ``[n, F]``; ``state`` ``[n, d_state]``): a block the head
  does not use is no input. Outputs: ``predictions`` ``[n, 2]`` (valence, arousal on the standardised scale) and,
  for ``separate-attn``, ``attention_valence`` and ``attention_arousal`` ``[n, 2]``. The heads stay fp32 in both
  runtimes: they are a negligible share of the work.

``heads.deployment.model_folder.head_outputs`` standardises the inputs and rescales the predictions exactly as for the
torch heads, whichever runtime computes them.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heads.training.models import BlockSizes
from heads.training.runs import load_head
from pipeline.models.onnx_speech import OPSET, export_speech_onnx, quantize_speech_int8, session_options

BLOCKS = ("speech", "prosody", "state")
SPEECH_FILE, SPEECH_INT8_FILE = "speech.onnx", "speech.int8.onnx"
RUNTIMES = ("torch", "onnx", "onnx-int8")
MAX_DIFFERENCE = 0.01  # label scale: predict refuses a runtime that export measured further than this from torch


def used_blocks(sizes: BlockSizes) -> tuple[str, ...]:
    """The input blocks a head with ``sizes`` reads, in ``BLOCKS`` order."""
    return tuple(name for name, width in zip(BLOCKS, (sizes.speech, sizes.prosody, sizes.state)) if width)


class HeadGraph(nn.Module):
    """A head with only its used blocks as inputs; the unused ones are the empty ``[n, 0]`` blocks it expects."""

    def __init__(self, head: nn.Module, blocks: tuple[str, ...]):
        super().__init__()
        self.head, self.blocks = head, blocks

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        given = dict(zip(self.blocks, inputs))
        empty = inputs[0].new_zeros(inputs[0].shape[0], 0)
        predictions, attention = self.head(*(given.get(name, empty) for name in BLOCKS))
        return predictions if attention is None else (predictions, attention["valence"], attention["arousal"])


def export_head_onnx(head: nn.Module, sizes: BlockSizes, out_path: str | Path) -> None:
    """Write one head (eval mode) as ONNX with a dynamic row axis (inputs and outputs: module docstring)."""
    blocks = used_blocks(sizes)
    widths = {"speech": (sizes.speech_layers, sizes.speech) if sizes.speech_layers > 1 else (sizes.speech,),
              "prosody": (sizes.prosody_raw,), "state": (sizes.state,)}
    example = tuple(torch.zeros(2, *widths[name]) for name in blocks)
    graph = HeadGraph(head.eval(), blocks)
    with torch.no_grad():
        attention = graph(*example)
    outputs = ["predictions"] + (["attention_valence", "attention_arousal"] if isinstance(attention, tuple) else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(graph, example, str(out_path), input_names=list(blocks), output_names=outputs,
                          dynamic_axes={name: {0: "rows"} for name in [*blocks, *outputs]}, opset_version=OPSET,
                          dynamo=False)


def load_head_sessions(folder: Path, record: dict) -> list:
    """One ONNX Runtime session (CPU) per seed's head, in ``record["seeds"]`` order."""
    import onnxruntime

    return [onnxruntime.InferenceSession(str(folder / name), session_options(), providers=["CPUExecutionProvider"])
            for name in record["onnx"]["heads"]]


def run_head_onnx(session, blocks: dict[str, np.ndarray]  # noqa: ANN001 - onnxruntime.InferenceSession
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """``heads.training.train.predict`` for an ONNX head: ``blocks`` name -> z-scored ``[n, ...]`` float32 ->
    ``(predictions [n, 2], attention {"valence", "arousal": [n, 2]} or None)`` as torch tensors."""
    feeds = {i.name: np.ascontiguousarray(blocks[i.name], np.float32) for i in session.get_inputs()}
    outputs = [torch.from_numpy(x) for x in session.run(None, feeds)]
    return outputs[0], ({"valence": outputs[1], "arousal": outputs[2]} if len(outputs) == 3 else None)


def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "onnx", "onnxruntime"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


@dataclass
class StagedOnnx:
    """ONNX files written into a temporary folder beside the model folder, and their ``model.json`` entry."""

    folder: tempfile.TemporaryDirectory
    entry: dict

    def move_into(self, out: Path) -> None:
        for path in sorted(Path(self.folder.name).iterdir()):
            shutil.move(str(path), out / path.name)
        self.folder.cleanup()


def stage_onnx(run_dir: Path, record: dict, speech: dict, speech_model: str | None, out: Path) -> StagedOnnx:
    """Export the speech model and the run's heads (``record``: its run.json; ``speech``: the speech model's
    facts from the cache) before the model folder ``out`` is touched, so a refusal leaves nothing behind.
    ``speech_model`` (hub id or folder) defaults to the id the cache recorded; weights with another checksum than
    the cache's are refused."""
    source = speech_model or speech.get("model_id")
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = tempfile.TemporaryDirectory(prefix=f".{out.name}.onnx-", dir=out.parent)  # same disk: moves are renames
    folder = Path(staged.name)
    sizes = BlockSizes(**record["sizes"])
    heads = [f"head_seed{seed}.onnx" for seed in record["seeds"]]
    try:
        export_speech_onnx(str(source), folder / SPEECH_FILE, expected_sha256=speech.get("weights_sha256"))
        quantize_speech_int8(folder / SPEECH_FILE, folder / SPEECH_INT8_FILE)
        for seed, name in zip(record["seeds"], heads):
            head, _ = load_head(run_dir / f"head_seed{seed}.safetensors", record["config"]["variant"], sizes,
                                record["config"]["dropout"])
            export_head_onnx(head, sizes, folder / name)
    except BaseException:
        staged.cleanup()
        raise
    entry = {"speech": SPEECH_FILE, "speech_int8": SPEECH_INT8_FILE, "heads": heads, "head_inputs": used_blocks(sizes),
             "opset": OPSET, "speech_exported_from": str(source), "int8": "dynamic, MatMul/Gemm weights int8 per "
             "channel; feature projection, convolutions and heads fp32", "exported_with": _versions()}
    return StagedOnnx(staged, entry)


def onnx_files(record: dict) -> list[str]:
    """The ONNX files a ``model.json`` lists (none for a folder exported without ``--onnx``)."""
    onnx = record.get("onnx") or {}
    return [onnx["speech"], onnx["speech_int8"], *onnx["heads"]] if onnx else []
