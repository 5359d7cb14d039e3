"""Facts about this machine that decide how work is sized: the memory a new allocation can have."""

from __future__ import annotations

import os


def available_memory_bytes() -> int:
    """Memory the kernel says a new allocation can have without swapping (``MemAvailable``, Linux), else the free
    physical pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
