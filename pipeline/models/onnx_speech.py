"""The speech model as an ONNX graph run by ONNX Runtime on the CPU, and its int8 copy.

``export_speech_onnx`` writes a graph that maps ONE utterance's model input values ``[1, S]`` float32 (the HF
feature extractor's output: it may normalise) to the mean over all its frames of every hidden state
``[L+1, D]`` float32, and its frame count; ``S`` is a dynamic axis. With one utterance there is no padding, so
that mean is the torch stage's masked mean (``SpeechEmbedder.embed``) and a group-norm encoder normalises over
exactly the valid samples. ``OnnxSpeechEmbedder`` has ``SpeechEmbedder``'s ``info`` and ``embed`` and runs each
utterance of a batch alone: batched equals one at a time by construction.

The file carries what running it needs besides the graph, as ONNX metadata: the ``SpeechModelInfo`` of the
torch model it came from (its ``weights_sha256`` is the torch weights' checksum, so a model trained on those
weights accepts the features) and the feature extractor's settings.

``quantize_speech_int8``: dynamic int8 quantisation of the matrix products with constant weights only (MatMul and
Gemm: weights int8 per output channel, activations quantised per call). Convolutions stay fp32: ONNX Runtime's
quantised convolutions are slower on CPUs than fp32 ones. The feature projection (the conv encoder's 512 channels
-> the transformer's width, ~0.5 % of the matrix work) stays fp32 too: its input has the conv features' wide range,
and on the tiny test model it caused ~90 % of the int8 error of the pooled last layer.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import InputError
from pipeline.models.speech_model import SpeechEmbedder, SpeechModelInfo

OPSET = 17
EXPORT_SECONDS = 1.0  # the example input's length; any other length runs (dynamic axis)
QUANTIZED_OPS = ("MatMul", "Gemm")
# Node names containing this stay fp32 (module docstring). A substring, not exact names: the quantiser rewrites a
# Gemm as MatMul under a new name ("<name>_MatMul") before it looks at the exclusions.
KEPT_FP32 = "feature_projection"
# ONNX metadata keys
INFO_KEY, EXTRACTOR_KEY, QUANTIZATION_KEY = "speech_model_info", "feature_extractor", "quantization"


class PooledHiddenStates(nn.Module):
    """``[1, S]`` input values -> ``(pooled [L+1, D], frames [])``: every hidden state's mean over all frames."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.model(values, output_hidden_states=True).hidden_states  # L+1 x [1, T, D]
        pooled = torch.stack([h[0].mean(0) for h in states])
        frames = torch.ones_like(states[0][0, :, 0]).sum()  # T as a tensor: traced, so it follows S
        return pooled, frames


def export_speech_onnx(model: str, out_path: str | Path, expected_sha256: str | None = None) -> SpeechModelInfo:
    """Export the speech model ``model`` (hub id or folder) to ``out_path`` (opset 17, TorchScript exporter).

    ``expected_sha256``: refuse (``InputError``, before exporting) weights with another checksum than this one,
    the checksum of the weights a model was trained on. Returns the torch model's ``SpeechModelInfo``."""
    embedder = SpeechEmbedder(model, torch.device("cpu"))
    info = embedder.info
    if expected_sha256 is not None and info.weights_sha256 != expected_sha256:
        raise InputError(f"{model}: speech model weights differ from the ones the model was trained on (sha256 "
                         f"{info.weights_sha256} != {expected_sha256}); export with --speech-model set to those "
                         "weights")
    example = torch.zeros(1, int(EXPORT_SECONDS * info.sample_rate_hz))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values in WavLM; lengths are checked in tests
        torch.onnx.export(PooledHiddenStates(embedder.model).eval(), (example,), str(out_path),
                          input_names=["input_values"], output_names=["pooled", "frames"],
                          dynamic_axes={"input_values": {1: "samples"}}, opset_version=OPSET, dynamo=False)
    extractor = {k: v for k, v in embedder.feature_extractor.to_dict().items() if not k.startswith("_")}
    set_metadata(out_path, {INFO_KEY: json.dumps(asdict(info)), EXTRACTOR_KEY: json.dumps(extractor),
                            QUANTIZATION_KEY: "none"})
    return info


def quantize_speech_int8(onnx_path: str | Path, out_path: str | Path) -> None:
    """Write the int8 copy of an exported speech model: dynamic quantisation of MatMul and Gemm only, per
    channel, the feature projection kept fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    metadata = read_metadata(onnx_path)
    kept = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node if KEPT_FP32 in n.name]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser advises pre-processing on the root logger; not needed for these ops
    try:
        quantize_dynamic(str(onnx_path), str(out_path), op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=kept)
    finally:
        root.setLevel(level)
    set_metadata(out_path, {**metadata, QUANTIZATION_KEY: f"dynamic int8 ({', '.join(QUANTIZED_OPS)} per channel; "
                                                          f"{KEPT_FP32} and convolutions fp32)"})


def set_metadata(path: str | Path, values: dict[str, str]) -> None:
    """Replace the ONNX file's metadata with ``values`` (string keys and values)."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def session_options(threads: int | None = None):  # noqa: ANN201 - onnxruntime.SessionOptions
    """CPU session options with as many intra-op threads as torch uses (the same knob for both runtimes)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return options


class OnnxSpeechEmbedder:
    """``SpeechEmbedder``'s interface over an exported ``.onnx`` file (fp32 or int8), on the CPU."""

    def __init__(self, onnx_path: str, device: torch.device = torch.device("cpu")):
        import onnxruntime
        import transformers

        if device.type != "cpu":
            raise InputError(f"{onnx_path}: ONNX speech models run on the CPU; use --device cpu (or the torch runtime "
                             "on a GPU)")
        path = Path(onnx_path)
        if not path.is_file():
            raise InputError(f"{onnx_path}: no such ONNX file")
        try:
            self.session = onnxruntime.InferenceSession(str(path), session_options(),
                                                        providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - a damaged or foreign file: one line
            raise InputError(f"{onnx_path}: not a loadable ONNX model ({type(err).__name__})") from err
        metadata = self.session.get_modelmeta().custom_metadata_map
        if INFO_KEY not in metadata or EXTRACTOR_KEY not in metadata:
            raise InputError(f"{onnx_path}: not a speech model written by export_speech_onnx (no {INFO_KEY} metadata)")
        extractor = json.loads(metadata[EXTRACTOR_KEY])
        self.feature_extractor = getattr(transformers, extractor["feature_extractor_type"]).from_dict(extractor)
        self.quantization = metadata.get(QUANTIZATION_KEY, "none")
        self.exported_from = SpeechModelInfo(**json.loads(metadata[INFO_KEY]))
        # The torch model's checksum (predict's weight check holds); this file's own path and padding policy.
        self.info = replace(self.exported_from, model_id=str(onnx_path), padding_policy="one-utterance-at-a-time")

    def embed(self, waves: list[np.ndarray], frame_layers: tuple[int, ...] = ()
              ) -> tuple[np.ndarray, np.ndarray, dict[int, list[np.ndarray]]]:
        """As ``SpeechEmbedder.embed``: ``waves`` B mono float32 arrays at ``info.sample_rate_hz`` (>= 400
        samples each) -> ``(pooled [B, L+1, D] float32, frames [B] int64, {})``. Frame sequences are not in the
        graph: ``frame_layers`` must be empty."""
        if frame_layers:
            raise InputError("frame sequences (--frame-layers) are not in the ONNX speech graph; use the torch model")
        pooled, frames = [], []
        for wave in waves:
            values = self.feature_extractor([wave], sampling_rate=self.info.sample_rate_hz,
                                            return_tensors="np")["input_values"].astype(np.float32)
            states, count = self.session.run(None, {"input_values": values})
            pooled.append(states)
            frames.append(int(count))
        shape = (0, self.info.num_hidden_states, self.info.hidden_size)
        return (np.stack(pooled) if pooled else np.zeros(shape, np.float32)), np.array(frames, np.int64), {}
