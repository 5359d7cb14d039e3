"""Add to a cache file in place, so that a kill at any moment leaves the old file or the old one plus the whole
addition: an undo journal (SQLite's rollback journal, for HDF5), and shared/exclusive locks for readers.

HDF5 writes new objects past the old end of the file and changes a few metadata blocks inside it (the superblock,
the root group's links, space freed and reused in the same session). The writer goes through h5py's file-object
driver (``JournaledFile``): before any write below the old end, the bytes it overwrites are appended to
``<cache>.journal`` and fsynced. Commit = the file fsynced, then the journal deleted. A journal found later belongs
to a writer that died: the next opener puts the old bytes back and cuts the file to its old length
(``roll_back``), which gives back the old file byte for byte.

Readers hold a shared ``flock`` on the cache while a read is open (``reading``); the in-place writer holds an
exclusive one for its whole session, so nobody reads a file in the middle of a change. A cache replaced whole by
atomic rename (``cache.writer``) needs no lock: the old inode stays intact for whoever has it open. On a file system
without ``flock`` (``LocksUnsupported``) nothing is added in place: the writer rewrites the cache instead.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

from cache.paths import CachePaths
from core.errors import InputError

log = logging.getLogger(__name__)

_MAGIC = b"SERJNL01"
_HEADER = struct.Struct("<QQQ")  # device, inode, length of the file before the session
_RECORD = struct.Struct("<QQ")  # offset, length of the original bytes that follow
_DIGEST = 32  # sha256 after the header and after every record
_APPENDING: set[tuple[int, int]] = set()  # (device, inode) this process is appending to: a read would deadlock


def _digest(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocksUnsupported(OSError):
    """The file system refuses ``flock`` (some cluster file systems unless mounted with it)."""


def _identity(info: os.stat_result) -> tuple[int, int]:
    """(device, inode): which file a path or descriptor is, whatever was renamed over the path since."""
    return info.st_dev, info.st_ino


def _write_fully(write, data) -> None:  # noqa: ANN001 - os.write-like callable, bytes-like data
    """Write all of ``data``: a full disk or a quota can make one ``write`` take only part of it without an error."""
    view = memoryview(data).cast("B")
    while len(view):
        written = write(view)
        if not written:
            raise OSError(errno.ENOSPC, "no space left: a write took no bytes")
        view = view[written:]


def _lock(fd: int, kind: int, path: Path, waiting_for: str) -> None:
    """``flock`` with a line in the log when it has to wait."""
    try:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: waiting for %s", path, waiting_for)
            fcntl.flock(fd, kind)
    except OSError as err:
        if err.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL):
            raise LocksUnsupported(err.errno, f"{path}: file locks are not supported here ({err.strerror})") from None
        raise


class JournaledFile(io.RawIOBase):
    """The cache file for h5py's file-object driver: every write below ``original_size`` is preceded by a
    durable record of the bytes it replaces. Holds an exclusive ``flock`` on the file until ``close``."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self.journal_path = CachePaths(self.path).journal
        self._file = _open_locked(self.path, fcntl.LOCK_EX, "r+b", "readers to finish before adding to it")
        try:
            self.identity = _identity(os.fstat(self._file.fileno()))
            roll_back(self.path, self.identity)  # what a writer that died left, first (its journal is in the way)
            self.original_size = os.fstat(self._file.fileno()).st_size
            self._saved: list[tuple[int, int]] = []  # ranges below original_size already journaled, disjoint
            self.error: OSError | None = None  # the first failed write: the session is lost (``appending``)
            self._journal = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            header = _HEADER.pack(*self.identity, self.original_size)
            _write_fully(lambda view: os.write(self._journal, view), _MAGIC + header + _digest(header))
            os.fsync(self._journal)
            _fsync_dir(self.journal_path)
        except BaseException:
            self._file.close()
            raise

    # io.RawIOBase: what h5py's file-object driver calls
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer) -> int:  # noqa: ANN001 - any writable buffer
        return self._file.readinto(buffer)

    def write(self, data) -> int:  # noqa: ANN001 - any bytes-like object
        """Journal, then write all of ``data``. A failure (a full disk) is kept in ``error`` and not raised into
        HDF5: an error inside HDF5's close left it in a state that crashed the process's next open of any file.
        The session is then rolled back when h5py has closed the file (``appending``)."""
        size = memoryview(data).nbytes
        if self.error is None:
            try:
                position = self._file.tell()
                self._save(position, position + size)
                self._file.seek(position)
                _write_fully(self._file.write, data)
            except OSError as err:
                self.error = err
        return size

    def truncate(self, size: int | None = None) -> int:
        size = self._file.tell() if size is None else size
        if self.error is None:
            try:
                self._save(size, self.original_size)
                self._file.truncate(size)
            except OSError as err:
                self.error = err
        return size

    def flush(self) -> None:
        pass  # unbuffered; durability is commit()'s fsync

    def _save(self, start: int, stop: int) -> None:
        """Journal the original bytes of ``[start, stop)`` below the old end not journaled yet, durably."""
        stop = min(stop, self.original_size)
        for lo, hi in self._unsaved(start, stop):
            self._file.seek(lo)
            original = self._file.read(hi - lo)
            record = _RECORD.pack(lo, len(original))
            _write_fully(lambda view: os.write(self._journal, view), record + original + _digest(record, original))
            os.fsync(self._journal)
            self._saved.append((lo, hi))

    def _unsaved(self, start: int, stop: int) -> list[tuple[int, int]]:
        gaps, cursor = [], start
        for lo, hi in sorted(self._saved):
            if hi <= cursor or lo >= stop:
                continue
            if lo > cursor:
                gaps.append((cursor, lo))
            cursor = max(cursor, hi)
        if cursor < stop:
            gaps.append((cursor, stop))
        return gaps

    def commit(self) -> None:
        """Make the new file durable, then drop the journal: from here on the addition is the cache."""
        os.fsync(self._file.fileno())
        os.close(self._journal)
        self._journal = -1
        self.journal_path.unlink()
        _fsync_dir(self.journal_path)

    def close(self) -> None:
        if self._journal >= 0:
            os.close(self._journal)
            self._journal = -1
        if not self._file.closed:
            self._file.close()  # releases the flock
        super().close()


def _records(journal: bytes) -> tuple[tuple[int, int, int] | None, list[tuple[int, bytes]]]:
    """The header (device, inode, length) and the whole records of a journal; a torn tail is left out (its write
    to the cache never happened: each record is fsynced before its write)."""
    head = len(_MAGIC) + _HEADER.size
    if journal[: len(_MAGIC)] != _MAGIC or len(journal) < head + _DIGEST or \
            _digest(journal[len(_MAGIC) : head]) != journal[head : head + _DIGEST]:
        return None, []  # torn header: fsynced before any change, so the file was not touched
    header = _HEADER.unpack(journal[len(_MAGIC) : head])
    records, at = [], head + _DIGEST
    while at + _RECORD.size <= len(journal):
        offset, length = _RECORD.unpack_from(journal, at)
        body = journal[at + _RECORD.size : at + _RECORD.size + length]
        tail = journal[at + _RECORD.size + length : at + _RECORD.size + length + _DIGEST]
        if len(body) != length or tail != _digest(journal[at : at + _RECORD.size], body):
            break
        records.append((offset, body))
        at += _RECORD.size + length + _DIGEST
    return header, records


def roll_back(path: str | Path, locked: tuple[int, int]) -> bool:
    """Undo an interrupted in-place addition to ``path`` if its journal is there. The caller holds the exclusive
    lock on the file now at ``path``, whose (device, inode) is ``locked``: no live writer can own a journal of it,
    and a journal of another inode is left by a writer that died before that file was replaced (stale). Returns
    whether anything was put back."""
    path = Path(path)
    journal_path = CachePaths(path).journal
    try:
        journal = journal_path.read_bytes()
    except FileNotFoundError:
        return False
    header, records = _records(journal)
    undone = False
    if header is not None and header[:2] == locked:
        with open(path, "r+b", buffering=0) as file:
            if _identity(os.fstat(file.fileno())) != locked:
                return False  # replaced under our feet: the caller looks again
            for offset, original in records:
                file.seek(offset)
                _write_fully(file.write, original)
            file.truncate(header[2])
            os.fsync(file.fileno())
        undone = True
        log.warning("%s: an interrupted addition was undone (%d block(s) put back); the cache is as it was "
                    "before it", path, len(records))
    journal_path.unlink(missing_ok=True)
    _fsync_dir(journal_path)
    return undone


def _open_locked(path: Path, kind: int, mode: str, waiting_for: str):  # noqa: ANN202 - an open binary file
    """``path`` opened and ``flock``-ed, and still the file at ``path`` once the lock is held (a file renamed over
    it while we waited is opened again)."""
    while True:
        handle = open(path, mode, buffering=0)  # noqa: SIM115 - returned to the caller
        try:
            _lock(handle.fileno(), kind, path, waiting_for)
            held, now = os.fstat(handle.fileno()), os.stat(path)
        except BaseException:
            handle.close()
            raise
        if _identity(held) == _identity(now):
            return handle
        handle.close()


@contextmanager
def appending(path: str | Path) -> Iterator[h5py.File]:
    """``path`` open for adding to it in place (``h5py.File`` in ``r+`` mode). When the block ends the addition is
    committed whole; when it raises (or the process dies) the file is put back as it was."""
    path = Path(path)
    journaled = JournaledFile(path)
    _APPENDING.add(journaled.identity)
    try:
        try:
            with h5py.File(journaled, "r+") as file:
                yield file
            if journaled.error is not None:
                raise journaled.error
        except BaseException:
            roll_back(path, journaled.identity)
            raise
        journaled.commit()
    finally:
        _APPENDING.discard(journaled.identity)
        journaled.close()


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Hold a shared lock on ``path`` while the block reads it (an in-place writer waits for it, and it for the
    writer). A journal left by a writer that died is rolled back first, which needs write access."""
    path = Path(path)
    while True:
        if _identity(os.stat(path)) in _APPENDING:
            raise RuntimeError(f"{path}: read while this process adds to it in place (it would wait for itself)")
        try:
            handle = _open_locked(path, fcntl.LOCK_SH, "rb", "a stage being added to it to be written")
        except LocksUnsupported:
            yield  # no writer adds in place on such a file system either (cache.writer rewrites instead)
            return
        with handle:
            if not CachePaths(path).journal.exists():
                yield
                return
        recover(path)


def recover(path: str | Path) -> None:
    """Roll back a dead writer's journal, if there is one, under the exclusive lock (waiting for readers)."""
    path = Path(path)
    journal = CachePaths(path).journal
    if not journal.exists():
        return
    if not path.is_file():  # the cache itself is gone: nothing to put back
        journal.unlink(missing_ok=True)
        return
    try:
        with _open_locked(path, fcntl.LOCK_EX, "r+b", "a stage being added to it to be written") as handle:
            roll_back(path, _identity(os.fstat(handle.fileno())))
    except PermissionError as err:
        raise InputError(f"{path}: an addition to this cache was interrupted and must be undone first, which needs "
                         f"write access to the file and its folder ({err}); run `python cli.py extract` (or any "
                         "command) as a user who may write there") from None
