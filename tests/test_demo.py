"""The README's main command: the demo runs every stage and prints the 4-variant x 5-fold table and the
differences from the baseline, then predicts three unseen files and one long recording with an exported model."""

from tests.test_cli import run_cli


def test_the_synthetic_demo_runs_end_to_end(tmp_path):
    result = run_cli("demo", "--corpus", "synthetic", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    for variant in ("shared", "separate", "separate-attn", "linear"):
        assert f"| {variant} | 5 |" in result.stdout
    assert "Differences from `shared`" in result.stdout and "| linear | CCC-A |" in result.stdout
    assert "untrained" in result.stdout
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert len(list((tmp_path / "ablation").glob("*/fold*/run.json"))) == 20
    assert "[6/6] predict 3 files of fold 1" in result.stdout and result.stdout.count("(label ") == 6  # valence and arousal of 3 files
    # does it transfer: the 2 x 2 matrix of the demo corpus and a second one rated 1-7
    assert "| trained on \\ tested on | synthetic | rated7 |" in result.stdout
    assert (tmp_path / "cross" / "report.html").is_file()
    assert (tmp_path / "model" / "model.json").is_file()
    # and a long recording as a time series: its first segments, their times and a plot over time
    assert "recording of 12 of those files joined by pauses, as segments" in result.stdout
    assert result.stdout.count(" s: valence ") == 5 and (tmp_path / "long_recording.html").is_file()


def test_the_demo_refuses_an_unknown_prosody_set_before_any_work(tmp_path):
    import pytest

    from core.errors import InputError
    from demo import run_demo

    with pytest.raises(InputError, match="unknown prosody feature set.*nope.*available: praat, egemaps"):
        run_demo(tmp_path / "out", "synthetic", prosody="praat,nope")
    assert not (tmp_path / "out").exists()
