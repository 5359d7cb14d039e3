"""Reduced precision on a CPU gives the fp32 embeddings, on every x86 CPU.

oneDNN's AMX bf16 convolutions (recent Intel CPUs) return wrong values for WavLM's grouped positional
convolution; the speech model therefore keeps convolutions in fp32 under CPU autocast. The first test checks
that no convolution reaches a bf16 kernel (it fails on any CPU if one does), the second compares the whole
speech stage in bf16 with fp32 (on an AMX CPU it fails when the first one does).
"""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cache import CacheReader
from pipeline.corpora import read_generic_manifest
from pipeline.extract import ExtractConfig, extract
from pipeline.models.speech_model import SpeechEmbedder
from pipeline.stages.speech import SpeechConfig
from tests.synth import speechlike, write_wav

CPU = torch.device("cpu")


class _KernelDtypes(TorchDispatchMode):
    """Records the input dtype of every convolution and matrix product that reaches a kernel (after autocast)."""

    def __init__(self):
        super().__init__()
        self.seen: dict[str, set[torch.dtype]] = {"convolution": set(), "matmul": set()}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = func.overloadpacket.__name__
        kind = "convolution" if "conv" in name else \
            "matmul" if name in ("linear", "matmul", "mm", "bmm", "addmm", "baddbmm") else None
        if kind and isinstance(args[0], torch.Tensor):
            self.seen[kind].add(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("model", ["tiny_wavlm", "tiny_wavlm_group"])
def test_cpu_bf16_runs_no_convolution_in_bf16_but_its_matrix_products_are(model, request):
    embedder = SpeechEmbedder(str(request.getfixturevalue(model)), CPU, torch.bfloat16)
    with _KernelDtypes() as kernels:
        embedder.embed([speechlike(1, 0.8), speechlike(2, 0.5)])
    assert kernels.seen["convolution"] == {torch.float32}
    assert torch.bfloat16 in kernels.seen["matmul"]  # autocast is really on: the test could fail


def test_the_speech_stage_in_bf16_on_a_cpu_matches_fp32(tmp_path, tiny_wavlm):
    lines = ["utt_id,path,speaker,fold,valence,arousal"]
    for i in range(6):
        write_wav(tmp_path / f"u{i}.wav", speechlike(10 + i, 0.5 + 0.2 * i))
        lines.append(f"u{i},u{i}.wav,s{i % 3},{i % 3 + 1},3,3")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    manifest, _ = read_generic_manifest(tmp_path / "m.csv")
    pooled = {}
    for precision in ("bf16", "fp32"):
        cache = tmp_path / f"{precision}.h5"
        extract(cache, manifest, ["speech"], ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm),
                                                                                precision=precision)), device="cpu")
        pooled[precision] = CacheReader(cache).read("speech", "pooled").astype(np.float32)
    difference = np.linalg.norm(pooled["bf16"] - pooled["fp32"], axis=-1)
    relative = difference / np.linalg.norm(pooled["fp32"], axis=-1)  # [N, L+1]
    assert relative.max() < 0.05  # bf16 rounding: ~0.5 %; the AMX convolution defect: ~30 %
    assert relative.max() > 0  # bf16 really ran


def test_a_cpu_bf16_cache_from_before_the_fix_is_recognised_and_a_new_one_is_not(tmp_path, tiny_wavlm):
    from pipeline.extract import _reduced_precision_cpu_before_fix

    old = {"config": {"precision": "bf16"}, "device_type": "cpu"}  # what such a cache's provenance holds
    assert _reduced_precision_cpu_before_fix(old)
    assert not _reduced_precision_cpu_before_fix({**old, "device_type": "cuda"})  # GPU convolutions were right
    assert not _reduced_precision_cpu_before_fix({**old, "config": {"precision": "fp32"}})
    write_wav(tmp_path / "u0.wav", speechlike(3, 0.6))
    (tmp_path / "m.csv").write_text("utt_id,path,speaker,fold,valence,arousal\nu0,u0.wav,s0,1,3,3\n")
    manifest, _ = read_generic_manifest(tmp_path / "m.csv")
    config = ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm), precision="bf16"))
    extract(tmp_path / "c.h5", manifest, ["speech"], config, device="cpu")
    assert not _reduced_precision_cpu_before_fix(CacheReader(tmp_path / "c.h5").provenance("speech"))
    assert extract(tmp_path / "c.h5", manifest, ["speech"], config, device="cpu") == {}  # accepted, nothing to do
