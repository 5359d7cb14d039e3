"""Fault injection for ``extract``: SIGKILL it at chosen moments, resume, compare with an uninterrupted run.

    .venv/bin/python scripts/kill_campaign.py --kills 50 --seed 0     # the long run (docs/reliability.md)

Each round starts a fresh cache and launches the real CLI (``cli.py extract``, all three stages, with a
decoding worker and two Praat workers) again and again; every launch is killed with SIGKILL at a moment
drawn from one of ``PHASES``, until a last launch runs to completion. ``--target group`` kills the whole
process group (a pre-empted node); ``--target main`` kills the main process only (an OOM kill, ``kill -9
PID``): then no worker may outlive it by more than ``ORPHAN_GRACE_S`` seconds. After every kill the
cache, if one exists, must open and every stage it holds must equal the uninterrupted run's; at the end
of a round the cache must hold the same utterances, failures and arrays (bit for bit) and no work files.
``tests/test_kill.py`` runs a short campaign in CI.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cache import CacheReader  # noqa: E402
from cache.paths import CachePaths  # noqa: E402

# phase -> where the kill lands. Each is reached by waiting for a sign of that phase, then a random delay.
PHASES = {
    "startup": "interpreter start, manifest, model load (a random moment in the first seconds)",
    "speech": "speech stage, between or inside batches (after a new batch was committed)",
    "prosody": "prosody stage, workers busy (after a new chunk was committed)",
    "write": "a finished stage being written into the HDF5 cache (0-5 ms after the writer says it starts adding in "
             "place under an undo journal, or rewriting to a temporary file when the stage replaces a large group)",
    "state": "state stage, training the cross-fitted updaters (after a new updater was committed)",
}
WRITE_SIGNS = ("cache: adding ", "cache: rewriting ")  # cache.writer logs one as the addition (or rewrite) starts
STAGE_OF_PHASE = {"speech": "speech", "prosody": "prosody", "state": "state"}
ORPHAN_GRACE_S = 10.0


@dataclass
class Kill:
    round: int
    phase: str
    delay_s: float  # after the sign of the phase
    landed: bool  # the process was still running when the signal was sent
    last_log_line: str  # what the killed process was doing, from its own log
    cache_ok_after: bool  # the cache (if any) opened and every stage in it equalled the clean run's
    stages_after: list[str]  # stages the cache held after the kill
    temp_files_after: int  # temporary files the kill left (a kill inside a write leaves one)
    orphans: int = 0  # processes of the killed extract still alive ORPHAN_GRACE_S after the kill
    journal_after: bool = False  # the kill landed inside an in-place addition: its undo journal was left


@dataclass
class CampaignReport:
    kills: list[Kill] = field(default_factory=list)
    rounds: int = 0
    launches: int = 0
    utterances: int = 0
    utterances_lost: int = 0
    duplicate_ids: int = 0
    arrays_compared: int = 0
    array_names: list[str] = field(default_factory=list)  # what one round's comparison covers
    arrays_differing: list[str] = field(default_factory=list)
    leftover_files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def kills_landed(self) -> int:
        return sum(k.landed for k in self.kills)

    @property
    def orphans(self) -> int:
        return sum(k.orphans for k in self.kills)

    @property
    def survived(self) -> bool:
        return (self.utterances_lost == 0 and self.duplicate_ids == 0 and not self.arrays_differing
                and not self.leftover_files and all(k.cache_ok_after for k in self.kills) and self.orphans == 0)


def cache_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every per-stage array of a cache, plus its failures table, keyed ``stage/name``."""
    reader = CacheReader(path)
    arrays = {f"{s}/{n}": reader.read(s, n) for s in reader.stages for n in reader.dataset_shapes(s)}
    arrays = {k: v.astype(str) if v.dtype == object else v for k, v in arrays.items()}  # text, not pointers
    arrays["failures"] = np.array([asdict(f) for f in reader.failures], dtype=object).astype(str)
    return arrays


def differing(a: dict[str, np.ndarray], b: dict[str, np.ndarray], stages: list[str] | None = None) -> list[str]:
    """Names whose arrays are not bit-for-bit equal (restricted to ``stages`` when given)."""
    names = [k for k in a if stages is None or k.split("/")[0] in stages]
    return [k for k in names if k not in b or a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
            or a[k].tobytes() != b[k].tobytes()]


def _units(cache: Path, stage: str) -> int:
    return len(list(CachePaths(cache).stage_parts(stage).glob("unit-*.npz")))


def _stages_in(cache: Path) -> list[str]:
    try:
        return CacheReader(cache).stages if cache.exists() else []
    except Exception:  # noqa: BLE001 - a damaged cache is reported by the caller's check
        return []


def _wait_for_sign(phase: str, cache: Path, log: Path, proc: subprocess.Popen, rng: np.random.Generator,
                   timeout_s: float) -> bool:
    """Block until ``phase`` shows (True) or the process ends first (False)."""
    if phase == "startup":
        time.sleep(rng.uniform(0.0, 3.0))
        return proc.poll() is None
    stage = STAGE_OF_PHASE.get(phase)
    start_units = _units(cache, stage) if stage else 0
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if stage and _units(cache, stage) > start_units:
            return True
        if phase == "write" and any(sign in log.read_text(errors="replace") for sign in WRITE_SIGNS):
            return True
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"no sign of phase {phase} within {timeout_s} s: see {log}")
        time.sleep(0.001)
    return False


def _delay_for(phase: str, rng: np.random.Generator) -> float:
    # "write" must land inside a short HDF5 write; the others anywhere inside a batch or updater
    return 0.0 if phase == "startup" else float(rng.uniform(0.0, 0.005 if phase == "write" else 0.4))


def _reachable(phase: str, cache: Path) -> bool:
    stages = _stages_in(cache)
    if phase in STAGE_OF_PHASE:
        return STAGE_OF_PHASE[phase] not in stages
    return len(stages) < 3 or phase == "startup"


def _check_committed(cache: Path, clean: dict[str, np.ndarray]) -> bool:
    """After a kill: no cache yet, or a cache that opens and whose every stage equals the clean run's."""
    if not cache.exists():
        return True
    try:
        stages = CacheReader(cache).stages
        now = cache_arrays(cache)
    except Exception:  # noqa: BLE001 - any failure to read is exactly what this check exists to catch
        return False
    return not differing({k: v for k, v in clean.items() if k != "failures"}, now, stages)


def extract_command(manifest: Path, model: Path, cache: Path) -> list[str]:
    return [sys.executable, str(REPO / "cli.py"), "extract", "--corpus", "manifest", "--manifest", str(manifest),
            "--speech-model", str(model), "--device", "cpu", "--batch-seconds", "2", "--workers", "2",
            "--loader-workers", "1", "--state-kind", "mamba", "--state-epochs", "2", "--cache", str(cache)]


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (zombies are dead: not counted)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def orphans_after(pgid: int, grace_s: float = ORPHAN_GRACE_S) -> int:
    """Wait up to ``grace_s`` for the killed extract's workers to exit; kill and count those still alive."""
    deadline = time.monotonic() + grace_s
    while (alive := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return len(alive)


def _launch(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as handle:  # the child keeps its own descriptor
        return subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def run_campaign(manifest: Path, model: Path, workdir: Path, kills: int, seed: int = 0,
                 schedule: list[str] | None = None, kills_per_round: int = 5, timeout_s: float = 300.0,
                 target: str = "group") -> CampaignReport:
    """Kill ``extract`` at least ``kills`` times (or along ``schedule``, one phase per launch) and compare.

    Without ``schedule``, each launch's phase is drawn at random among those its cache can still reach.
    ``target`` is ``group`` (the process group) or ``main`` (the main process only; orphans are counted).
    """
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    report = CampaignReport()
    clean_path = workdir / "clean.h5"
    subprocess.run(extract_command(manifest, model, clean_path), check=True, capture_output=True, cwd=REPO,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    clean = cache_arrays(clean_path)
    clean_reader = CacheReader(clean_path)
    clean_ids = clean_reader.manifest["utt_id"].filter(clean_reader.ok(clean_reader.stages)).to_list()
    report.utterances = len(clean_ids)
    while report.kills_landed < kills:
        report.rounds += 1
        cache = workdir / f"round{report.rounds:03d}.h5"
        phases = list(schedule) if schedule else []
        for launch in range(kills_per_round if not schedule else len(phases)):
            if not schedule:
                options = [p for p in PHASES if _reachable(p, cache)]
                phases.append(str(rng.choice(options)))
            phase = phases[launch]
            log = workdir / f"round{report.rounds:03d}-launch{launch}.log"
            proc = _launch(extract_command(manifest, model, cache), log)
            report.launches += 1
            seen = _wait_for_sign(phase, cache, log, proc, rng, timeout_s)
            delay = _delay_for(phase, rng)
            time.sleep(delay)
            landed = seen and proc.poll() is None
            if landed and target == "main":
                os.kill(proc.pid, signal.SIGKILL)
            elif landed:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            orphans = orphans_after(proc.pid)  # the launch's process group: its workers
            lines = log.read_text(errors="replace").strip().splitlines()
            journal_after = CachePaths(cache).journal.exists()  # before the check below opens (and rolls back)
            report.kills.append(Kill(report.rounds, phase, delay, landed, lines[-1] if lines else "",
                                     _check_committed(cache, clean), _stages_in(cache),
                                     len(CachePaths(cache).leftover_temp_files()), orphans, journal_after))
            if not landed:
                if proc.returncode != 0:
                    raise RuntimeError(f"launch ended with status {proc.returncode} before the kill: see {log}")
                break  # it finished first: the round is complete
            if report.kills_landed >= kills and not schedule:
                break
        final_log = workdir / f"round{report.rounds:03d}-final.log"
        final = subprocess.run(extract_command(manifest, model, cache), capture_output=True, text=True, cwd=REPO,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
        final_log.write_text(final.stdout + final.stderr)
        report.launches += 1
        if final.returncode != 0:
            raise RuntimeError(f"the finishing run failed: see {final_log}")
        _compare_round(cache, clean, clean_ids, report)
        if schedule:
            break
    report.seconds = time.monotonic() - started
    return report


def _compare_round(cache: Path, clean: dict[str, np.ndarray], clean_ids: list[str], report: CampaignReport) -> None:
    resumed = cache_arrays(cache)
    reader = CacheReader(cache)
    ids = reader.manifest["utt_id"].to_list()
    ok = reader.ok(reader.stages)
    report.utterances_lost += len(set(clean_ids) - {i for i, good in zip(ids, ok) if good})
    report.duplicate_ids += len(ids) - len(set(ids))
    report.arrays_compared += len(clean)
    report.array_names = sorted(clean)
    report.arrays_differing += [f"{cache.name}:{k}" for k in differing(clean, resumed)]
    report.arrays_differing += [f"{cache.name}:{k} (extra)" for k in resumed if k not in clean]
    paths = CachePaths(cache)
    leftovers = paths.leftover_temp_files() + [p for p in (paths.parts, paths.lock, paths.journal) if p.exists()]
    report.leftover_files += [str(p) for p in leftovers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("kill_campaign_out"))
    parser.add_argument("--dialogs-per-fold", type=int, default=2, help="synthetic corpus: 5 folds x this x 8 turns")
    parser.add_argument("--target", choices=("group", "main"), default="main",
                        help="kill the process group, or the main process only (then count orphaned workers)")
    args = parser.parse_args()

    from pipeline.corpora.synthetic import write_synthetic_corpus
    from testing.random_wavlm import save_random_wavlm

    manifest = write_synthetic_corpus(args.workdir / "corpus", dialogs_per_fold=args.dialogs_per_fold, turns=8)
    model = save_random_wavlm(args.workdir / "tiny_wavlm", "tiny")
    report = run_campaign(manifest, model, args.workdir, args.kills, args.seed, target=args.target)
    by_phase: dict[str, list[int]] = {}
    for kill in report.kills:
        by_phase.setdefault(kill.phase, [0, 0])[0] += 1
        by_phase[kill.phase][1] += kill.landed
    print(f"utterances {report.utterances}, rounds {report.rounds}, launches {report.launches}, "
          f"{report.seconds:.0f} s")
    for phase, (tried, landed) in by_phase.items():
        print(f"  {phase:8s} kills landed {landed:3d} of {tried:3d}   ({PHASES[phase]})")
    print(f"kills landed {report.kills_landed}; committed stages intact after every kill: "
          f"{all(k.cache_ok_after for k in report.kills)}; kills inside an in-place addition (journal left, "
          f"rolled back) {sum(k.journal_after for k in report.kills)}")
    print(f"utterances lost {report.utterances_lost}, duplicate ids {report.duplicate_ids}, "
          f"arrays differing {len(report.arrays_differing)} of {report.arrays_compared}, "
          f"leftover work files {len(report.leftover_files)}, orphaned workers {report.orphans} "
          f"(alive {ORPHAN_GRACE_S:.0f} s after a kill of the {args.target} process{'' if args.target == 'main' else ' group'})")
    (args.workdir / "report.json").write_text(json.dumps(
        {**asdict(report), "kills_landed": report.kills_landed, "orphans": report.orphans,
         "survived": report.survived}, indent=1))
    sys.exit(0 if report.survived else 1)


if __name__ == "__main__":
    main()
