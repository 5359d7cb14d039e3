"""What head training shows while it runs: on a terminal, a live line (run, fold, seed, epoch, train loss,
validation CCC, best so far) and an ETA over all runs; otherwise one log line per finished run."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger("heads")


class TrainingProgress:
    """``with TrainingProgress(runs) as p: on_epoch = p.start(label, fold, seed); ...; p.finish(summary)``."""

    def __init__(self, total_runs: int, live: bool | None = None):
        self.live = sys.stderr.isatty() if live is None else live
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), disable=not self.live, transient=False)
        self.task = self.progress.add_task("training", total=total_runs)
        self.current = ""
        self.total, self.done, self.started = total_runs, 0, time.perf_counter()

    def __enter__(self) -> "TrainingProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start(self, label: str, fold: int | str, seed: int, note: str = "") -> Callable[[dict], None]:
        """The ``on_epoch`` callback of one training run (``note``: what sets it apart, e.g. the state gate's
        second run without the state)."""
        self.current = f"{label} {fold if isinstance(fold, str) else f'fold {fold}'} seed {seed}" + (
            f" ({note})" if note else "")
        self.progress.update(self.task, description=self.current)

        def on_epoch(entry: dict) -> None:
            self.progress.update(self.task, description=(
                f"{self.current}: epoch {entry['epoch'] + 1}/{entry['epochs']}, train loss {entry['train_loss']:.3f}, "
                f"val CCC {entry['val_ccc']:.3f} (best {entry['best_val_ccc']:.3f} at epoch {entry['best_epoch'] + 1})"))

        return on_epoch

    def finish(self, epochs: int, best_epoch: int, best_val_ccc: float, max_epochs: int, seconds: float) -> None:
        """One run is done: its summary line (always logged, so it lands in non-interactive logs)."""
        self.done += 1
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done)
        count = f"[{self.done}/{self.total}, {_clock(elapsed)} elapsed" + (
            f", about {_clock(left)} left]" if self.done < self.total else "]")
        if epochs:
            stop = "stopped early" if epochs < max_epochs else "ran every epoch"
            text = (f"{count} {self.current}: {epochs} epochs ({stop}), best validation CCC {best_val_ccc:.3f} at "
                    f"epoch {best_epoch + 1}, {seconds:.1f} s")
        else:
            text = f"{count} {self.current}: closed-form fit, validation CCC {best_val_ccc:.3f}, {seconds:.1f} s"
        self.say(text)
        self.progress.advance(self.task)

    def say(self, text: str) -> None:
        """One line above the live bar, or in the log."""
        if self.live:
            self.progress.console.print(text, highlight=False)
        else:
            log.info(text)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
