"""Problems found in input data: what went wrong, where (file and line), and how to report them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One bad input item. ``line`` is 1-based; ``None`` when the problem is the whole file."""

    file: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}"


class InputError(Exception):
    """Bad user input (a corpus, a manifest, a cache). The CLI prints it in one line and exits with 2."""


def report_problems(problems: list[Problem], strict: bool, what: str) -> None:
    """Warn about each problem (the item was skipped), or raise ``InputError`` when ``strict``."""
    if not problems:
        return
    if strict:
        listing = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise InputError(f"{len(problems)} problem(s) in {what} (--strict):\n  {listing}{more}")
    for problem in problems:
        warnings.warn(f"skipped: {problem}", stacklevel=2)
