"""Every command the README shows runs as printed, on tiny corpora: only corpus paths, the speech model (a tiny
random WavLM instead of microsoft/wavlm-large), the device (cpu for cuda) and the size of a job array are
substituted. Commands that need hardware this machine lacks are listed in ``ELSEWHERE`` with the test that
runs them instead; a README command that is neither run nor listed fails the test."""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest
import soundfile

from tests.conftest import REPO
from tests.synth import speechlike, write_iemocap_tree, write_msp_tree, write_wav
from tests.test_cli_heads import cli_in_process

README = REPO / "README.md"

# README commands this test does not run, and where they are covered.
ELSEWHERE = {
    "bash scripts/bootstrap.sh && .venv/bin/python cli.py demo": "tests/test_demo.py (the demo end to end)",
    "bash scripts/bootstrap.sh --test && .venv/bin/python -m pytest -q": "CI: this is the suite itself",
    "torchrun --nproc-per-node 8 cli.py extract --corpus manifest --manifest msp.csv --cache msp.h5 --device cuda":
        "tests/test_sharding.py (the same command with 2 CPU processes)",
    "torchrun --nnodes 4 --nproc-per-node 8 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint node0:29500 cli.py "
    "extract --corpus manifest --manifest msp.csv --cache /shared/msp.h5 --device cuda":
        "needs several nodes; tests/test_sharding.py runs torchrun on one",
}


def readme_blocks(language: str) -> list[str]:
    """The fenced code blocks of the README in ``language``."""
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """A bash block as commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", "", block)
    lines = [line.split("  #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def expand(command: str) -> list[str]:
    """``for k in 1 2 3; do CMD $k; done`` as its commands; anything else as itself."""
    loop = re.fullmatch(r"for (\w+) in ([^;]+); do (.+); done", command)
    if not loop:
        return [command]
    name, values, body = loop.groups()
    return [body.replace(f"${name}", value) for value in values.split()]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_wavlm):
    """A folder holding what the README's commands expect to find: corpora, audio files, a manifest."""
    root = tmp_path_factory.mktemp("readme")
    iemocap = write_iemocap_tree(root / "iemocap")
    msp = write_msp_tree(root / "msp")
    write_wav(root / "a.wav", speechlike(1, 0.8))
    soundfile.write(root / "b.flac", speechlike(2, 0.7), 16000)
    (root / "calls.csv").write_text("path,dialog_id,start_s\na.wav,call1,0\nb.flac,call1,3.5\n")
    pause = np.zeros(8000, np.float32)
    write_wav(root / "call.wav", np.concatenate([speechlike(3, 2.5), pause, speechlike(4, 5.0), pause, speechlike(5, 1.5)]))
    (root / "shared").mkdir()
    substitutions = {"/data/IEMOCAP_full_release": str(iemocap), "/data/MSP-Podcast": str(msp),
                     "microsoft/wavlm-large": str(tiny_wavlm), "--device cuda": "--device cpu",
                     "/shared/": str(root / "shared") + "/"}
    return root, substitutions


def _run(command: str, substitutions: dict[str, str]) -> None:
    if "$SLURM_ARRAY_TASK_ID" in command:  # a job array: every task, as SLURM would run them
        for task in range(16):
            _run(command.replace("$SLURM_ARRAY_TASK_ID", str(task)), substitutions)
        return
    for old, new in substitutions.items():
        command = command.replace(old, new)
    words = shlex.split(command)
    assert words[:2] == ["python", "cli.py"], f"not a cli.py command: {command}"
    result = cli_in_process(*words[2:])
    assert result.returncode == 0, f"README command failed: {command}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def ran(world):
    """Every bash command of the README, in order, in the world's folder: ``(root, commands run)``."""
    root, substitutions = world
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        cli_in_process("manifest", "--corpus", "msp-podcast", "--root", substitutions["/data/MSP-Podcast"], "--out",
                       "msp.csv")  # the sharding examples read a manifest of the user's own
        steps = []
        for block in readme_blocks("bash"):
            for command in commands(block):
                if command in ELSEWHERE:
                    continue
                for step in expand(command):
                    _run(step, substitutions)
                    steps.append(step)
    return root, steps


def test_every_bash_command_of_the_readme_runs_as_printed(ran):
    root, steps = ran
    assert len(steps) >= 15  # the examples are there and were run (each one's exit status was checked)
    assert (root / "report.html").is_file() and (root / "predictions.parquet").is_file()


def test_the_readme_python_example_runs(ran, monkeypatch):
    root, _ = ran
    monkeypatch.chdir(root)  # it loads the model folder the bash examples exported
    for block in readme_blocks("python"):
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
        table = namespace["table"]
        assert table.height == 2 and np.isfinite(table["valence"].to_numpy()).all()


def test_every_skipped_readme_command_is_still_in_the_readme():
    everything = [c for block in readme_blocks("bash") for c in commands(block)]
    assert set(ELSEWHERE) <= set(everything), set(ELSEWHERE) - set(everything)
