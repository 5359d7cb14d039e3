"""train-heads, eval and ablate work from a cache alone and write what they promise."""

import json
import subprocess

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
        result = cli_in_process("train-heads", "--cache", str(cache), "--fold", str(fold), "--out", str(run), "--seeds", "2")
        assert result.returncode == 0, result.stderr
        assert f"fold {fold}, separate-attn, 2 seed(s)" in result.stdout
        assert (run / "head_seed0.safetensors").is_file() and (run / "head_seed1.safetensors").is_file()
        preds = pl.read_csv(run / "predictions.csv")
        assert set(preds["seed"]) == {0, 1} and "attn_valence_prosody" in preds.columns
        runs += ["--runs", str(run)]
    result = cli_in_process("eval", *runs, "--out", str(tmp_path / "eval"), "--json", str(tmp_path / "m.json"))
    assert result.returncode == 0, result.stderr
    assert "| separate-attn | 2 |" in result.stdout and "valence->prosody" in result.stdout
    metrics = json.loads((tmp_path / "m.json").read_text())["runs"]["separate-attn"]
    assert set(metrics["folds"]) == {"1", "2"}
    assert {"ccc_v", "ccc_a", "mse_v", "mse_a"} <= set(metrics["folds"]["1"]) and "ccc_avg" in metrics["mean"]
    low, high = metrics["mean_ci"]["ccc_v"]
    assert low <= metrics["mean"]["ccc_v"] <= high and "[" in result.stdout  # intervals in the table too
    for name in ("results.md", "results.csv", "per_fold.png", "scatter.png", "attention.png", "learning_curves.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    assert main_in_process("report", *runs, "--out", str(tmp_path / "report_folder"), "--bootstrap", "0")[0] == 0
    assert (tmp_path / "report_folder" / "report.html").is_file()  # --out may be a folder, as elsewhere
    code, err = main_in_process("eval", "--runs", runs[1], runs[3], "--out", str(tmp_path / "eval2"))
    assert code == 2 and err.startswith("error:") and "--runs takes one value: repeat it for each" in err


def main_in_process(*args: str) -> tuple[int, str]:
    """``python cli.py ARGS`` without a new interpreter (the same ``cli.main``): (exit status, stderr)."""
    result = cli_in_process(*args)
    return result.returncode, result.stderr


def cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """``run_cli`` without a new interpreter: the same ``cli.main``, its exit status, stdout and stderr."""
    import contextlib
    import io
    import sys

    import cli

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["cli.py", *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            cli.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(["cli.py", *args], code, out.getvalue(), err.getvalue())


def test_explicit_seeds_are_the_seeds_trained(cache, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train-heads", "--cache", str(cache), "--fold", "1", "--out", str(run), "--seed", "3,7",
                     "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert set(pl.read_csv(run / "predictions.csv")["seed"]) == {3, 7}
    assert (run / "head_seed7.safetensors").is_file() and not (run / "head_seed0.safetensors").exists()


def test_ablate_runs_every_variant_and_fold_in_one_command(cache, tmp_path):
    result = run_cli("ablate", "--cache", str(cache), "--variants", "shared,separate-attn,separate-attn+no-prosody",
                     "--folds", "1-5", "--out", str(tmp_path / "abl"), "--epochs", "15")
    assert result.returncode == 0, result.stderr
    table = pl.read_csv(tmp_path / "abl" / "results.csv")
    # labels say what was used (no states in this cache) and what differs from the defaults (--epochs 15)
    assert sorted(table["run"]) == ["separate-attn+epochs=15", "separate-attn+no-prosody+epochs=15", "shared+epochs=15"]
    assert table["folds"].to_list() == [5, 5, 5]
    assert "Differences from `shared+epochs=15`" in result.stdout  # the first variant is the baseline
    comparisons = pl.read_csv(tmp_path / "abl" / "comparisons.csv")
    assert comparisons.height == 2 * 3 and set(comparisons["metric"]) == {"CCC-V", "CCC-A", "CCC-Avg"}
    assert (tmp_path / "abl" / "forest.png").stat().st_size > 0
    per_fold = pl.read_csv(tmp_path / "abl" / "per_fold.csv")
    assert per_fold.height == 15
    no_prosody = table.filter(pl.col("run") == "separate-attn+no-prosody+epochs=15")["CCC-V"][0]
    assert no_prosody < table.filter(pl.col("run") == "separate-attn+epochs=15")["CCC-V"][0]  # valence: prosody


def test_bad_head_arguments_are_one_line_errors(cache, tmp_path):
    code, err = main_in_process("ablate", "--cache", str(cache), "--variants", "shared", "--folds", "7",
                                "--out", str(tmp_path))
    assert code == 2 and err.startswith("error:") and "--folds 7: the cache has no fold 7" in err
    code, err = main_in_process("eval", "--runs", str(tmp_path / "nothing"))
    assert code == 2 and err.startswith("error:") and "no head runs found" in err


def test_runs_that_differ_in_a_setting_share_one_table_and_are_compared_with_a_baseline(cache, tmp_path):
    for name, extra in (("a", ["--label", "shared-lr-1e-3"]), ("b", ["--lr", "3e-3"]), ("lin", ["--variant", "linear"])):
        result = cli_in_process("train-heads", "--cache", str(cache), "--folds", "1-3", "--out", str(tmp_path / name),
                         "--epochs", "10", *(["--variant", "shared"] if name != "lin" else []), *extra)
        assert result.returncode == 0, result.stderr
    result = cli_in_process("eval", "--runs", str(tmp_path / "a"), "--runs", str(tmp_path / "b"), "--runs", str(tmp_path / "lin"),
                     "--baseline", str(tmp_path / "lin"), "--out", str(tmp_path / "eval"), "--bootstrap", "300")
    assert result.returncode == 0, result.stderr
    for label in ("shared-lr-1e-3", "shared+epochs=10+lr=0.003"):  # the label, and the default one
        assert f"| {label} | 3 |" in result.stdout and f"| {label} | CCC-V |" in result.stdout
    comparisons = json.loads((tmp_path / "eval" / "metrics.json").read_text())["comparisons"]
    assert comparisons["baseline"] == "linear+epochs=10"
    assert all(r["reading"] in ("better", "worse", "not distinguishable") for r in comparisons["rows"])
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["fold1", "fold2", "fold3"]
    assert (tmp_path / "a" / "fold1" / "history.csv").is_file()
