"""Header facts of an audio file (duration, sample rate), read without decoding the samples."""

from __future__ import annotations

from pathlib import Path

import soundfile


def audio_header(path: Path) -> tuple[float | None, int | None]:
    """``(duration_s, sample_rate_hz)`` from the file header, or ``(None, None)`` if it cannot be read.

    An unreadable file is not a manifest problem: extraction records it in the cache's failures table
    with the decoder's reason, so the manifest keeps the row.
    """
    try:
        info = soundfile.info(str(path))
    except Exception:  # noqa: BLE001 - any decoder error means "header unreadable"
        return None, None
    return float(info.frames) / float(info.samplerate), int(info.samplerate)
