"""export + predict: a model folder predicts new audio exactly as the run predicted its test rows, in a fresh
process without the cache or the runs; wrong speech weights, missing files and damaged folders are clear."""

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cache import CacheReader
from heads.training.experiment import train_fold
from heads.training.features import FeatureConfig, load_corpus_arrays
from heads.training.train import TrainConfig
from tests.test_cli import run_cli
from tests.test_cli_heads import main_in_process


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_wavlm):
    """A cache of the IEMOCAP-shaped tree (ema-features state), a fold-1 run with state and one without."""
    from pipeline.corpora import read_iemocap
    from pipeline.extract import ExtractConfig, extract
    from pipeline.stages.prosody import ProsodyConfig
    from pipeline.stages.speech import SpeechConfig
    from tests.synth import write_iemocap_tree

    work = tmp_path_factory.mktemp("predict")
    manifest, _ = read_iemocap(write_iemocap_tree(work))
    cache = work / "c.h5"
    extract(cache, manifest, ["speech", "prosody", "state"],
            ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm)), prosody=ProsodyConfig(workers=1)), device="cpu")
    arrays = load_corpus_arrays(CacheReader(cache))
    config = TrainConfig(epochs=3, state_gate=False, features=FeatureConfig(use_state=True))  # the state kept
    train_fold(arrays, 1, config, [0, 1], work / "runs" / "state" / "fold1")
    train_fold(arrays, 1, TrainConfig(epochs=3, features=FeatureConfig(use_state=False)), [0],
               work / "runs" / "no-state" / "fold1")
    return work, cache


def _export(run_dir, out):
    result = run_cli("export", "--run", str(run_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def _export_in_process(run_dir, out):
    from heads.deployment.export import export_model, run_context_projection
    from heads.training.runs import read_run

    return export_model(run_dir, out, run_context_projection(read_run(run_dir)[0]))


def _run_with_state_kind(trained, tmp_path, tiny_wavlm, state, epochs: int = 3):
    """A copy of the ``trained`` cache whose state stage is made again with ``state`` (speech and prosody kept), and
    a fold-1 run that keeps the state (no gate): ``(cache copy, run folder)``."""
    from pipeline.corpora import read_iemocap
    from pipeline.extract import ExtractConfig, extract
    from pipeline.stages.prosody import ProsodyConfig
    from pipeline.stages.speech import SpeechConfig

    work, cache = trained
    copy = tmp_path / "c.h5"
    shutil.copyfile(cache, copy)
    manifest, _ = read_iemocap(work / "IEMOCAP_full_release")
    extract(copy, manifest, ["speech", "prosody", "state"],  # only the state stage is recomputed
            ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm)), prosody=ProsodyConfig(workers=1), state=state),
            device="cpu")
    assert CacheReader(copy).provenance("state")["kind"] == state.kind
    run = tmp_path / "run"
    train_fold(load_corpus_arrays(CacheReader(copy)), 1,
               TrainConfig(epochs=epochs, state_gate=False, features=FeatureConfig(use_state=True)), [0], run)
    return copy, run


def _predicted_as_run(cache, model, run, tmp_path) -> float:
    """``cli.py predict`` (in process) of the cache's fold-1 files with their manifest columns: the largest
    difference from the run's own test predictions."""
    _fold1_manifest(cache, tmp_path / "new.csv")
    code, err = main_in_process("predict", "--model", str(model), "--manifest", str(tmp_path / "new.csv"), "--out",
                                str(tmp_path / "p.csv"), "--device", "cpu")
    assert code == 0, err
    return _compare(tmp_path / "p.csv", run)


def _exported(work, name, out):
    return _export_in_process(work / "runs" / name / "fold1", out)


def _fold1_manifest(cache, path):
    m = CacheReader(cache).manifest.filter(pl.col("fold") == 1)
    m.select("utt_id", "path", "speaker", "dialog_id", "start_s").write_csv(path)
    return m


def _compare(predicted_csv, run_dir):
    expected = (pl.read_csv(run_dir / "predictions.csv").group_by("utt_id")
                .agg(pl.col("valence_pred").mean(), pl.col("arousal_pred").mean()))
    got = pl.read_csv(predicted_csv).join(expected, on="utt_id")
    assert got.height == expected.height
    return max(np.abs(got["valence"] - got["valence_pred"]).max(), np.abs(got["arousal"] - got["arousal_pred"]).max())


def test_predict_with_dialogue_order_equals_the_runs_test_predictions_in_a_fresh_process(trained, tmp_path):
    work, cache = trained
    model = _export(work / "runs" / "state" / "fold1", tmp_path / "model")
    manifest = _fold1_manifest(cache, tmp_path / "new.csv")
    moved, runs = tmp_path / "elsewhere.h5", tmp_path / "runs-elsewhere"
    shutil.move(cache, moved)  # the model must not need the cache nor the runs any more
    shutil.move(work / "runs", runs)
    try:
        result = run_cli("predict", "--model", str(model), "--manifest", str(tmp_path / "new.csv"),
                         "--out", str(tmp_path / "p.csv"), "--device", "cpu")
    finally:
        shutil.move(moved, cache)
        shutil.move(runs, work / "runs")
    assert result.returncode == 0, result.stderr
    assert _compare(tmp_path / "p.csv", work / "runs" / "state" / "fold1") <= 1e-5
    assert manifest.height == pl.read_csv(tmp_path / "p.csv").height
    card = (model / "README.md").read_text()
    assert "Intended use and limits" in card and "weights sha256" in card


def test_a_model_with_the_predicted_context_predicts_new_audio_as_its_run_did(trained, tmp_path, tiny_wavlm):
    """ema-predictions: the exported first-pass predictor gives new files the context the run's test rows got."""
    from pipeline.stages.state import StateConfig

    copy, run = _run_with_state_kind(trained, tmp_path, tiny_wavlm, StateConfig(kind="ema-predictions"))
    model = _export_in_process(run, tmp_path / "model")
    assert json.loads((model / "model.json").read_text())["state"]["kind"] == "ema-predictions"
    assert _predicted_as_run(copy, model, run, tmp_path) <= 1e-5


def test_the_python_api_on_plain_files_equals_the_runs_predictions_for_a_model_without_state(trained, tmp_path):
    from heads.deployment.predict import load_model

    work, cache = trained
    model = _exported(work, "no-state", tmp_path / "model")
    files = CacheReader(cache).manifest.filter(pl.col("fold") == 1)["path"].to_list()
    load_model(model).predict(files, device="cpu").write_csv(tmp_path / "p.csv")
    predicted = pl.read_csv(tmp_path / "p.csv")
    assert set(predicted["utt_id"]) == {Path(f).stem for f in files}
    assert _compare(tmp_path / "p.csv", work / "runs" / "no-state" / "fold1") <= 1e-5


def test_other_speech_weights_are_refused_with_one_error_line(trained, tmp_path):
    from testing.random_wavlm import save_random_wavlm

    work, cache = trained
    model = _exported(work, "no-state", tmp_path / "model")
    other = save_random_wavlm(tmp_path / "other_wavlm", "tiny", norm="layer", seed=7)
    file = CacheReader(cache).manifest["path"][0]
    code, err = main_in_process("predict", "--model", str(model), "--audio", file, "--speech-model", str(other),
                                "--device", "cpu")
    assert code == 2 and err.startswith("error:") and "speech model weights differ" in err
    assert "Traceback" not in err


def test_a_missing_file_is_reported_and_the_rest_predicted(trained, tmp_path, caplog):
    from heads.deployment.predict import load_model

    work, cache = trained
    model = _exported(work, "no-state", tmp_path / "model")
    file = CacheReader(cache).manifest["path"][0]
    predicted = load_model(model).predict([file, str(tmp_path / "gone.wav")], device="cpu")
    assert predicted.height == 1 and "gone.wav" in caplog.text


def test_predict_reports_each_bad_file_once_and_no_internal_steps(trained, tmp_path):
    work, cache = trained
    model = _exported(work, "no-state", tmp_path / "model")
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")  # fails the speech and the prosody stage alike
    good = CacheReader(cache).manifest["path"][0]
    result = run_cli("predict", "--model", str(model), good, str(tmp_path / "broken.wav"), str(tmp_path / "gone.wav"),
                     "--device", "cpu", "--clip")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("skipped ") for line in lines), result.stderr
    assert "broken.wav" in lines[0] + lines[1] and "gone.wav" in lines[0] + lines[1]
    table = result.stdout
    assert "writing stage" not in table + result.stderr and CacheReader(cache).manifest["utt_id"][0] in table


def test_clip_keeps_predictions_inside_the_training_labels_range(trained, tmp_path):
    from heads.deployment.predict import load_model

    work, cache = trained
    model = load_model(_exported(work, "no-state", tmp_path / "model"))
    low, high = model.record["target_range"]["valence"]
    files = CacheReader(cache).manifest["path"].to_list()[:6]
    clipped = model.predict(files, device="cpu", clip=True)
    assert clipped["valence"].min() >= low and clipped["valence"].max() <= high
    free = model.predict(files, device="cpu")
    inside = (free["valence"] >= low) & (free["valence"] <= high)
    assert (clipped.filter(inside)["valence"] == free.filter(inside)["valence"]).all()


def test_a_changed_model_file_is_refused(trained, tmp_path):
    from core.errors import InputError
    from heads.deployment.predict import load_model

    work, _ = trained
    model = _exported(work, "no-state", tmp_path / "model")
    head = model / "head_seed0.safetensors"
    data = bytearray(head.read_bytes())
    data[-5] ^= 0xFF
    head.write_bytes(bytes(data))
    with pytest.raises(InputError, match="changed since export"):
        load_model(model)


@pytest.mark.parametrize("damage", ["empty listing", "line removed", "head swapped for a link"])
def test_a_model_folder_whose_listing_leaves_out_a_needed_file_or_holds_a_link_is_refused(trained, tmp_path, damage):
    from core.errors import InputError
    from heads.deployment.predict import load_model

    work, _ = trained
    model = _exported(work, "no-state", tmp_path / "model")
    listing = model / "CHECKSUMS"
    head = model / "head_seed0.safetensors"
    if damage == "empty listing":
        listing.write_text("")
    elif damage == "line removed":  # then the weights are modified: nothing would check them
        listing.write_text("".join(line + "\n" for line in listing.read_text().splitlines() if "head_seed0" not in line))
        head.write_bytes(head.read_bytes()[:-8] + b"\x00" * 8)
    else:
        outside = tmp_path / "elsewhere.safetensors"
        shutil.move(head, outside)
        head.symlink_to(outside)
    with pytest.raises(InputError, match="does not list|symbolic link"):
        load_model(model)


def test_export_overwrite_replaces_only_a_model_folder(trained, tmp_path):
    work, _ = trained
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    code, err = main_in_process("export", "--run", str(work / "runs" / "no-state" / "fold1"), "--out", str(precious),
                                "--overwrite")
    assert code == 2 and "not a model folder" in err and (precious / "thesis.txt").read_text() == "years of work"
    model = _exported(work, "no-state", tmp_path / "model")
    code, _ = main_in_process("export", "--run", str(work / "runs" / "no-state" / "fold1"), "--out", str(model),
                              "--overwrite")
    assert code == 0 and (model / "model.json").is_file()


def test_a_final_model_trains_on_every_labelled_row_and_predicts_after_export(trained, tmp_path):
    from heads.deployment.predict import load_model
    from heads.training.runs import read_run

    work, cache = trained
    run = tmp_path / "final"
    result = run_cli("train-heads", "--cache", str(cache), "--fold", "all", "--out", str(run), "--epochs", "2")
    assert result.returncode == 0, result.stderr
    record, predictions = read_run(run)
    reader = CacheReader(cache)
    sizes = record["split_sizes"]
    assert sizes["test"] == 0 and predictions.height == 0
    assert sizes["train"] + sizes["validation"] == int(reader.ok(reader.stages).sum())
    model = _export_in_process(run, tmp_path / "model")
    _fold1_manifest(cache, tmp_path / "new.csv")
    predicted = load_model(model).predict(manifest=str(tmp_path / "new.csv"), device="cpu")
    assert predicted.height == 5 and predicted["valence"].is_finite().all()
    assert "no held-out score" in (model / "README.md").read_text()


def test_a_predict_manifest_that_is_empty_or_has_a_bad_start_time_is_one_error_line_or_a_skipped_row(trained, tmp_path):
    work, cache = trained
    model = _exported(work, "no-state", tmp_path / "model")
    (tmp_path / "empty.csv").write_text("")
    code, err = main_in_process("predict", "--model", str(model), "--manifest", str(tmp_path / "empty.csv"))
    assert code == 2 and err.startswith(f"error: {tmp_path / 'empty.csv'}: the file is empty")
    good = CacheReader(cache).manifest["path"][0]
    (tmp_path / "bad.csv").write_text(f"path,dialog_id,start_s\n{good},d,abc\n{good},d,1.5\n")
    result = run_cli("predict", "--model", str(model), "--manifest", str(tmp_path / "bad.csv"), "--device", "cpu")
    assert result.returncode == 0 and "start_s is not a number: 'abc'" in result.stderr


def test_predict_with_only_bad_files_fails_once_per_file_and_exits_2(trained, tmp_path):
    work, _ = trained
    model = _exported(work, "no-state", tmp_path / "model")
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    result = run_cli("predict", "--model", str(model), str(tmp_path / "broken.wav"), "--device", "cpu")
    assert result.returncode == 2 and result.stderr.count("skipped ") == 1  # one skip line for the one file
    assert "error: no file could be predicted" in result.stderr


def _long_recording(cache, path, files=4):
    """Fold-1 files of the cache joined with half a second of quiet between them: ``(path, wave, rate)``."""
    import soundfile

    waves = []
    for file in CacheReader(cache).manifest.filter(pl.col("fold") == 1)["path"].to_list()[:files]:
        wave, rate = soundfile.read(file, dtype="float32")
        waves += [wave, np.full(rate // 2, 1e-4, np.float32)]
    wave = np.concatenate(waves)
    soundfile.write(path, wave, rate, subtype="FLOAT")
    return path, wave, rate


@pytest.mark.parametrize("run, split", [("state", "fixed"), ("state", "energy"), ("no-state", "fixed")])
def test_a_segmented_recording_is_predicted_as_its_segments_cut_by_hand_in_one_dialogue(trained, tmp_path, run, split):
    """Independent reference: the same stretches cut with numpy, written as files and predicted as one dialogue in
    time order (so a model with a dialogue state gets the same context)."""
    import soundfile

    from heads.deployment.predict import load_model
    from pipeline.corpora.segments import SegmentConfig

    work, cache = trained
    model = load_model(_exported(work, run, tmp_path / "model"))
    assert bool(model.record["state"]) == (run == "state")  # the context is what is tested
    path, wave, rate = _long_recording(cache, tmp_path / "call.wav")
    from heads.deployment.predict import predict_audio

    segmented, failures = predict_audio(model, [str(path)], None, None, "cpu",
                                        segments=SegmentConfig(0.8, 0.4, split))
    assert not failures and segmented["start_s"].to_list() == sorted(segmented["start_s"].to_list())
    if split == "fixed":
        assert segmented["end_s"].max() == pytest.approx(len(wave) / rate)
    rows = []
    for k, (start, end) in enumerate(zip(segmented["start_s"], segmented["end_s"])):
        cut = tmp_path / f"cut{k}.wav"
        soundfile.write(cut, wave[round(start * rate) : round(end * rate)], rate, subtype="FLOAT")
        rows.append({"path": str(cut), "utt_id": f"cut{k}", "dialog_id": "call", "start_s": start})
    pl.DataFrame(rows).write_csv(tmp_path / "cuts.csv")
    by_hand = model.predict(manifest=str(tmp_path / "cuts.csv"), device="cpu")
    by_hand = by_hand.with_columns(pl.col("utt_id").str.slice(3).cast(pl.Int64).alias("segment")).sort("segment")
    assert by_hand.height == segmented.height
    assert np.abs(by_hand["valence"] - segmented["valence"]).max() <= 1e-5
    assert np.abs(by_hand["arousal"] - segmented["arousal"]).max() <= 1e-5


def test_segments_are_extracted_in_chunks_with_the_same_result(trained, tmp_path):
    from heads.deployment.predict import load_model, predict_segments
    from pipeline.corpora.prediction import prediction_manifest
    from pipeline.corpora.segments import SegmentConfig

    work, cache = trained
    model = load_model(_exported(work, "state", tmp_path / "model"))
    path, _, _ = _long_recording(cache, tmp_path / "call.wav")
    rows, _ = prediction_manifest([str(path)])
    config = SegmentConfig(0.8, 0.4)
    whole, _ = predict_segments(model, rows, config, model.record["speech_model"]["model_id"], "cpu", "skip", 1000)
    chunked, _ = predict_segments(model, rows, config, model.record["speech_model"]["model_id"], "cpu", "skip", 3)
    assert whole.height > 6 and np.abs(whole["valence"] - chunked["valence"]).max() <= 1e-6


def test_predict_segment_writes_one_row_per_segment_and_a_report_with_the_time_series(trained, tmp_path):
    work, cache = trained
    model = _exported(work, "no-state", tmp_path / "model")
    path, wave, rate = _long_recording(cache, tmp_path / "call.wav", files=2)
    code, err = main_in_process("predict", "--model", str(model), str(path), "--segment", "1", "--hop", "0.5",
                                "--split", "fixed", "--out", str(tmp_path / "p.csv"), "--report", str(tmp_path / "p.html"),
                                "--device", "cpu")
    assert code == 0, err
    table = pl.read_csv(tmp_path / "p.csv")
    assert table.columns[:4] == ["utt_id", "segment", "start_s", "end_s"]
    assert table["segment"].to_list() == list(range(table.height))
    assert np.allclose(table["start_s"].to_numpy()[:-1], np.arange(table.height - 1) * 0.5)
    page = (tmp_path / "p.html").read_text()
    assert "data:image/png;base64," in page and "against time" in page


def test_a_recording_without_speech_is_reported_not_silently_left_out(trained, tmp_path):
    import soundfile

    from heads.deployment.predict import load_model, predict_audio
    from pipeline.corpora.segments import SegmentConfig

    work, cache = trained
    model = load_model(_exported(work, "no-state", tmp_path / "model"))
    soundfile.write(tmp_path / "quiet.wav", np.zeros(16000 * 3, np.float32), 16000)
    speech, _, _ = _long_recording(cache, tmp_path / "call.wav", files=2)
    frame, failures = predict_audio(model, [str(speech), str(tmp_path / "quiet.wav")], None, None, "cpu",
                                    segments=SegmentConfig(1.0, 0.5, "energy"))
    assert set(frame["utt_id"]) == {"call"}
    assert len(failures) == 1 and "quiet.wav" in failures[0].path and "no speech" in failures[0].reason


def test_hop_without_segment_is_refused(trained, tmp_path):
    work, cache = trained
    model = _exported(work, "no-state", tmp_path / "model")
    code, err = main_in_process("predict", "--model", str(model), CacheReader(cache).manifest["path"][0],
                                "--hop", "2", "--device", "cpu")
    assert code == 2 and "--segment" in err


def test_a_speaker_normalised_model_predicts_new_audio_with_each_speakers_own_statistics(trained, tmp_path,
                                                                                         monkeypatch):
    """The fold-1 speakers' files, all given with their speaker: the same per-speaker statistics the run used."""
    monkeypatch.setattr("heads.deployment.predict.MIN_SPEAKER_ROWS", 2)  # the tiny corpus has 2-3 files per speaker
    work, cache = trained
    run = tmp_path / "run"
    train_fold(load_corpus_arrays(CacheReader(cache)), 1,
               TrainConfig(epochs=3, features=FeatureConfig(use_state=False, per_speaker_norm=True)), [0], run)
    model = _export_in_process(run, tmp_path / "model")
    assert _predicted_as_run(cache, model, run, tmp_path) <= 1e-5


def test_a_speaker_normalised_model_refuses_files_without_speakers_or_too_few_per_speaker(trained, tmp_path):
    work, cache = trained
    run = tmp_path / "run"
    train_fold(load_corpus_arrays(CacheReader(cache)), 1,
               TrainConfig(epochs=1, features=FeatureConfig(use_state=False, per_speaker_norm=True)), [0], run)
    model = _export_in_process(run, tmp_path / "model")
    files = CacheReader(cache).manifest["path"].to_list()[:3]
    code, err = main_in_process("predict", "--model", str(model), *files, "--device", "cpu")
    assert code == 2 and "speaker column" in err
    pl.DataFrame({"path": files, "speaker": ["ann"] * 3}).write_csv(tmp_path / "few.csv")
    code, err = main_in_process("predict", "--model", str(model), "--manifest", str(tmp_path / "few.csv"),
                                "--device", "cpu")
    assert code == 2 and "ann (3)" in err


def test_files_predicted_one_at_a_time_equal_files_predicted_in_padded_batches(trained, tmp_path):
    """Lengths 1.0-1.8 s: with a large batch budget, files of similar length share a padded batch."""
    import soundfile

    from heads.deployment.predict import load_model, predict_audio

    work, cache = trained
    model = load_model(_exported(work, "no-state", tmp_path / "model"))
    _, wave, rate = _long_recording(cache, tmp_path / "call.wav")
    files = []
    for k, seconds in enumerate(np.linspace(1.0, 1.8, 9)):
        files.append(str(tmp_path / f"f{k}.wav"))
        soundfile.write(files[-1], wave[k * 800 : k * 800 + int(seconds * rate)], rate, subtype="FLOAT")
    batched, _ = predict_audio(model, files, None, None, "cpu", batch_seconds=60.0)
    alone = pl.concat([predict_audio(model, [f], None, None, "cpu")[0] for f in files])
    joined = batched.join(alone, on="utt_id", suffix="_alone")
    assert joined.height == len(files)
    for d in ("valence", "arousal"):
        assert np.abs(joined[d] - joined[f"{d}_alone"]).max() <= 1e-5


def test_the_seeds_spread_equals_the_sd_of_the_runs_per_seed_predictions(trained, tmp_path):
    """Independent reference: the sd (ddof=1) of the run's own per-seed test predictions."""
    from heads.deployment.predict import load_model

    work, cache = trained
    run = work / "runs" / "state" / "fold1"
    model = load_model(_export(run, tmp_path / "model"))
    model.record["seed_spread"]["reported"] = ["valence", "arousal"]  # whatever this tiny run's check found
    _fold1_manifest(cache, tmp_path / "new.csv")
    predicted = model.predict(manifest=str(tmp_path / "new.csv"), device="cpu")
    seeds = pl.read_csv(run / "predictions.csv")
    spread = seeds.group_by("utt_id").agg(pl.col("valence_pred").std().alias("sd_v"),
                                          pl.col("arousal_pred").std().alias("sd_a"))
    got = predicted.join(spread, on="utt_id")
    assert got.height == spread.height
    assert np.abs(got["valence_sd"] - got["sd_v"]).max() <= 1e-5 and np.abs(got["arousal_sd"] - got["sd_a"]).max() <= 1e-5


def _seed_rows(sd: np.ndarray, error: np.ndarray) -> pl.DataFrame:
    """Two seeds' predictions of rows whose seed spread is ``sd`` and whose mean misses the label by ``error``."""
    n = len(sd)
    rows = [{"utt_id": f"u{i}", "seed": s, "valence_true": 0.0, "arousal_true": 0.0,
             "valence_pred": error[i] + (1 if s else -1) * sd[i] / np.sqrt(2), "arousal_pred": 0.0}
            for i in range(n) for s in (0, 1)]
    return pl.DataFrame(rows)


def test_a_spread_is_reported_where_it_ranks_the_errors_and_withheld_where_it_does_not():
    from scipy.stats import spearmanr

    from heads.deployment.export import spread_correlation

    rng = np.random.default_rng(0)
    sd = rng.uniform(0.1, 1.0, 200)
    errors = sd * rng.uniform(0.5, 1.5, 200), rng.uniform(0.1, 1.0, 200)
    ranked, unrelated = (spread_correlation(_seed_rows(sd, error)) for error in errors)
    assert ranked["reported"] == ["valence"] and unrelated["reported"] == []  # arousal: no spread at all
    assert ranked["rho_valence"] == pytest.approx(spearmanr(sd, errors[0]).statistic, abs=1e-3)
    assert unrelated["ci_valence"][0] < 0 < unrelated["ci_valence"][1]


def test_a_model_of_one_seed_gives_no_spread(trained, tmp_path):
    from heads.deployment.predict import load_model

    work, cache = trained
    model = load_model(_exported(work, "no-state", tmp_path / "model"))
    predicted = model.predict(CacheReader(cache).manifest["path"].to_list()[:2], device="cpu")
    assert "valence_sd" not in predicted.columns
    assert "One seed" in (model.folder / "README.md").read_text()


def _learned_state():
    """The learned (mamba) state kind, small enough for a test."""
    from pipeline.models.state_model import StateModelConfig
    from pipeline.stages.state import StateConfig

    return StateConfig(kind="mamba", model=StateModelConfig(d_model=16, d_state=8, ssm_state=4, n_layers=1), epochs=3,
                       window=8, batch_size=8)


def test_a_model_with_the_learned_state_predicts_new_audio_as_its_run_did(trained, tmp_path, tiny_wavlm):
    """mamba: export trains the fold's updater again, checks it against the cached states, and predict runs it over
    the new files' dialogue."""
    copy, run = _run_with_state_kind(trained, tmp_path, tiny_wavlm, _learned_state())
    model = _export_in_process(run, tmp_path / "model")
    assert json.loads((model / "model.json").read_text())["state"]["kind"] == "mamba"
    assert _predicted_as_run(copy, model, run, tmp_path) <= 1e-5


def test_a_learned_state_updater_that_does_not_reproduce_the_cached_states_is_refused(trained, tmp_path, tiny_wavlm,
                                                                                       monkeypatch):
    """As if the cache had been made where training gives other weights (a GPU): export must refuse, not guess."""
    import pipeline.models.state_updater as state_module
    from core.errors import InputError

    _, run = _run_with_state_kind(trained, tmp_path, tiny_wavlm, _learned_state(), epochs=1)
    trained_again = state_module.exported_updater

    def other_weights(*args):
        updater = trained_again(*args)
        noise = np.random.default_rng(0)  # a per-weight change (a constant shift would vanish in the LayerNorm)
        return {k: v + noise.normal(0, 0.1, v.shape).astype(v.dtype) if k == "updater.w_in.weight" else v
                for k, v in updater.items()}

    monkeypatch.setattr(state_module, "exported_updater", other_weights)
    with pytest.raises(InputError, match="does not reproduce the cached states of fold 1"):
        _export_in_process(run, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_two_files_segments_are_two_dialogues_even_when_a_manifest_gives_them_one(trained, tmp_path):
    """Whole files of one dialog_id follow each other; segments would interleave by time, so each file's segments
    are their own dialogue: predicting both files at once equals predicting each alone."""
    from heads.deployment.predict import load_model, predict_audio
    from pipeline.corpora.segments import SegmentConfig

    work, cache = trained
    model = load_model(_exported(work, "state", tmp_path / "model"))
    a, _, _ = _long_recording(cache, tmp_path / "a.wav", files=2)
    b, _, _ = _long_recording(cache, tmp_path / "b.wav", files=3)
    pl.DataFrame({"path": [str(a), str(b)], "dialog_id": ["call", "call"]}).write_csv(tmp_path / "m.csv")
    config = SegmentConfig(0.8, 0.4, "fixed")
    both, _ = predict_audio(model, None, str(tmp_path / "m.csv"), None, "cpu", segments=config)
    alone = pl.concat([predict_audio(model, [str(f)], None, None, "cpu", segments=config)[0] for f in (a, b)])
    joined = both.join(alone, on=["utt_id", "segment"], suffix="_alone")
    assert joined.height == both.height == alone.height
    assert np.abs(joined["valence"] - joined["valence_alone"]).max() <= 1e-6


def test_segments_of_an_unreadable_file_are_skipped_and_an_all_failing_recording_is_reported(trained, tmp_path):
    import soundfile

    from heads.deployment.predict import load_model, predict_audio
    from pipeline.corpora.segments import SegmentConfig

    work, cache = trained
    model = load_model(_exported(work, "no-state", tmp_path / "model"))
    good, wave, rate = _long_recording(cache, tmp_path / "call.wav", files=2)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    for split in ("fixed", "energy"):
        frame, failures = predict_audio(model, [str(good), str(tmp_path / "broken.wav")], None, None, "cpu",
                                        segments=SegmentConfig(1.0, 0.5, split), clip=True)
        assert set(frame["utt_id"]) == {"call"}
        assert [f.path for f in failures] == [str((tmp_path / "broken.wav").resolve())]
    soundfile.write(tmp_path / "loud.wav", wave * 5000, rate, subtype="FLOAT")  # every segment fails the peak check
    frame, failures = predict_audio(model, [str(tmp_path / "loud.wav")], None, None, "cpu",
                                    segments=SegmentConfig(1.0, 0.5, "fixed"), clip=True)
    assert frame.height == 0 and failures and all("loud.wav" in f.path for f in failures)


def test_a_model_on_egemaps_beside_praat_runs_both_sets_on_new_audio_as_its_run_did(trained, tmp_path, tiny_wavlm):
    """The eGeMAPS stage added to the cache (speech, prosody and state kept); a run on both sets side by side with
    the state: the model folder names the sets, predict extracts them and reproduces the run."""
    from pipeline.corpora import read_iemocap
    from pipeline.extract import ExtractConfig, extract
    from pipeline.stages.egemaps import EgemapsConfig
    from pipeline.stages.prosody import ProsodyConfig
    from pipeline.stages.speech import SpeechConfig

    work, cache = trained
    copy = tmp_path / "c.h5"
    shutil.copyfile(cache, copy)
    before = CacheReader(copy)
    manifest, _ = read_iemocap(work / "IEMOCAP_full_release")
    extract(copy, manifest, ["speech", "prosody", "egemaps", "state"],
            ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm)), prosody=ProsodyConfig(workers=1),
                          egemaps=EgemapsConfig(workers=1)), device="cpu")
    after = CacheReader(copy)
    assert after.stages[-1] == "egemaps" and all(after.provenance(s) == before.provenance(s) for s in before.stages)
    run = tmp_path / "run"
    train_fold(load_corpus_arrays(after), 1, TrainConfig(epochs=3, state_gate=False, features=FeatureConfig(
        use_state=True, prosody_sets=("egemaps", "praat"))), [0], run)
    model = _export_in_process(run, tmp_path / "model")
    record = json.loads((model / "model.json").read_text())
    assert [t["feature_set"] for t in record["feature_tables"].values()] == ["egemaps", "praat"]
    assert record["sizes"]["prosody_raw"] == 88 + len(after.read("prosody", "names"))
    assert _predicted_as_run(copy, model, run, tmp_path) <= 1e-5


def test_a_model_refuses_features_of_another_feature_set_version(trained, tmp_path, monkeypatch):
    """A model trained on praat-v2 features, and a tool that now computes another version: refused, not mixed."""
    from core.errors import InputError
    from pipeline.features.prosody import FEATURE_NAMES, prosody_features
    from pipeline.stages import registry
    from pipeline.stages.feature_table import FeatureSet
    from pipeline.stages.prosody import ProsodyConfig

    work, cache = trained
    model = _exported(work, "no-state", tmp_path / "model")
    _fold1_manifest(cache, tmp_path / "new.csv")
    other = FeatureSet("praat", "prosody", "praat-v0", lambda: FEATURE_NAMES, prosody_features)
    monkeypatch.setitem(registry.STAGES, "prosody", registry.feature_table_stage(other, ProsodyConfig))
    from heads.deployment.predict import load_model

    with pytest.raises(InputError, match="trained on prosody features of version praat-v2, but .* computes praat-v0"):
        load_model(model).predict(manifest=str(tmp_path / "new.csv"), device="cpu")
