"""Fault injection for the head commands: SIGKILL ``train-heads`` and ``ablate`` at random moments, then check
what ``eval`` reads.

    .venv/bin/python scripts/kill_heads.py --kills 20 --seed 0      # the run in docs/reliability.md

Each kill launches the real CLI on a planted cache (``tests.synth_cache.planted_cache``), alternating
``train-heads --folds 1-5 --seeds 2`` and a two-variant ``ablate``, and kills its process group after a random
delay within the command's uninterrupted duration. Then ``eval``'s reader (``heads.training.runs.expand_runs`` +
``heads.evaluation.evaluate.evaluate_runs``) must read only finished runs (never a writer's temporary folder), every run
it reads must equal the uninterrupted command's run of the same fold (predictions to 1e-9), and it must either
evaluate or refuse with a clear error (labels that do not cover the same folds). Finally the same command with
``--overwrite`` must complete the set, equal to the uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.errors import InputError  # noqa: E402
from heads.evaluation.evaluate import evaluate_runs  # noqa: E402
from heads.training.runs import PREDICTIONS_FILE, RUN_FILE, expand_runs  # noqa: E402


def command(name: str, cache: Path, out: Path) -> list[str]:
    """The head command ``name`` (``train-heads`` or ``ablate``) as a process, writing to ``out``."""
    cli = [sys.executable, str(REPO / "cli.py")]
    if name == "train-heads":
        return [*cli, "train-heads", "--cache", str(cache), "--folds", "1-5", "--seeds", "2", "--epochs", "4",
                "--out", str(out)]
    return [*cli, "ablate", "--cache", str(cache), "--variants", "shared,separate-attn", "--folds", "1-5",
            "--epochs", "4", "--bootstrap", "0", "--out", str(out)]


@dataclass
class HeadsKill:
    command: str
    delay_s: float
    landed: bool  # the process was still running when the signal was sent
    runs_read: int  # finished runs eval found after the kill
    runs_differing: list[str]  # runs read whose predictions differ from the uninterrupted command's
    temporary_folders_read: list[str]  # hidden / temporary folders eval read (must be none)
    eval_outcome: str  # "evaluated", "refused: <message>" or "nothing to read"
    completed_equal: bool  # the same command again (--overwrite) gave the uninterrupted runs


@dataclass
class HeadsReport:
    kills: list[HeadsKill] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def survived(self) -> bool:
        return all(not k.runs_differing and not k.temporary_folders_read and k.completed_equal for k in self.kills)


def _predictions(out: Path) -> dict[str, pl.DataFrame]:
    """Relative run folder -> its predictions, for every finished run under ``out``."""
    try:
        runs = expand_runs([out])
    except InputError:
        return {}
    return {str(run.relative_to(out)): pl.read_csv(run / PREDICTIONS_FILE) for run in runs}


def _same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    if a.height != b.height or a["utt_id"].to_list() != b["utt_id"].to_list():
        return False
    columns = ("valence_pred", "arousal_pred")
    return all(np.allclose(a[c].to_numpy(), b[c].to_numpy(), atol=1e-9, rtol=0) for c in columns)


def _run(argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as handle:
        return subprocess.Popen(argv, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def run_heads_campaign(cache: Path, workdir: Path, kills: int, seed: int = 0) -> HeadsReport:
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    report = HeadsReport()
    clean, duration = {}, {}
    for name in ("train-heads", "ablate"):
        t0 = time.monotonic()
        proc = _run(command(name, cache, workdir / f"clean-{name}"), workdir / f"clean-{name}.log")
        if proc.wait() != 0:
            raise RuntimeError(f"the uninterrupted {name} failed: see {workdir / f'clean-{name}.log'}")
        duration[name], clean[name] = time.monotonic() - t0, _predictions(workdir / f"clean-{name}")
    for i in range(kills):
        name = ("train-heads", "ablate")[i % 2]
        out = workdir / f"kill{i:03d}-{name}"
        delay = float(rng.uniform(0.3, duration[name]))
        proc = _run(command(name, cache, out), workdir / f"kill{i:03d}.log")
        time.sleep(delay)
        landed = proc.poll() is None
        if landed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = _predictions(out)
        differing = [run for run, frame in finished.items() if not _same(frame, clean[name][run])]
        hidden = [run for run in finished if any(part.startswith(".") for part in Path(run).parts)]
        written = sorted(p.parent for p in out.glob(f"**/{RUN_FILE}")) if out.exists() else []
        try:
            evaluate_runs(expand_runs([out])) if finished else None
            outcome = "evaluated" if finished else "nothing to read"
        except InputError as err:
            outcome = f"refused: {str(err)[:120]}"
        hidden += [str(p.relative_to(out)) for p in written if p.name.startswith(".")
                   and str(p.relative_to(out)) in finished]
        rerun = subprocess.run([*command(name, cache, out), "--overwrite"], cwd=REPO, capture_output=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
        completed = _predictions(out)
        equal = rerun.returncode == 0 and set(completed) == set(clean[name]) and all(
            _same(completed[run], clean[name][run]) for run in completed)
        report.kills.append(HeadsKill(name, delay, landed, len(finished), differing, hidden, outcome, equal))
    report.seconds = time.monotonic() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("kill_heads_out"))
    args = parser.parse_args()
    from tests.synth_cache import planted_cache

    args.workdir.mkdir(parents=True, exist_ok=True)
    cache = args.workdir / "c.h5"
    if not cache.is_file():
        planted_cache(cache, n_per_speaker=20)
    report = run_heads_campaign(cache, args.workdir, args.kills, args.seed)
    for name in ("train-heads", "ablate"):
        kills = [k for k in report.kills if k.command == name]
        outcomes = {}
        for k in kills:
            outcomes[k.eval_outcome.split(":")[0]] = outcomes.get(k.eval_outcome.split(":")[0], 0) + 1
        print(f"{name}: {sum(k.landed for k in kills)} of {len(kills)} kills landed; eval afterwards {outcomes}; "
              f"runs read {sum(k.runs_read for k in kills)}, differing {sum(len(k.runs_differing) for k in kills)}, "
              f"temporary folders read {sum(len(k.temporary_folders_read) for k in kills)}; completed equal to the "
              f"uninterrupted command after --overwrite: {sum(k.completed_equal for k in kills)} of {len(kills)}")
    print(f"{report.seconds:.0f} s; survived: {report.survived}")
    (args.workdir / "report.json").write_text(json.dumps({**asdict(report), "survived": report.survived}, indent=1))
    sys.exit(0 if report.survived else 1)


if __name__ == "__main__":
    main()
