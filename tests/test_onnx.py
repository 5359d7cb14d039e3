"""export --onnx and predict --runtime onnx | onnx-int8: the ONNX speech graph pools as the torch stage does at
lengths it was not exported with; a model folder's ONNX runtimes predict valence and arousal within 0.01 of torch
on the label scale (issue 31: a runtime that differs more is refused, here); folders without ONNX files, changed
ONNX files and other speech weights are refused with one line."""

import json
import shutil

import numpy as np
import onnx as onnx_lib
import polars as pl
import pytest
import torch

from cache import CacheReader
from core.errors import InputError
from heads.deployment.export import export_model, run_context_projection
from heads.deployment.predict import load_model, predict_audio
from heads.training.runs import read_run
from pipeline.corpora.segments import SegmentConfig
from pipeline.models.onnx_speech import EXPORT_SECONDS, OnnxSpeechEmbedder, export_speech_onnx
from pipeline.models.speech_model import SpeechEmbedder
from tests.synth import RATE, speechlike
from tests.test_cli_heads import main_in_process
from tests.test_predict import _exported, _fold1_manifest, _long_recording, trained  # noqa: F401 - a fixture

LABEL_TOLERANCE = 0.01  # issue 31: largest |difference| to torch of valence or arousal, on the label scale


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_onnx_speech_pools_as_torch_at_lengths_other_than_the_export_length(norm, tiny_wavlm, tiny_wavlm_group,
                                                                           tmp_path):
    model = str(tiny_wavlm if norm == "layer" else tiny_wavlm_group)
    info = export_speech_onnx(model, tmp_path / "speech.onnx")
    lengths = [int(0.7 * RATE), int(2.3 * RATE)]
    assert int(EXPORT_SECONDS * RATE) not in lengths
    waves = [speechlike(seed, n / RATE) for seed, n in enumerate(lengths)]
    expected, expected_frames, _ = SpeechEmbedder(model, torch.device("cpu")).embed(waves)  # one padded batch
    embedder = OnnxSpeechEmbedder(str(tmp_path / "speech.onnx"))
    pooled, frames, _ = embedder.embed(waves)
    assert pooled.shape == expected.shape and pooled.dtype == np.float32
    assert np.abs(pooled - expected).max() <= 1e-4
    assert frames.tolist() == expected_frames.tolist()
    assert embedder.info.weights_sha256 == info.weights_sha256  # predict's weight check holds for ONNX features
    with pytest.raises(InputError, match="frame sequences"):
        embedder.embed(waves, (1,))


@pytest.fixture(scope="module")
def onnx_model(trained, tmp_path_factory):  # noqa: F811 - the fixture of tests.test_predict
    """The dialogue-state run of ``trained`` exported with ``--onnx``."""
    work, _ = trained
    run = work / "runs" / "state" / "fold1"
    out = tmp_path_factory.mktemp("onnx") / "model"
    return export_model(run, out, run_context_projection(read_run(run)[0]), onnx=True)


def test_export_onnx_lists_its_files_in_model_json_and_checksums(onnx_model):
    record = json.loads((onnx_model / "model.json").read_text())
    onnx = record["onnx"]
    files = [onnx["speech"], onnx["speech_int8"], *onnx["heads"]]
    assert files == ["speech.onnx", "speech.int8.onnx", *(f"head_seed{s}.onnx" for s in record["seeds"])]
    assert onnx["opset"] == 17 and "onnxruntime" in onnx["exported_with"]
    listed = (onnx_model / "CHECKSUMS").read_text()
    assert all(f"  {name}\n" in listed for name in files)
    ops = {node.op_type for node in onnx_lib.load(str(onnx_model / "speech.int8.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "Conv" in ops and "ConvInteger" not in ops
    assert not list(onnx_model.parent.glob(".model.onnx-*"))  # the staging folder is gone


@pytest.fixture(scope="module")
def torch_predictions(onnx_model, trained, tmp_path_factory):  # noqa: F811
    _, cache = trained
    listing = tmp_path_factory.mktemp("listing") / "new.csv"
    _fold1_manifest(cache, listing)
    return listing, load_model(onnx_model).predict(manifest=str(listing), device="cpu")


@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8"])
def test_onnx_runtimes_predict_within_0_01_of_torch_on_the_label_scale(onnx_model, torch_predictions, tmp_path,
                                                                       runtime):
    listing, expected = torch_predictions
    code, err = main_in_process("predict", "--model", str(onnx_model), "--manifest", str(listing), "--runtime",
                                runtime, "--cache", str(tmp_path / "c.h5"), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    got = pl.read_csv(tmp_path / "p.csv").join(expected, on="utt_id", suffix="_torch")
    assert got.height == expected.height > 0
    difference = max(float((got[d] - got[f"{d}_torch"]).abs().max()) for d in ("valence", "arousal"))
    assert difference <= LABEL_TOLERANCE, f"--runtime {runtime} differs from torch by {difference:.4f}"
    if runtime == "onnx":  # fp32 throughout: the same function up to rounding
        assert difference <= 1e-4
    assert {"attn_valence_prosody", "attn_arousal_speech"} <= set(got.columns)
    speech = CacheReader(tmp_path / "c.h5").provenance("speech")
    assert speech["runtime"]["name"] == "onnxruntime" and speech["device_type"] == "cpu"
    assert ("int8" in speech["runtime"]["quantization"]) == (runtime == "onnx-int8")


def test_a_segmented_recording_predicts_in_the_onnx_runtime_as_in_torch(onnx_model, trained, tmp_path):  # noqa: F811
    _, cache = trained
    path, _, _ = _long_recording(cache, tmp_path / "call.wav")
    model = load_model(onnx_model)
    args = dict(audio=[str(path)], manifest=None, speech_model=None, device="cpu", segments=SegmentConfig(0.8, 0.4))
    expected, _ = predict_audio(model, **args)
    got, failures = predict_audio(model, **args, runtime="onnx")
    assert not failures and got.height == expected.height > 1
    assert got["start_s"].to_list() == expected["start_s"].to_list()
    assert max(float((got[d] - expected[d]).abs().max()) for d in ("valence", "arousal")) <= 1e-4


def test_onnx_runtimes_are_refused_for_a_folder_exported_without_onnx(trained, tmp_path):  # noqa: F811
    work, cache = trained
    model = _exported(work, "no-state", tmp_path / "model")
    file = CacheReader(cache).manifest["path"][0]
    code, err = main_in_process("predict", "--model", str(model), file, "--runtime", "onnx")
    assert code == 2 and err.startswith(f"error: {model}: exported without ONNX files") and "--onnx" in err
    assert len(err.strip().splitlines()) == 1
    code, err = main_in_process("predict", "--model", str(model), file, "--runtime", "tensorrt")
    assert code == 2 and "--runtime tensorrt: choose torch, onnx, onnx-int8" in err


@pytest.mark.parametrize("damage", ["speech.int8.onnx changed", "head_seed0.onnx unlisted"])
def test_a_changed_or_unlisted_onnx_file_is_refused(onnx_model, tmp_path, damage):
    model = shutil.copytree(onnx_model, tmp_path / "model")
    if damage == "speech.int8.onnx changed":
        path = model / "speech.int8.onnx"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        listing = model / "CHECKSUMS"
        listing.write_text("".join(line + "\n" for line in listing.read_text().splitlines()
                                   if not line.endswith("head_seed0.onnx")))
    with pytest.raises(InputError, match="changed since export|does not list head_seed0.onnx"):
        load_model(model)


def test_export_onnx_refuses_other_speech_weights_and_writes_nothing(trained, tmp_path):  # noqa: F811
    from testing.random_wavlm import save_random_wavlm

    work, _ = trained
    other = save_random_wavlm(tmp_path / "other_wavlm", "tiny", norm="layer", seed=7)
    out = tmp_path / "exports" / "model"
    code, err = main_in_process("export", "--run", str(work / "runs" / "no-state" / "fold1"), "--out", str(out),
                                "--onnx", "--speech-model", str(other))
    assert code == 2 and "speech model weights differ" in err and "Traceback" not in err
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_export_checks_each_runtime_against_torch_and_predict_refuses_one_too_far_off(onnx_model, trained, tmp_path,  # noqa: F811
                                                                                      monkeypatch):
    checked = json.loads((onnx_model / "model.json").read_text())["onnx"]["checked"]
    assert checked["files"] > 0 and checked["onnx"] <= 1e-4 and checked["onnx-int8"] <= LABEL_TOLERANCE
    assert f"{checked['onnx-int8']:.3g}" in (onnx_model / "README.md").read_text()
    monkeypatch.setattr("heads.deployment.onnx_heads.MAX_DIFFERENCE", checked["onnx-int8"] / 2)  # as if int8 were too far off
    _, cache = trained
    code, err = main_in_process("predict", "--model", str(onnx_model), CacheReader(cache).manifest["path"][0],
                                "--runtime", "onnx-int8")
    assert code == 2 and "moved valence or arousal by up to" in err and "--runtime onnx" in err


def test_a_speaker_normalised_run_exports_with_onnx_checked_on_one_speakers_files(trained, tmp_path,  # noqa: F811
                                                                                   monkeypatch):
    from heads.training.experiment import train_fold
    from heads.training.features import FeatureConfig, load_corpus_arrays
    from heads.training.train import TrainConfig

    work, cache = trained
    run = tmp_path / "run"
    train_fold(load_corpus_arrays(CacheReader(cache)), 1,
               TrainConfig(epochs=1, features=FeatureConfig(use_state=False, per_speaker_norm=True)), [0], run)
    old = export_model(run, tmp_path / "model", None)
    with pytest.raises(InputError, match="no speaker with 10"):  # the tiny corpus has 2-3 files per speaker
        export_model(run, old, None, overwrite=True, onnx=True)
    assert "onnx" not in json.loads((old / "model.json").read_text())  # the old folder, whole
    assert not list(tmp_path.glob(".model.*"))  # nothing half-written beside it
    monkeypatch.setattr("heads.deployment.predict.MIN_SPEAKER_ROWS", 2)  # predict's rule and export's choice of check files
    monkeypatch.setattr("heads.deployment.export.MIN_SPEAKER_ROWS", 2)
    checked = json.loads((export_model(run, old, None, overwrite=True, onnx=True) / "model.json").read_text())
    assert checked["onnx"]["checked"]["files"] >= 2 and checked["onnx"]["checked"]["onnx"] <= 1e-4
