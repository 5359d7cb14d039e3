"""Where reading the speech block from the cache goes: the cache reader against the same bytes from a raw .npy, and
two HDF5 reads that isolate the costs (issue 35, item 6: the load ratio).

    .venv/bin/python benchmarks/bench_cache_read.py [--utterances 10039] [--rounds 5] [--out /tmp/bench_cache_read]

The synthetic IEMOCAP-scale cache of ``benchmarks/bench_heads.py`` (speech ``[N, 25, 1024]`` float16, chunks of
``(rows, 1, D)`` with Fletcher-32). Alternated in each round, best of the rounds, all in this process:

* ``reader, first read``: a new ``CacheReader`` reads ``("speech", "pooled")``: the layout and every chunk's
  Fletcher-32 sum checked (what a process does the first time it reads a file version);
* ``reader, again``: the same reader again: rows whose chunks it has checked in this process, from the same file
  version, are assembled from the raw chunks without checking the sums again (``cache.reader.CacheReader.read``);
* ``hdf5, no checksum check``: the same HDF5 read with Fletcher-32 checking switched off on the transfer
  (``H5Pset_edc_check``, called through ctypes: h5py does not expose it) - the cost of the checksums;
* ``hdf5 without fletcher32``: the same chunks written without the filter - the cost of the filter's bytes too;
* ``contiguous``: the block written unchunked - the cost of assembling ``(rows, 1, D)`` chunks into ``[N, L, D]``;
* ``npy``: ``np.load`` of the same array.
One layer (``--layer last``, what ``train-heads`` reads by default) is timed for the reader and the npy file too.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_heads import build_cache  # noqa: E402
from cache import CacheReader  # noqa: E402


def hdf5_library() -> ctypes.CDLL:
    """The HDF5 library h5py was built with (its wheel bundles one)."""
    found = [p for p in glob.glob(os.path.join(os.path.dirname(h5py.__file__), "..", "h5py.libs", "libhdf5-*.so*"))
             if "_hl" not in p and "hl-" not in p]
    if not found:
        raise SystemExit("h5py's bundled libhdf5 was not found; this benchmark needs it for H5Pset_edc_check")
    return ctypes.CDLL(found[0])


def read_without_checksum_check(path: Path, name: str, library: ctypes.CDLL) -> np.ndarray:
    with h5py.File(path, "r") as file:
        dataset = file[name]
        out = np.empty(dataset.shape, dataset.dtype)
        transfer = h5py.h5p.create(h5py.h5p.DATASET_XFER)
        if library.H5Pset_edc_check(ctypes.c_int64(transfer.id), ctypes.c_int(0)) < 0:  # 0 = H5Z_DISABLE_EDC
            raise SystemExit("H5Pset_edc_check failed")
        dataset.id.read(h5py.h5s.ALL, h5py.h5s.ALL, out, dxpl=transfer)
        return out


def read_dataset(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as file:
        return file[name][()]


def timed(fn) -> float:  # noqa: ANN001
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=10039)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_cache_read"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "bench.h5"
    if not cache.exists():
        build_cache(cache, args.utterances)
    raw = cache.with_suffix(".raw_speech.npy")
    speech = np.load(raw)
    with h5py.File(cache, "r") as file:
        chunks = file["speech/pooled"].chunks
    plain, contiguous = args.out / "no_fletcher.h5", args.out / "contiguous.h5"
    for path, options in ((plain, {"chunks": chunks}), (contiguous, {})):
        if not path.exists():
            with h5py.File(path, "w") as file:
                file.create_dataset("x", data=speech, **options)
    library = hdf5_library()
    reader = CacheReader(cache)
    reader.read("speech", "pooled")  # checked once: later reads of this reader take the unchecked path
    assert np.array_equal(read_without_checksum_check(cache, "speech/pooled", library), speech)
    cases = {
        "reader, first read": lambda: CacheReader(cache).read("speech", "pooled"),
        "reader, again": lambda: reader.read("speech", "pooled"),
        "hdf5, no checksum check": lambda: read_without_checksum_check(cache, "speech/pooled", library),
        "hdf5 without fletcher32": lambda: read_dataset(plain, "x"),
        "contiguous": lambda: read_dataset(contiguous, "x"),
        "npy": lambda: np.load(raw),
        "reader, one layer": lambda: CacheReader(cache).read("speech", "pooled", np.s_[:, -1:]),
        "npy, one layer (mmap)": lambda: np.array(np.load(raw, mmap_mode="r")[:, -1:]),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            times[name].append(timed(fn))
    best = {name: min(values) for name, values in times.items()}
    print(f"speech block {speech.shape} {speech.dtype} ({speech.nbytes / 1e6:.0f} MB), chunks {chunks}; best of "
          f"{args.rounds} alternated rounds")
    for name, seconds in best.items():
        reference = best["npy, one layer (mmap)"] if "one layer" in name else best["npy"]
        print(f"  {name:28s} {seconds:6.3f} s   npy/this = {reference / seconds:.2f}")
    assert np.array_equal(reader.read("speech", "pooled"), speech)  # the unchecked path reads the same values


if __name__ == "__main__":
    main()
