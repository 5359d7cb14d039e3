"""The command line: every command has help, user mistakes are one line with exit status 2."""

import json
import subprocess
import sys

import polars as pl
import pytest

from tests.conftest import EMODB, EMODB_MISSING, REPO
from tests.synth import write_emodb_tree


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize("command", [["manifest"], ["extract"], ["cache", "info"], ["cache", "merge"]])
def test_every_command_has_help(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_manifest_writes_the_normalised_table(tmp_path):
    root = write_emodb_tree(tmp_path / "emodb", emotions="WT")
    result = run_cli("manifest", "--corpus", "emodb", "--root", str(root), "--out", str(tmp_path / "m.csv"))
    assert result.returncode == 0, result.stderr
    df = pl.read_csv(tmp_path / "m.csv")
    assert df.height == 20 and df.columns[:10] == ["utt_id", "path", "duration_s", "sample_rate", "speaker",
                                                    "dialog_id", "start_s", "fold", "valence", "arousal"]
    assert "20 utterances, 10 speakers, 5 folds" in result.stdout


def test_a_user_mistake_is_one_line_and_exit_status_2(tmp_path):
    result = run_cli("manifest", "--corpus", "emodb", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.csv"),
                     "--strict")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr
    missing_cache = run_cli("cache", "info", "--cache", str(tmp_path / "none.h5"))
    assert missing_cache.returncode == 2 and "cache not found" in missing_cache.stderr


def test_extract_then_cache_info_lists_stages_provenance_and_failures(tmp_path, tiny_wavlm):
    root = write_emodb_tree(tmp_path / "emodb", emotions="W")
    (root / "wav" / "16a01Wz.wav").write_bytes(b"")  # an empty file of a known speaker
    cache = tmp_path / "c.h5"
    result = run_cli("extract", "--corpus", "emodb", "--root", str(root), "--cache", str(cache),
                     "--speech-model", str(tiny_wavlm), "--device", "cpu", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "speech: 10 of 11 utterances, 1 failed" in result.stdout
    info = run_cli("cache", "info", "--cache", str(cache))
    assert "[speech] 10 of 11 ok" in info.stdout and "[prosody] 10 of 11 ok" in info.stdout
    assert "weights sha256" in info.stdout and "praat-v2, 67 features" in info.stdout
    assert "16a01Wz" in info.stdout and "empty" in info.stdout
    assert "11 utterances, 0.00 h of audio, 10 speakers" in info.stdout and "labels: valence 1.50-1.50" in info.stdout
    assert "folds: 1: 2 (03, 08)" in info.stdout and "categories: anger 11" in info.stdout
    record = json.loads(run_cli("cache", "info", "--cache", str(cache), "--json").stdout)
    assert record["stages"]["prosody"]["ok"] == 10 and "weights_sha256" in record["provenance"]["speech"]["model"]
    assert [f["utt_id"] for f in record["failure_list"]] == ["16a01Wz", "16a01Wz"]


@pytest.mark.skipif(not EMODB.is_dir(), reason=EMODB_MISSING)
def test_the_shared_emodb_manifest_has_535_rows(tmp_path):
    result = run_cli("manifest", "--corpus", "emodb", "--root", str(EMODB), "--out", str(tmp_path / "m.csv"))
    assert result.returncode == 0 and "535 utterances, 10 speakers, 5 folds" in result.stdout


def test_a_job_array_extracts_with_shard_and_publishes_with_cache_merge(tmp_path, tiny_wavlm):
    from pipeline.corpora.synthetic import write_synthetic_corpus

    manifest = write_synthetic_corpus(tmp_path / "corpus", dialogs_per_fold=1, turns=4)
    cache = tmp_path / "c.h5"
    args = ["extract", "--corpus", "manifest", "--manifest", str(manifest), "--speech-model", str(tiny_wavlm),
            "--cache", str(cache), "--device", "cpu", "--workers", "1", "--loader-workers", "0", "--state-epochs", "1"]
    first = run_cli(*args, "--shard", "0/2")
    assert first.returncode == 0 and "cache merge" in first.stdout and not cache.exists()
    early = run_cli("cache", "merge", "--cache", str(cache))
    assert early.returncode == 2 and "--shard 1/2" in early.stderr
    assert run_cli(*args, "--shard", "1/2").returncode == 0
    merged = run_cli("cache", "merge", "--cache", str(cache), "--device", "cpu")
    assert merged.returncode == 0 and "speech: 20 of 20 utterances" in merged.stdout
    assert "[state] 20 of 20 ok" in run_cli("cache", "info", "--cache", str(cache)).stdout


def test_on_error_fail_exits_2_naming_the_bad_file(tmp_path, tiny_wavlm):
    from tests.synth import speechlike, write_wav

    lines = ["utt_id,path,speaker,fold,valence,arousal"]
    for i in range(4):
        write_wav(tmp_path / f"u{i}.wav", speechlike(i, 0.5))
        lines.append(f"u{i},u{i}.wav,s{i},{i + 1},3,3")
    (tmp_path / "zz.wav").write_bytes(b"RIFF1234WAVEnot audio")
    lines.append("zz,zz.wav,s0,1,3,3")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    result = run_cli("extract", "--corpus", "manifest", "--manifest", str(tmp_path / "m.csv"), "--cache",
                     str(tmp_path / "c.h5"), "--speech-model", str(tiny_wavlm), "--device", "cpu", "--stages", "speech",
                     "--on-error", "fail", "--batch-seconds", "0.5", "--loader-workers", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'zz.wav'}: cannot decode")


def test_extract_state_defaults_are_the_state_configs_defaults():
    import inspect

    import cli
    from pipeline.stages.state import StateConfig

    defaults = {name: p.default.default for name, p in inspect.signature(cli.extract).parameters.items()}
    config = StateConfig()
    assert (defaults["state_epochs"], defaults["state_width"], defaults["ema"]) == \
        (config.epochs, config.model.d_state, config.model.ema)
    assert defaults["state_kind"] is None  # chosen by the corpus: pipeline.stages.state.default_kind


def test_the_default_state_kind_is_the_cross_fitted_one_where_it_can_be_cross_fitted():
    import polars as pl

    from pipeline.stages.state import StateConfig, default_kind

    def manifest(folds):
        return pl.DataFrame({"fold": folds, "split": pl.Series([None] * len(folds), dtype=pl.String)})

    assert default_kind(manifest([1, 2, 3])) == StateConfig().kind == "ema-predictions"
    assert default_kind(manifest([1, 2, 2])) == "ema-features"  # 2 folds cannot cross-fit
