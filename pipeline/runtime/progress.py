"""A rich progress bar for extraction stages: files/s and the real-time factor, or units/s for a stage
whose units are not files (the state stage's updaters)."""

from __future__ import annotations

import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:  # noqa: ANN001 - rich's Task
        elapsed = max(time.perf_counter() - task.fields["started"], 1e-9)
        rate = task.completed / elapsed
        if task.fields["what"] != "files":
            return Text(f"{rate:6.2f} {task.fields['what']}/s", style="cyan")
        rtf = task.fields["audio_s"] / elapsed
        return Text(f"{rate:6.1f} files/s  {rtf:7.1f}x real time", style="cyan")


class StageProgress:
    """``with StageProgress("speech", total) as p: p.advance(files, audio_seconds)``; ``what`` names the
    counted things ("files" shows the real-time factor too)."""

    def __init__(self, description: str, total: int, what: str = "files"):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
            TimeRemainingColumn(), transient=False, disable=not sys.stderr.isatty(),
        )
        self.task = self.progress.add_task(description, total=total, audio_s=0.0, started=time.perf_counter(),
                                           what=what)

    def __enter__(self) -> "StageProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def advance(self, count: int, audio_seconds: float = 0.0) -> None:
        fields = self.progress.tasks[0].fields
        self.progress.update(self.task, advance=count, audio_s=fields["audio_s"] + audio_seconds)
