"""One writer per cache: a second is refused at once, a dead owner's lock is cleared, readers go on."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from cache import CacheReader, add_stage
from cache.lock import CacheLock
from core.errors import InputError
from tests.synth_cache import planted_cache


def _lock_file(cache, pid: int, host: str | None = None):
    lock = cache.parent / f"{cache.name}.lock"
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": "2026-01-01T00:00:00+00:00"}))
    return lock


def test_a_second_writer_is_refused_naming_the_owner(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(tmp_path / "c.h5", sleeper.pid)
        with pytest.raises(InputError, match=rf"another extract is writing this cache \(pid {sleeper.pid} on "):
            with CacheLock(tmp_path / "c.h5"):
                pass
    finally:
        sleeper.kill()


def test_a_lock_held_on_another_host_is_respected(tmp_path):
    _lock_file(tmp_path / "c.h5", 1, host="some-other-node")
    with pytest.raises(InputError, match="some-other-node"):
        with CacheLock(tmp_path / "c.h5"):
            pass


def test_a_stale_lock_of_a_dead_process_is_cleared(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = _lock_file(tmp_path / "c.h5", int(finished.stdout))
    with CacheLock(tmp_path / "c.h5"):
        assert json.loads(lock.read_text())["pid"] != int(finished.stdout)
    assert not lock.exists()  # released on exit


def test_readers_work_while_a_writer_holds_the_lock(tmp_path):
    cache = planted_cache(tmp_path / "c.h5", n_per_speaker=5)
    with CacheLock(cache):
        reader = CacheReader(cache)
        assert reader.read("speech", "pooled").shape[0] == 50
        add_stage(cache, "extra", {"ok": np.ones(50, bool)}, {}, [])  # the writer replaces the file meanwhile
        assert reader.read("prosody", "values").shape == (50, 8)


def test_a_process_is_alive_until_it_has_exited_and_been_reaped():
    import os
    import subprocess
    import sys

    from core.processes import process_alive

    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid)
