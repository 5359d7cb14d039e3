"""Checksums that turn a damaged cache into a clear error instead of silently different data.

* numeric datasets are written with HDF5's Fletcher-32 filter: every chunk is checked when it is read; their
  type, shape and chunking carry a digest too (a flipped bit in a datatype would otherwise reinterpret intact
  bytes), and every chunk must be present where it belongs (a damaged chunk index would otherwise read as
  fill values);
* text is stored as UTF-8 bytes in a numeric dataset (``<name>`` [bytes] uint8 and ``<name>.offsets``
  [N + 1] int64), so the same checks cover it. HDF5's variable-length strings are not used: a damaged
  reference into their heap can make the HDF5 library loop for ever;
* attributes are fixed-length byte strings with a SHA-256 digest beside each JSON one;
* every group records the names of its members and attributes (a renamed or lost one is detected).

Caches of schema 1 have none of this and are read unchecked.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable

import h5py
import numpy as np

from core.errors import InputError

DIGEST_ATTR = "sha256"
OFFSETS_SUFFIX = ".offsets"
MEMBERS_ATTR = "members"
_CHUNK_BYTES = 4 << 20  # ~4 MiB row chunks: large sequential reads, small enough to slice a fold


class DamagedCache(InputError):
    """A dataset or attribute of the cache failed its checksum or could not be decoded."""


def text_digest(values: Iterable[str]) -> str:
    return hashlib.sha256(json.dumps(list(values), ensure_ascii=False).encode()).hexdigest()


def set_text_attr(obj: h5py.HLObject, key: str, text: str) -> None:
    """A string attribute stored inline as fixed-length UTF-8 bytes (no variable-length heap)."""
    obj.attrs[key] = np.bytes_(text.encode())


def get_text_attr(obj: h5py.HLObject, key: str, default: str | None = None) -> str | None:
    value = obj.attrs.get(key, default)
    return value.decode() if isinstance(value, bytes | np.bytes_) else value


def write_numeric(group: h5py.Group, name: str, array: np.ndarray) -> h5py.Dataset:
    """``array`` (rows first) chunked along rows, with Fletcher-32 chunk checksums and a sealed layout
    (``create_numeric``)."""
    dataset = create_numeric(group, name, array.shape, array.dtype)
    if array.size:
        dataset[...] = array
    return dataset


def create_numeric(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: np.dtype) -> h5py.Dataset:
    """An empty dataset of ``shape`` to be written in blocks of rows (``dataset[a:b] = rows``), chunked along rows
    with Fletcher-32 chunk checksums, its layout sealed. A 3-D block ``[N, L, D]`` (the speech block's hidden states)
    is chunked per hidden state as well, ``(rows, 1, D)``: a head that uses one layer reads 1/L of the block (0.55 of
    14 GB at MSP-Podcast scale), while a block of rows with every layer is still L neighbouring chunks."""
    dtype = np.dtype(dtype)
    if not shape[0]:  # no rows: nothing to chunk
        dataset = group.create_dataset(name, shape=shape, dtype=dtype)
    else:
        dataset = group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunk_shape(shape, dtype),
                                       fletcher32=True)
    set_text_attr(dataset, DIGEST_ATTR, _layout(dataset))
    return dataset


def chunk_shape(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """The chunks ``create_numeric`` gives a dataset of ``shape`` (with rows): ~4 MiB of rows, per hidden state for a
    3-D block."""
    inner = (1, *shape[2:]) if len(shape) == 3 else tuple(shape[1:])
    row_bytes = max(1, int(np.prod(inner)) * np.dtype(dtype).itemsize)
    return int(max(1, min(shape[0], _CHUNK_BYTES // row_bytes))), *inner


def rows_per_chunk(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Rows in each chunk of a dataset of ``shape`` written by ``create_numeric``: blocks of rows aligned to it never
    write a chunk twice."""
    return chunk_shape(shape, dtype)[0]


def write_text(group: h5py.Group, name: str, values: Iterable[str]) -> None:
    """A text dataset: the UTF-8 bytes of ``values`` concatenated, and where each value starts and ends."""
    encoded = [str(v).encode() for v in values]
    write_numeric(group, name, np.frombuffer(b"".join(encoded), dtype=np.uint8))
    write_numeric(group, f"{name}{OFFSETS_SUFFIX}", np.cumsum([0, *map(len, encoded)], dtype=np.int64))


def is_text(group: h5py.Group, name: str) -> bool:
    return f"{name}{OFFSETS_SUFFIX}" in group or group[name].dtype.kind == "O"


def read_text(group: h5py.Group, name: str, where: str) -> np.ndarray:
    """``[N]`` str of a text dataset (schema 1: a variable-length string dataset, read unchecked)."""
    dataset = group[name]
    try:
        if dataset.dtype.kind == "O":
            return dataset.asstr()[()]
        data = read_numeric(dataset, where).tobytes()
        offsets = read_numeric(group[f"{name}{OFFSETS_SUFFIX}"], f"{where}{OFFSETS_SUFFIX}")
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(data) or (np.diff(offsets) < 0).any():
            raise DamagedCache(f"{where}: text offsets do not fit the text (the file is damaged)")
        return np.array([data[a:b].decode() for a, b in zip(offsets[:-1], offsets[1:])], dtype=object)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DamagedCache(f"{where}: text cannot be decoded ({err})") from None


def _layout(dataset: h5py.Dataset) -> str:
    return text_digest([dataset.dtype.str, json.dumps(list(dataset.shape)), json.dumps(dataset.chunks)])


def read_numeric(dataset: h5py.Dataset, where: str, index: tuple | slice = (), check_layout: bool = True
                 ) -> np.ndarray:
    """``dataset[index]`` after checking its type, shape and chunking against their digest (when it has one)
    and that every chunk is there (``check_layout``: a caller that checked this file's dataset before may skip
    it); HDF5 checks each chunk's Fletcher-32 sum as it reads it."""
    stored = get_text_attr(dataset, DIGEST_ATTR)
    if stored is not None and check_layout:
        if _layout(dataset) != stored:
            raise DamagedCache(f"{where}: type or shape fails its checksum (the file is damaged)")
        if dataset.chunks and _chunk_starts(dataset) != _stored_chunk_starts(dataset):
            raise DamagedCache(f"{where}: its data chunks are not where they belong (the file is damaged)")
        if dataset.chunks:
            try:  # the read path's own lookup of the first chunk: a damaged layout can hide it (fill values)
                dataset.id.read_direct_chunk((0,) * dataset.ndim)
            except (RuntimeError, OSError, ValueError) as err:
                raise DamagedCache(f"{where}: its first data chunk cannot be found ({err})") from None
    return dataset[index]


def summed_chunks_only(dataset: h5py.Dataset) -> bool:
    """Whether ``dataset`` is stored as plain chunks with a Fletcher-32 sum and no other filter (what
    ``write_numeric`` writes), so that ``read_rows_unchecked`` can assemble it from its raw chunks."""
    return bool(dataset.chunks) and dataset.fletcher32 and dataset.compression is None and not dataset.shuffle \
        and dataset.scaleoffset is None and dataset.ndim >= 1


def read_rows_unchecked(dataset: h5py.Dataset, start: int, stop: int, where: str = "") -> np.ndarray:
    """``dataset[start:stop]`` assembled from its raw chunks (``read_direct_chunk``) without checking their
    Fletcher-32 sums again: for rows whose chunks this process has already read with the checks, from the same
    file version (``cache.reader.CacheReader.read``). Each raw chunk must still be a whole chunk of this layout
    (data plus the 4-byte sum, every filter applied), or this raises ``DamagedCache``."""
    chunks, shape = dataset.chunks, dataset.shape
    out = np.empty((stop - start, *shape[1:]), dataset.dtype)
    if stop <= start:
        return out
    size = int(np.prod(chunks))
    buffer = np.empty(size * dataset.dtype.itemsize + 4, np.uint8)  # 4: the Fletcher-32 sum after the data
    block = buffer[:-4].view(dataset.dtype).reshape(chunks)
    grid = [range(0, n, c) for n, c in zip(shape[1:], chunks[1:])]
    for row in range(start - start % chunks[0], stop, chunks[0]):
        for inner in itertools.product(*grid):
            mask, raw = dataset.id.read_direct_chunk((row, *inner), out=buffer)  # refused when larger than a chunk
            if mask != 0 or len(raw) != len(buffer):
                raise DamagedCache(f"{where or dataset.name}: chunk at {(row, *inner)} is not a whole chunk of its "
                                   "layout (the file is damaged)")
            lo, hi = max(row, start), min(row + chunks[0], stop)
            ends = [min(o + c, n) for o, c, n in zip(inner, chunks[1:], shape[1:])]  # edge chunks are stored whole
            inside = tuple(slice(0, e - o) for o, e in zip(inner, ends))
            out[(slice(lo - start, hi - start), *(slice(o, e) for o, e in zip(inner, ends)))] = \
                block[(slice(lo - row, hi - row), *inside)]
    return out


def _chunk_starts(dataset: h5py.Dataset) -> set[tuple[int, ...]]:
    """Where every chunk of a fully written dataset starts."""
    grid = [range(0, n, c) for n, c in zip(dataset.shape, dataset.chunks)]
    return set(itertools.product(*grid))


def _stored_chunk_starts(dataset: h5py.Dataset) -> set[tuple[int, ...]] | None:
    """Where the chunk index says the stored chunks start (a damaged index reads as fill values otherwise); None when
    an entry says a filter was skipped for its chunk (HDF5 would then read it without checking its sum)."""
    infos = [dataset.id.get_chunk_info(i) for i in range(dataset.id.get_num_chunks())]
    if any(info.filter_mask != 0 for info in infos):
        return None
    return {tuple(info.chunk_offset) for info in infos}


def write_json_attr(obj: h5py.HLObject, key: str, value: object) -> None:
    """``obj.attrs[key]`` = JSON text, with its digest in ``obj.attrs[key + ".sha256"]``."""
    text = json.dumps(value, sort_keys=True, default=str)
    set_text_attr(obj, key, text)
    set_text_attr(obj, f"{key}.{DIGEST_ATTR}", text_digest([text]))


def read_json_attr(obj: h5py.HLObject, key: str, where: str, default: str = "{}") -> object:
    """The JSON value of ``obj.attrs[key]``, checked against its digest (when it has one)."""
    try:
        if f"{key}.{DIGEST_ATTR}" in obj.attrs and key not in obj.attrs:
            raise DamagedCache(f"{where}: attribute '{key}' is missing (the file is damaged)")
        text = get_text_attr(obj, key, default)
        stored = get_text_attr(obj, f"{key}.{DIGEST_ATTR}")
        if stored is not None and text_digest([text]) != stored:
            raise DamagedCache(f"{where}: attribute '{key}' fails its checksum (the file is damaged)")
        return json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        raise DamagedCache(f"{where}: attribute '{key}' cannot be decoded ({err})") from None


_MEMBER_KEYS = (MEMBERS_ATTR, f"{MEMBERS_ATTR}.{DIGEST_ATTR}")


def seal_members(group: h5py.Group) -> None:
    """Record the names of a group's members and attributes."""
    names = {"members": sorted(group), "attributes": sorted(k for k in group.attrs if k not in _MEMBER_KEYS)}
    write_json_attr(group, MEMBERS_ATTR, names)


def check_members(group: h5py.Group, where: str) -> None:
    """Raise ``DamagedCache`` when the group's members or attributes differ from the sealed names."""
    if not any(k in group.attrs for k in _MEMBER_KEYS):
        return  # schema 1: not sealed
    names = read_json_attr(group, MEMBERS_ATTR, where)
    found = {"members": sorted(group), "attributes": sorted(k for k in group.attrs if k not in _MEMBER_KEYS)}
    if names != found:
        raise DamagedCache(f"{where}: members or attributes differ from those written (the file is damaged)")
