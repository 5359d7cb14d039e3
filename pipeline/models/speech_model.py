"""A self-supervised speech model (WavLM and its wav2vec2-family relatives) turned into pooled embeddings.

``SpeechEmbedder.embed`` maps a batch of waveforms to the masked mean over valid frames of every hidden
state, such that a batch gives the same result as one utterance at a time (padding never leaks in):

* layer-norm feature encoders (wavlm-large, ``feat_extract_norm="layer"``) normalise each frame alone,
  so zero padding plus the attention mask is exact;
* group-norm encoders (base models, ``"group"``) normalise the first conv layer over *time*, so padding
  would change every frame. For them the first conv block runs on each utterance's valid samples alone;
  the later conv layers have no normalisation and, with valid-length frame counts, never see padding.

Reduced precision on a CPU (``autocast_dtype`` bf16/fp16 with a CPU device) keeps every convolution in fp32:
oneDNN's AMX bf16 convolution kernels on recent Intel CPUs return wrong values for WavLM's grouped positional
convolution (off by ~100 %, every hidden state then ~31 %; pytorch#163347, #169688), while the same calls agree
to 0.3 % without AMX. The matrix products, which hold almost all the work, still run in reduced precision.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import InputError

# torch's attention warns that HF passes a bool padding mask beside a float bias; results are unaffected.
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")


class LengthAwareFirstConv(nn.Module):
    """Runs a group-norm conv block on each row's valid samples alone, then re-pads. ``[B,1,S] -> [B,C,T]``."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.valid_samples: list[int] | None = None  # set by SpeechEmbedder for each batch

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if self.valid_samples is None or len(self.valid_samples) == 1:
            return self.block(waves)
        rows = [self.block(waves[i : i + 1, :, :n]) for i, n in enumerate(self.valid_samples)]
        frames = self.block.conv.kernel_size[0], self.block.conv.stride[0]
        total = (waves.shape[-1] - frames[0]) // frames[1] + 1
        out = rows[0].new_zeros(len(rows), rows[0].shape[1], total)
        for i, row in enumerate(rows):
            out[i, :, : row.shape[-1]] = row[0]
        return out


@dataclass(frozen=True)
class SpeechModelInfo:
    """What the cache records about the model."""

    model_id: str
    weights_sha256: str  # over parameter bytes, independent of file format
    num_hidden_states: int  # L + 1
    hidden_size: int  # D
    sample_rate_hz: int
    padding_policy: str  # "pad-and-mask" | "per-utterance-first-conv"


def _float32_conv_forward(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A convolution's own forward with autocast off and fp32 input (output fp32; autocast casts it onward)."""
    with torch.autocast(x.device.type, enabled=False):
        return type(conv).forward(conv, x.float())


def keep_convolutions_in_float32(model: nn.Module) -> int:
    """Make every ``Conv1d`` of ``model`` compute in fp32 even inside ``torch.autocast``; returns how many.

    The forward is replaced on the instance, so parameter names and weights (and their checksum) are unchanged.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    for conv in convs:
        conv.forward = _float32_conv_forward.__get__(conv)
    return len(convs)


def weights_checksum(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def offline_help(model_id: str) -> str:
    return (
        f"speech model '{model_id}' is not available offline: on a machine with internet run "
        f"`huggingface-cli download {model_id} --local-dir DIR`, copy DIR here and pass --speech-model DIR"
    )


class SpeechEmbedder:
    """Loads the model once; ``embed`` turns waveforms into pooled hidden states."""

    def __init__(self, model_id: str, device: torch.device, autocast_dtype: torch.dtype | None = None):
        from transformers import AutoFeatureExtractor, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        try:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(model_id)
            self.model = AutoModel.from_pretrained(model_id)
        except Exception as err:  # noqa: BLE001 - truncated safetensors, pickle-only .bin, bad config: one line each
            if Path(model_id).exists():
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise InputError(f"{model_id}: not a loadable speech model folder ({type(err).__name__}: {first[:300]})"
                                 ) from err
            raise InputError(offline_help(model_id)) from err
        self.model.eval().to(device)
        self.device = device
        self.autocast_dtype = autocast_dtype
        if device.type == "cpu" and autocast_dtype is not None:
            keep_convolutions_in_float32(self.model)  # AMX bf16 convolutions are wrong (module docstring)
        config = self.model.config
        self.first_conv: LengthAwareFirstConv | None = None
        if getattr(config, "feat_extract_norm", "layer") == "group":
            layers = self.model.feature_extractor.conv_layers
            self.first_conv = LengthAwareFirstConv(layers[0])
            layers[0] = self.first_conv
        self.info = SpeechModelInfo(
            model_id=model_id,
            weights_sha256=weights_checksum(self.model),
            num_hidden_states=config.num_hidden_layers + 1,
            hidden_size=config.hidden_size,
            sample_rate_hz=int(self.feature_extractor.sampling_rate),
            padding_policy="per-utterance-first-conv" if self.first_conv else "pad-and-mask",
        )

    def frame_counts(self, num_samples: list[int]) -> list[int]:
        """Valid output frames of each waveform length (samples at the model rate)."""
        lengths = self.model._get_feat_extract_output_lengths(torch.tensor(num_samples))
        return [int(n) for n in lengths]

    @torch.inference_mode()
    def embed(self, waves: list[np.ndarray], frame_layers: tuple[int, ...] = ()
              ) -> tuple[np.ndarray, np.ndarray, dict[int, list[np.ndarray]]]:
        """Pooled hidden states of a batch, and optionally the frames of some layers.

        ``waves``: B mono float32 arrays at ``info.sample_rate_hz``, each >= 400 samples (25 ms).
        Returns ``(pooled [B, L+1, D] float32, frames [B] int64, sequences)``: the mean over each
        utterance's valid frames of every hidden state, how many frames that mean covers (for pooling
        windows), and for each layer in ``frame_layers`` the B valid frame sequences ``[T_b, D]`` float32.
        """
        inputs = self.feature_extractor(
            [w for w in waves], sampling_rate=self.info.sample_rate_hz, padding=True,
            return_attention_mask=True, return_tensors="pt",
        )
        values = inputs["input_values"].to(self.device)
        sample_mask = inputs["attention_mask"].to(self.device)
        valid = [int(w.shape[0]) for w in waves]
        if self.first_conv is not None:
            self.first_conv.valid_samples = valid
        enabled = self.autocast_dtype is not None
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=enabled):
            out = self.model(values, attention_mask=sample_mask, output_hidden_states=True)
        frames = torch.tensor(self.frame_counts(valid), device=values.device)
        num_frames = out.hidden_states[0].shape[1]
        mask = (torch.arange(num_frames, device=values.device)[None, :] < frames[:, None]).float()[..., None]
        # Pool layer by layer: stacking [B, L+1, T, D] first would multiply peak memory by L+1.
        pooled = torch.stack([(h.float() * mask).sum(1) for h in out.hidden_states], dim=1)
        pooled = pooled / frames[:, None, None].float()
        counts = frames.cpu().numpy().astype(np.int64)
        sequences = {layer: [out.hidden_states[layer][b, :n].float().cpu().numpy() for b, n in enumerate(counts)]
                     for layer in frame_layers}
        return pooled.cpu().numpy(), counts, sequences
