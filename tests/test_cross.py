"""Does it transfer? Train on one corpus, test on another rated on another scale: labels meet on the common scale
(checked by hand), the matrix covers every pair, incompatible caches are refused, groups are broken down."""

import re

import numpy as np
import polars as pl
import pytest

from cache import CacheReader
from core.errors import InputError
from core.labels import from_common, to_common
from heads.evaluation.stats import StatsConfig
from heads.studies.cross import corpus_scale, matrix, run_cross
from heads.training.train import TrainConfig
from heads.training.variants import parse_variant, run_label
from pipeline.corpora import read_generic_manifest
from pipeline.corpora.synthetic import write_synthetic_corpus
from pipeline.extract import ExtractConfig, extract
from pipeline.stages.prosody import ProsodyConfig
from pipeline.stages.speech import SpeechConfig


def test_ratings_map_onto_the_common_scale_by_their_scales_ends():
    assert np.allclose(to_common([1, 3, 5], 1, 5), [-1, 0, 1])
    assert np.allclose(to_common([1, 4, 7, 2.5], 1, 7), [-1, 0, 1, -0.5])
    assert np.allclose(from_common(to_common([1.7, 6.2], 1, 7), 1, 7), [1.7, 6.2])


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory, tiny_wavlm):
    """The synthetic corpus twice: rated 1-5 (corpus a) and 1-7 (corpus b), other speakers and dialogues."""
    root = tmp_path_factory.mktemp("cross")
    caches = []
    for name, scale, seed in (("a", (1.0, 5.0), 0), ("b", (1.0, 7.0), 1)):
        csv = write_synthetic_corpus(root / name, dialogs_per_fold=1, turns=6, seed=seed, scale=scale, name=name)
        manifest, _ = read_generic_manifest(csv)
        extract(root / f"{name}.h5", manifest, ["speech", "prosody"],
                ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm)), prosody=ProsodyConfig(workers=1)),
                device="cpu")
        caches.append(root / f"{name}.h5")
    return root, caches


def test_a_corpus_declares_its_scale_and_a_manifest_without_one_is_refused(two_corpora, tmp_path):
    _, (a, b) = two_corpora
    assert corpus_scale(CacheReader(a)) == (1.0, 5.0) and corpus_scale(CacheReader(b)) == (1.0, 7.0)
    from tests.synth_cache import planted_cache

    with pytest.raises(InputError, match="declares no single rating scale"):
        corpus_scale(CacheReader(planted_cache(tmp_path / "c.h5", n_per_speaker=4)))


@pytest.mark.parametrize("scale", ["common", "test"])
def test_trained_on_one_corpus_and_tested_on_another_the_truth_is_the_test_corpus_on_the_asked_scale(
        two_corpora, tmp_path, scale, caplog):
    _, (a, b) = two_corpora
    configs = [parse_variant("linear", TrainConfig())]
    with caplog.at_level("INFO", logger="heads"):
        cells = run_cross([a, b], configs, [0], tmp_path / "x", stats=StatsConfig(resamples=200), scale=scale)
    counts = [tuple(map(int, m)) for m in re.findall(r"\[(\d+)/(\d+), ", caplog.text)]
    assert counts and counts[-1][0] == counts[-1][1] == len(counts)  # the progress counts every run of the matrix
    assert [(c.train, c.test) for c in cells] == [("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")]
    predictions = pl.read_csv(tmp_path / "x" / "a-on-b" / "linear" / "b" / "predictions.csv")
    stored = CacheReader(b).manifest.select("utt_id", "valence")
    joined = predictions.with_columns(pl.col("utt_id").str.strip_prefix("b/")).join(stored, on="utt_id")
    assert joined.height == stored.height  # every utterance of b is a test row, none of a
    expected = to_common(joined["valence"].to_numpy(), 1, 7) if scale == "common" else joined["valence"].to_numpy()
    assert np.allclose(joined["valence_true"].to_numpy(), expected)  # by hand: 2 (v - 1) / 6 - 1
    assert set(predictions["group_corpus"]) == {"b"} and set(predictions["group_gender"]) == {"female", "male"}
    rows = matrix(cells)
    assert len(rows) == 4 and all(r["ccc_v"] is not None for r in rows)
    diagonal = next(c for c in cells if c.train == c.test == "a")
    assert set(diagonal.results["runs"]["linear"]["folds"]) == {"1", "2", "3", "4", "5"}  # its own folds
    groups = diagonal.results["runs"]["linear"]["per_group"]
    assert [g["group"] for g in groups] == ["female", "male", "gap female - male"]


def test_caches_with_different_speech_models_are_refused_naming_the_difference(two_corpora, tmp_path):
    from testing.random_wavlm import save_random_wavlm

    root, (a, _) = two_corpora
    other = save_random_wavlm(tmp_path / "other_wavlm", "tiny", seed=5)
    manifest, _ = read_generic_manifest(root / "b" / "manifest.csv")
    extract(tmp_path / "c.h5", manifest, ["speech", "prosody"],
            ExtractConfig(speech=SpeechConfig(model=str(other)), prosody=ProsodyConfig(workers=1)), device="cpu")
    with pytest.raises(InputError, match="differ in speech model weights"):
        run_cross([a, tmp_path / "c.h5"], [parse_variant("linear", TrainConfig())], [0], tmp_path / "x")


def test_the_cross_command_prints_the_matrix_and_writes_its_report(two_corpora, tmp_path):
    from tests.test_cli_heads import cli_in_process

    _, (a, b) = two_corpora
    result = cli_in_process("cross", "--caches", f"{a},{b}", "--variants", "linear", "--out", str(tmp_path / "x"),
                            "--bootstrap", "200")
    assert result.returncode == 0, result.stderr
    assert "| trained on \\ tested on | a | b |" in result.stdout and "| b | " in result.stdout
    report = (tmp_path / "x" / "report.html").read_text()
    assert report.count('alt="matrix linear"') == 1 and "Trained on a, tested on b" in report
    assert pl.read_csv(tmp_path / "x" / "matrix.csv").height == 4
    refused = cli_in_process("cross", "--caches", str(a), "--out", str(tmp_path / "y"))
    assert refused.returncode == 2 and "two caches or more" in refused.stderr


def test_a_named_test_partition_is_the_only_test_set_of_a_partitioned_corpus(two_corpora, tiny_wavlm, tmp_path):
    root, (a, _) = two_corpora
    manifest, _ = read_generic_manifest(root / "b" / "manifest.csv")
    split = pl.when(pl.col("fold") <= 3).then(pl.lit("train")).when(pl.col("fold") == 4).then(pl.lit("Test1")) \
        .otherwise(pl.lit("Test2"))
    manifest.with_columns(split=split).write_csv(tmp_path / "parts.csv")  # b's folds 1-3 train, 4 Test1, 5 Test2
    parts, _ = read_generic_manifest(tmp_path / "parts.csv")  # as a user's manifest: folds derived from the split
    extract(tmp_path / "p.h5", parts, ["speech", "prosody"],
            ExtractConfig(speech=SpeechConfig(model=str(tiny_wavlm)), prosody=ProsodyConfig(workers=1)), device="cpu")
    configs = [parse_variant("linear", TrainConfig())]
    cells = run_cross([a, tmp_path / "p.h5"], configs, [0], tmp_path / "x", stats=StatsConfig(resamples=0),
                      test_partition="Test2")
    test2 = set(parts.filter(pl.col("split") == "Test2")["utt_id"])
    for cell in cells:
        predictions = cell.evaluation.predictions[run_label(configs[0])]
        if cell.test == "p":  # on and off the diagonal: Test2's rows, each once
            assert sorted(u.removeprefix("p/") for u in predictions["utt_id"]) == sorted(test2)
        else:  # a has k folds: every one of its rows
            assert predictions.height == CacheReader(a).manifest.height
    with pytest.raises(InputError, match="no test set named 'Test9'.*Test1, Test2"):
        run_cross([a, tmp_path / "p.h5"], configs, [0], tmp_path / "y", test_partition="Test9")
    with pytest.raises(InputError, match="none of the caches has partitions"):
        run_cross([a, a.parent / "b.h5"], configs, [0], tmp_path / "z", test_partition="Test1")
