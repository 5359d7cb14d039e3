"""Adding a stage to a cache writes only that stage, in place, and a kill at any write leaves the old file byte for
byte (the undo journal) or the old one plus the whole stage; readers never see a half-added stage."""

import errno
import hashlib
import os
import time

import h5py
import numpy as np
import polars as pl
import pytest

import cache.journal as journal
import cache.writer as writer
from cache import CachePaths, CacheReader, Failure, add_stage, create_cache
from cache.writer import RowBlocks
from core.errors import InputError
from pipeline.corpora.manifest import normalise_manifest

N = 300


def _manifest(n: int = N) -> pl.DataFrame:
    return normalise_manifest(pl.DataFrame({
        "utt_id": [f"u{i:04d}" for i in range(n)], "path": [f"/a/u{i}.wav" for i in range(n)],
        "duration_s": 1.0, "sample_rate": 16000, "speaker": [f"s{i % 6}" for i in range(n)],
        "dialog_id": [f"d{i % 12}" for i in range(n)], "start_s": [float(i) for i in range(n)],
        "fold": [i % 6 // 2 + 1 for i in range(n)], "valence": 3.0, "arousal": 3.0}))


@pytest.fixture
def cache_with_speech(tmp_path):
    path = tmp_path / "c.h5"
    create_cache(path, _manifest(), {"note": "test"})
    rng = np.random.default_rng(0)
    add_stage(path, "speech", {"pooled": rng.standard_normal((N, 5, 64)).astype(np.float16), "ok": np.ones(N, bool)},
              {"model": "m"}, [Failure("u0001", "speech", "/a/u1.wav", "bad")])
    return path


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _chunk_offsets(path, name: str) -> list[int]:
    with h5py.File(path, "r") as file:
        dataset = file[name]
        return [dataset.id.get_chunk_info(i).byte_offset for i in range(dataset.id.get_num_chunks())]


def _prosody(seed: int = 1) -> dict[str, np.ndarray]:
    values = np.random.default_rng(seed).standard_normal((N, 40)).astype(np.float32)
    return {"values": values, "defined": np.ones_like(values, bool), "ok": np.ones(N, bool)}


def test_adding_a_stage_keeps_the_file_and_leaves_the_other_stages_where_they_are(cache_with_speech):
    path = cache_with_speech
    before_inode, before_size = os.stat(path).st_ino, os.path.getsize(path)
    speech_chunks = _chunk_offsets(path, "speech/pooled")
    add_stage(path, "prosody", _prosody(), {"v": 1}, [])
    assert os.stat(path).st_ino == before_inode  # not a new file moved over the old one
    assert _chunk_offsets(path, "speech/pooled") == speech_chunks  # the speech block was not copied
    grown = os.path.getsize(path) - before_size
    assert N * 40 * 5 <= grown < N * 40 * 5 + 200_000  # the prosody arrays (values + defined) and some metadata
    reader = CacheReader(path)
    assert reader.stages == ["speech", "prosody"] and not CachePaths(path).journal.exists()
    assert reader.read("prosody", "values").tobytes() == _prosody()["values"].tobytes()
    assert [f.utt_id for f in reader.failures] == ["u0001"]


NO_KILL = 10**9


def _killed_at_write(path, kill_at: int, stage_data: dict) -> int:
    """Fork a child that adds a stage and dies (``os._exit``, no clean-up) just before its ``kill_at``-th write to
    the cache file (exit code 9), or, when it makes fewer writes, at the commit, after every write and before the
    journal is dropped (exit code 8). Exit code 0: it finished (``NO_KILL``)."""
    child = os.fork()
    if child == 0:  # the child: never returns
        writes = 0
        write, commit = journal.JournaledFile.write, journal.JournaledFile.commit

        def dying_write(self, data):  # noqa: ANN001, ANN202
            nonlocal writes
            writes += 1
            if writes == kill_at:
                os._exit(9)
            return write(self, data)

        def dying_commit(self):  # noqa: ANN001, ANN202
            if kill_at != NO_KILL:
                os._exit(8)
            return commit(self)

        journal.JournaledFile.write, journal.JournaledFile.commit = dying_write, dying_commit
        try:
            add_stage(path, "prosody", stage_data, {"v": 1}, [])
        except BaseException:
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_kill_at_any_write_leaves_the_old_file_byte_for_byte_or_the_whole_new_stage(cache_with_speech):
    path = cache_with_speech
    original = _sha(path)
    data = _prosody()
    outcomes = []
    for kill_at in range(1, 400):
        code = _killed_at_write(path, kill_at, data)
        reader = CacheReader(path)  # rolls back what the killed writer left
        if code in (8, 9):
            assert _sha(path) == original, f"killed before write {kill_at}: the file differs from the old one"
            assert reader.stages == ["speech"]
            outcomes.append("write" if code == 9 else "commit")
            if code == 8:
                break
            continue
    assert outcomes.count("write") >= 10 and outcomes[-1] == "commit"  # kills before every write, and at the commit
    assert _killed_at_write(path, NO_KILL, data) == 0
    reader = CacheReader(path)
    assert reader.stages == ["speech", "prosody"]
    assert reader.read("prosody", "values").tobytes() == data["values"].tobytes()
    assert not CachePaths(path).journal.exists()


def test_an_error_inside_the_addition_puts_the_old_file_back(cache_with_speech, monkeypatch):
    path = cache_with_speech
    original = _sha(path)

    def failing_blocks():
        yield "late", 0, np.zeros(N, np.float32)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        add_stage(path, "prosody", _prosody(), {"v": 1}, [],
                  blocks=RowBlocks({"late": ((N,), np.dtype(np.float32))}, failing_blocks()))
    assert _sha(path) == original and not CachePaths(path).journal.exists()
    assert CacheReader(path).stages == ["speech"]


def _slow_writer_started(path) -> int:  # noqa: ANN001
    """Fork a child that adds the stage ``prosody`` (with a dataset ``late`` = 0..N-1) in place and takes 0.8 s over
    it; return its pid once it holds the file (its exclusive lock and its journal)."""
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:
        def slow_blocks():
            os.write(ready_write, b"x")  # the writer holds the file: the parent may act now
            time.sleep(0.8)
            yield "late", 0, np.arange(N, dtype=np.float32)

        try:
            add_stage(path, "prosody", _prosody(), {"v": 1}, [],
                      blocks=RowBlocks({"late": ((N,), np.dtype(np.float32))}, slow_blocks()))
        finally:
            os._exit(0)
    os.read(ready_read, 1)
    return child


def test_a_reader_waits_for_a_stage_being_added_and_then_sees_all_of_it(cache_with_speech):
    path = cache_with_speech
    child = _slow_writer_started(path)
    started = time.monotonic()
    reader = CacheReader(path)
    waited = time.monotonic() - started
    os.waitpid(child, 0)
    assert waited > 0.3  # it waited for the writer instead of reading a file in the middle of a change
    assert reader.stages == ["speech", "prosody"]
    assert np.array_equal(reader.read("prosody", "late"), np.arange(N, dtype=np.float32))


def test_a_journal_of_a_file_replaced_since_is_dropped_without_touching_the_new_file(cache_with_speech, tmp_path):
    path = cache_with_speech
    assert _killed_at_write(path, 3, _prosody()) == 9  # leaves a journal of this file
    stale = CachePaths(path).journal.read_bytes()
    replacement = tmp_path / "other.h5"
    create_cache(replacement, _manifest(), {"note": "other"})
    os.replace(replacement, path)  # e.g. extract --force, or a copy put in its place by hand
    CachePaths(path).journal.write_bytes(stale)
    replaced = _sha(path)
    assert CacheReader(path).config == {"note": "other"}
    assert _sha(path) == replaced and not CachePaths(path).journal.exists()


def test_replacing_a_large_stage_rewrites_the_cache_instead_of_leaving_its_space_unused(cache_with_speech, monkeypatch):
    path = cache_with_speech
    monkeypatch.setattr(writer, "UNUSED_BYTES_ALWAYS_FINE", 0)
    inode, size = os.stat(path).st_ino, os.path.getsize(path)
    pooled = np.ones((N, 5, 64), np.float16)
    add_stage(path, "speech", {"pooled": pooled, "ok": np.ones(N, bool)}, {"model": "m2"}, [])
    assert os.stat(path).st_ino != inode  # a new file moved over the old one
    assert os.path.getsize(path) <= size * 1.05  # no dead copy of the old speech block inside
    assert np.array_equal(CacheReader(path).read("speech", "pooled"), pooled)


def test_a_reader_that_may_not_undo_an_interrupted_addition_says_what_to_do(cache_with_speech, monkeypatch):
    path = cache_with_speech
    assert _killed_at_write(path, 5, _prosody()) == 9
    real_open = open

    def read_only_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202 - as a user without write access
        if "+" in mode or "w" in mode:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(journal, "open", read_only_open, raising=False)
    with pytest.raises(InputError, match="interrupted and must be undone first, which needs write access"):
        CacheReader(path)
    monkeypatch.undo()
    assert CacheReader(path).stages == ["speech"]  # with write access it is undone


def test_without_file_locks_a_stage_is_added_by_rewriting_the_cache(cache_with_speech, monkeypatch):
    path = cache_with_speech

    def no_locks(fd, operation):  # noqa: ANN001, ANN202 - a cluster file system mounted without flock
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(journal.fcntl, "flock", no_locks)
    inode = os.stat(path).st_ino
    add_stage(path, "prosody", _prosody(), {"v": 1}, [])
    assert os.stat(path).st_ino != inode and not CachePaths(path).journal.exists()
    assert CacheReader(path).stages == ["speech", "prosody"]


class _FillingDisk:
    """The cache file on a disk that fills up: each write takes at most 1,000 bytes (a full disk or a quota can
    make ``write`` return short without an error), and after ``budget`` bytes every write fails with ENOSPC."""

    def __init__(self, raw, budget: int):  # noqa: ANN001 - the raw file object
        self.raw, self.budget = raw, budget

    def write(self, data) -> int:  # noqa: ANN001
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        view = memoryview(data).cast("B")[: min(1000, self.budget)]
        self.budget -= len(view)
        return self.raw.write(view)

    def __getattr__(self, name):  # noqa: ANN001, ANN204 - everything else as the real file
        return getattr(self.raw, name)


@pytest.mark.parametrize("budget", [3_000, 25_000, 50_000])  # all fail before the end (~70 kB)
def test_a_disk_filling_up_during_an_addition_leaves_the_old_file_and_the_process_reads_on(cache_with_speech,
                                                                                           monkeypatch, budget):
    path = cache_with_speech
    add_stage(path, "prosody", _prosody(1), {"v": 1}, [])  # replacing it lets HDF5 reuse its space below the old end
    original = _sha(path)
    real_init, real_write = journal.JournaledFile.__init__, os.write

    def on_a_filling_disk(self, cache_path):  # noqa: ANN001, ANN202
        real_init(self, cache_path)
        self._file = _FillingDisk(self._file, budget)

    monkeypatch.setattr(journal.JournaledFile, "__init__", on_a_filling_disk)
    monkeypatch.setattr(journal.os, "write", lambda fd, data: real_write(fd, memoryview(data)[:1000]))  # short
    with pytest.raises(OSError, match="No space left"):
        add_stage(path, "prosody", _prosody(2), {"v": 2}, [])
    monkeypatch.undo()
    assert _sha(path) == original and not CachePaths(path).journal.exists()
    reader = CacheReader(path)  # in the same process: HDF5 was never handed the error
    assert reader.provenance("prosody") == {"v": 1}
    assert reader.read("prosody", "values").tobytes() == _prosody(1)["values"].tobytes()


def test_a_reader_recovering_an_old_journal_never_undoes_a_live_writer_of_the_file_now_there(cache_with_speech,
                                                                                            tmp_path):
    path = cache_with_speech
    assert _killed_at_write(path, 5, _prosody()) == 9  # a dead writer's journal, of this inode
    replacement = tmp_path / "new.h5"
    create_cache(replacement, _manifest(), {"note": "new"})
    os.replace(replacement, path)  # the file is replaced (as by a rewrite) before anyone recovered
    child = _slow_writer_started(path)  # a live writer of the new file: it holds the lock and its own journal
    journal.recover(path)  # must wait for the live writer, not roll its work back
    os.waitpid(child, 0)
    reader = CacheReader(path)
    assert reader.config == {"note": "new"} and reader.stages == ["prosody"]
    assert np.array_equal(reader.read("prosody", "late"), np.arange(N, dtype=np.float32))
