"""What head training shows while it runs: on a terminal, a live line (run, fold, seed, epoch, train loss,
validation CCC, best so far) and an ETA over all runs; otherwise one log line per finished run."""

from __future__ import annotations

import logging
import sys
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

    def __enter__(self) -> "TrainingProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start(self, label: str, fold: int | str, seed: int) -> Callable[[dict], None]:
        """The ``on_epoch`` callback of one training run."""
        self.current = f"{label} {fold if isinstance(fold, str) else f'fold {fold}'} seed {seed}"
        self.progress.update(self.task, description=self.current)

        def on_epoch(entry: dict) -> None:
            self.progress.update(self.task, description=(
                f"{self.current}: epoch {entry['epoch'] + 1}/{entry['epochs']}, train loss {entry['train_loss']:.3f}, "
                f"val CCC {entry['val_ccc']:.3f} (best {entry['best_val_ccc']:.3f} at epoch {entry['best_epoch'] + 1})"))

        return on_epoch

    def finish(self, epochs: int, best_epoch: int, best_val_ccc: float, max_epochs: int, seconds: float) -> None:
        """One run is done: its summary line (always logged, so it lands in non-interactive logs)."""
        if epochs:
            stop = "stopped early" if epochs < max_epochs else "ran every epoch"
            text = (f"{self.current}: {epochs} epochs ({stop}), best validation CCC {best_val_ccc:.3f} at epoch "
                    f"{best_epoch + 1}, {seconds:.1f} s")
        else:
            text = f"{self.current}: closed-form fit, validation CCC {best_val_ccc:.3f}, {seconds:.1f} s"
        if self.live:
            self.progress.console.print(text, highlight=False)
        else:
            log.info(text)
        self.progress.advance(self.task)
