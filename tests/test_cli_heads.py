"""train-heads, eval and ablate work from a cache alone and write what they promise."""

import json

import polars as pl
import pytest

from tests.synth_cache import planted_cache
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return planted_cache(tmp_path_factory.mktemp("cli_heads") / "c.h5", n_per_speaker=30)


@pytest.mark.parametrize("command", ["train-heads", "eval", "ablate"])
def test_head_commands_have_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_train_heads_then_eval_reports_per_fold_and_mean_metrics(cache, tmp_path):
    runs = []
    for fold in (1, 2):
        run = tmp_path / f"fold{fold}"
        result = run_cli("train-heads", "--cache", str(cache), "--fold", str(fold), "--out", str(run), "--seeds", "2")
        assert result.returncode == 0, result.stderr
        assert f"fold {fold}, separate-attn, 2 seed(s)" in result.stdout
        assert (run / "head_seed0.safetensors").is_file() and (run / "head_seed1.safetensors").is_file()
        preds = pl.read_csv(run / "predictions.csv")
        assert set(preds["seed"]) == {0, 1} and "attn_valence_prosody" in preds.columns
        runs += ["--runs", str(run)]
    result = run_cli("eval", *runs, "--out", str(tmp_path / "eval"), "--json", str(tmp_path / "m.json"))
    assert result.returncode == 0, result.stderr
    assert "| separate-attn | 2 |" in result.stdout and "valence->prosody" in result.stdout
    metrics = json.loads((tmp_path / "m.json").read_text())["runs"]["separate-attn"]
    assert set(metrics["folds"]) == {"1", "2"}
    assert {"ccc_v", "ccc_a", "mse_v", "mse_a"} <= set(metrics["folds"]["1"]) and "ccc_avg" in metrics["mean"]
    low, high = metrics["mean_ci"]["ccc_v"]
    assert low <= metrics["mean"]["ccc_v"] <= high and "[" in result.stdout  # intervals in the table too
    for name in ("results.md", "results.csv", "per_fold.png", "scatter.png", "attention.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0


def test_ablate_runs_every_variant_and_fold_in_one_command(cache, tmp_path):
    result = run_cli("ablate", "--cache", str(cache), "--variants", "shared,separate-attn,separate-attn+no-prosody",
                     "--folds", "1-5", "--out", str(tmp_path / "abl"), "--epochs", "15")
    assert result.returncode == 0, result.stderr
    table = pl.read_csv(tmp_path / "abl" / "results.csv")
    assert sorted(table["run"]) == ["separate-attn", "separate-attn+no-prosody", "shared"]
    assert table["folds"].to_list() == [5, 5, 5]
    assert "Differences from `shared`" in result.stdout  # the first variant is the baseline
    comparisons = pl.read_csv(tmp_path / "abl" / "comparisons.csv")
    assert comparisons.height == 2 * 3 and set(comparisons["metric"]) == {"CCC-V", "CCC-A", "CCC-Avg"}
    assert (tmp_path / "abl" / "forest.png").stat().st_size > 0
    per_fold = pl.read_csv(tmp_path / "abl" / "per_fold.csv")
    assert per_fold.height == 15
    no_prosody = table.filter(pl.col("run") == "separate-attn+no-prosody")["CCC-V"][0]
    assert no_prosody < table.filter(pl.col("run") == "separate-attn")["CCC-V"][0]  # valence was in prosody


def test_bad_head_arguments_are_one_line_errors(cache, tmp_path):
    result = run_cli("ablate", "--cache", str(cache), "--variants", "shared", "--folds", "7", "--out", str(tmp_path))
    assert result.returncode == 2 and "no fold(s) [7]" in result.stderr
    result = run_cli("eval", "--runs", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "no head runs found" in result.stderr


def test_eval_compares_every_label_with_the_baseline_runs(cache, tmp_path):
    for spec in ("shared", "linear"):
        for fold in (1, 2, 3):
            result = run_cli("train-heads", "--cache", str(cache), "--fold", str(fold), "--variant", spec,
                             "--out", str(tmp_path / spec / f"fold{fold}"), "--epochs", "10")
            assert result.returncode == 0, result.stderr
    result = run_cli("eval", "--runs", str(tmp_path / "shared"), "--runs", str(tmp_path / "linear"), "--baseline",
                     str(tmp_path / "linear"), "--out", str(tmp_path / "eval"), "--bootstrap", "300")
    assert result.returncode == 0, result.stderr
    assert "Differences from `linear`" in result.stdout and "| shared | CCC-V |" in result.stdout
    comparisons = json.loads((tmp_path / "eval" / "metrics.json").read_text())["comparisons"]
    assert comparisons["baseline"] == "linear" and {r["label"] for r in comparisons["rows"]} == {"shared"}
    assert all(r["reading"] in ("better", "worse", "not distinguishable") for r in comparisons["rows"])
