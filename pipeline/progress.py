"""A rich progress bar for extraction stages showing files/s and the real-time factor."""

from __future__ import annotations

import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:  # noqa: ANN001 - rich's Task
        elapsed = max(time.perf_counter() - task.fields["started"], 1e-9)
        files = task.completed / elapsed
        rtf = task.fields["audio_s"] / elapsed
        return Text(f"{files:6.1f} files/s  {rtf:7.1f}x real time", style="cyan")


class StageProgress:
    """``with StageProgress("speech", total) as p: p.advance(files, audio_seconds)``."""

    def __init__(self, description: str, total_files: int):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
            TimeRemainingColumn(), transient=False, disable=not sys.stderr.isatty(),
        )
        self.task = self.progress.add_task(description, total=total_files, audio_s=0.0, started=time.perf_counter())

    def __enter__(self) -> "StageProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def advance(self, files: int, audio_seconds: float) -> None:
        fields = self.progress.tasks[0].fields
        self.progress.update(self.task, advance=files, audio_s=fields["audio_s"] + audio_seconds)
