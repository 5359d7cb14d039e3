"""A damaged cache is a clear error, never different data: random bit flips end in ``InputError`` or change
nothing that is read (Fletcher-32 on numeric chunks, SHA-256 on text and JSON attributes)."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from cache import CacheReader, Failure, add_stage
from core.errors import InputError
from tests.conftest import REPO
from tests.synth_cache import planted_cache


def everything(path) -> dict:
    """All a user can read from a cache, through the reader."""
    reader = CacheReader(path)
    out = {"manifest": reader.manifest.to_dicts(), "failures": reader.failures, "config": reader.config}
    for stage in reader.stages:
        out[f"{stage}/provenance"] = reader.provenance(stage)
        for name in reader.dataset_shapes(stage):
            out[f"{stage}/{name}"] = reader.read(stage, name)
    return out


def _equal(a, b) -> bool:  # noqa: ANN001
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))  # undefined prosody features are NaN
    return a == b


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = planted_cache(tmp_path_factory.mktemp("damage") / "c.h5", n_per_speaker=12)
    n = len(CacheReader(path))
    add_stage(path, "state", {"fold_1": np.ones((n, 4), np.float32), "ok": np.ones(n, bool)},
              {"note": "a state"}, [Failure("u00001", "state", "/x.wav", "a reason")])
    return path


@pytest.mark.parametrize("copy", range(20))
def test_sixteen_random_bit_flips_give_an_error_or_the_same_data(original, tmp_path, copy):
    damaged = tmp_path / "damaged.h5"
    shutil.copy(original, damaged)
    data = bytearray(damaged.read_bytes())
    rng = np.random.default_rng(copy)
    for offset in rng.integers(0, len(data), 16):
        data[offset] ^= 1 << int(rng.integers(0, 8))
    damaged.write_bytes(bytes(data))
    try:
        read = everything(damaged)
    except InputError:
        return  # a clear, one-line error: the CLI prints it and exits 2
    assert same(read, everything(original))  # nothing silently different


def test_a_flip_inside_numeric_data_is_caught_by_its_chunk_checksum(original, tmp_path):
    import h5py

    with h5py.File(original) as file:
        offset = file["speech/pooled"].id.get_offset()  # may be None when chunked: use the first chunk
        offset = offset if offset is not None else file["speech/pooled"].id.get_chunk_info(0).byte_offset
    damaged = tmp_path / "damaged.h5"
    data = bytearray(original.read_bytes())
    data[offset + 100] ^= 0x10
    damaged.write_bytes(bytes(data))
    reader = CacheReader(damaged)  # the manifest and provenance are intact
    with pytest.raises(InputError, match=r"/speech/pooled: cannot be read, the file is damaged"):
        reader.read("speech", "pooled")


def test_cache_info_on_a_damaged_cache_is_one_error_line(original, tmp_path):
    damaged = tmp_path / "damaged.h5"
    data = bytearray(original.read_bytes())
    data[8:40] = bytes(32)  # the superblock after its signature: versions, sizes, addresses
    damaged.write_bytes(bytes(data))
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "cache", "info", "--cache", str(damaged)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith(f"error: {damaged}")


# --- chunk sums are checked once per file version (and per row block) in a process ---------------------------------

@pytest.fixture(scope="module")
def blocks_cache(tmp_path_factory):
    """A speech block of three row blocks of chunks (2048, 2048 and an edge of 1904 rows per hidden state)."""
    path = planted_cache(tmp_path_factory.mktemp("blocks") / "c.h5", n_per_speaker=600, dim=1024)
    import h5py

    with h5py.File(path) as file:
        assert file["speech/pooled"].chunks == (2048, 1, 1024) and len(file["speech/pooled"]) == 6000
    return path


def _flip_in_chunk(path, row: int, out) -> None:  # noqa: ANN001
    """A copy of ``path`` at ``out`` with one bit flipped inside the data of the first layer's chunk holding ``row``."""
    import h5py

    with h5py.File(path) as file:
        offset = file["speech/pooled"].id.get_chunk_info_by_coord((row - row % 2048, 0, 0)).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0x10
    out.write_bytes(bytes(data))


def test_reads_of_rows_already_checked_in_this_process_give_the_same_arrays(blocks_cache, monkeypatch):
    import cache.reader as reader_module

    reader = CacheReader(blocks_cache)
    whole = reader.read("speech", "pooled")  # HDF5's own read, every sum checked: the reference
    checked = []
    monkeypatch.setattr(reader_module, "read_numeric", lambda *a, **k: checked.append(1) or np.zeros(0))
    for lo, hi in ((0, 6000), (0, 17), (2040, 2060), (4095, 6000), (5999, 6000), (3000, 3000)):
        assert np.array_equal(reader.read("speech", "pooled", np.s_[lo:hi]), whole[lo:hi])
    assert checked == []  # none of them went through the checked read again


def test_a_damaged_row_block_is_caught_after_other_blocks_were_read_unchecked(blocks_cache, tmp_path):
    damaged = tmp_path / "damaged.h5"
    _flip_in_chunk(blocks_cache, 3000, damaged)  # the second row block
    reader = CacheReader(damaged)
    for _ in range(2):  # the first block: checked, then read from its raw chunks
        reader.read("speech", "pooled", np.s_[0:2048])
    with pytest.raises(InputError, match="/speech/pooled: cannot be read, the file is damaged"):
        reader.read("speech", "pooled", np.s_[2048:4096])  # never checked in this process: checked now
    with pytest.raises(InputError, match="/speech/pooled: cannot be read, the file is damaged"):
        reader.read("speech", "pooled")


def test_a_file_changed_after_its_check_is_checked_again(blocks_cache, tmp_path):
    copy = tmp_path / "c.h5"
    shutil.copy(blocks_cache, copy)
    reader = CacheReader(copy)
    reader.read("speech", "pooled")  # every block checked for this version of the file
    _flip_in_chunk(blocks_cache, 10, copy)  # rewritten in place: a new version (size, mtime)
    with pytest.raises(InputError, match="/speech/pooled: cannot be read, the file is damaged"):
        reader.read("speech", "pooled", np.s_[0:100])


def test_an_empty_selection_marks_no_rows_as_checked(blocks_cache, tmp_path):
    damaged = tmp_path / "damaged.h5"
    _flip_in_chunk(blocks_cache, 10, damaged)  # the first row block
    reader = CacheReader(damaged)
    assert reader.read("speech", "pooled", np.s_[100:100]).shape == (0, 3, 1024)  # reads no chunk
    with pytest.raises(InputError, match="/speech/pooled: cannot be read, the file is damaged"):
        reader.read("speech", "pooled", np.s_[0:100])


def test_a_file_rewritten_in_place_with_its_times_put_back_is_checked_again(blocks_cache, tmp_path):
    """``cp -p backup cache.h5`` rewrites the same inode and restores size and mtime: ctime still tells."""
    import os

    copy, damaged = tmp_path / "c.h5", tmp_path / "damaged.h5"
    shutil.copy(blocks_cache, copy)
    _flip_in_chunk(blocks_cache, 10, damaged)
    reader = CacheReader(copy)
    reader.read("speech", "pooled", np.s_[0:100])  # checked once
    before = os.stat(copy)
    copy.write_bytes(damaged.read_bytes())  # same inode, same size
    os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(copy).st_mtime_ns == before.st_mtime_ns and os.stat(copy).st_ino == before.st_ino
    with pytest.raises(InputError, match="/speech/pooled: cannot be read, the file is damaged"):
        reader.read("speech", "pooled", np.s_[0:100])
