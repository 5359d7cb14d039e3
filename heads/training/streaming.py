"""The speech block of a learned layer mix, read from the cache in row blocks instead of held in memory.

``--layer weighted`` trains on every hidden state: ``[N, L+1, D]``. At MSP-Podcast scale with wavlm-large that
is 270k x 25 x 1024 float16 = 14 GB on disk and 28 GB as float32, more than the machines it must run on. So a
split whose in-memory training would not fit the machine's available memory (``resident_decision``) is a
``StreamedSpeech``: its rows stay in the
cache and are read ``block_rows`` at a time, z-scored per (layer, dimension) with training-row statistics
computed in one streaming pass (float64 sums).

Batches cannot be drawn uniformly from rows that are not in memory, so an epoch visits the blocks in a random
order, ``window_blocks`` blocks at a time, and shuffles rows within each window (a shuffle buffer, as in
large-scale speech training). Memory: at most two windows of float16 rows (2 x 8 x 2048 x 51 KB = 1.7 GB at
MSP scale) plus the batch; the validation rows, read every epoch, are held in memory as float16 when they
take at most ``RESIDENT_BYTES`` (MSP-Podcast's dev partition: 1.8 GB). A run that streamed records it
(``run.json``: ``speech_streamed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from cache.reader import CacheReader
from core.machine import available_memory_bytes
from core.standardise import CLIP
from pipeline.runtime.allocator import release_free_memory

RESIDENT_BYTES = 2 << 30  # a streamed validation split up to this size (float16) is read once and kept
PEAK_PER_FLOAT32 = 5  # training a weighted mix in memory peaks at ~5x the float32 block (docs/benchmarks.md)
RESIDENT_SHARE = 0.75  # ... and is chosen when that peak fits in this share of the memory available


def resident_decision(shape: tuple[int, ...], available: int | None = None) -> tuple[bool, str]:
    """Whether a ``[N, L+1, D]`` speech block is held in memory for training (True) or streamed, and why: held when
    its in-memory peak (``PEAK_PER_FLOAT32`` x its float32 bytes) fits in ``RESIDENT_SHARE`` of ``available`` bytes
    (default: what this machine has available now)."""
    available = available_memory_bytes() if available is None else available
    peak = PEAK_PER_FLOAT32 * float32_bytes(shape)
    resident = peak <= RESIDENT_SHARE * available
    return resident, (f"speech block {tuple(shape)} {'held in memory' if resident else 'streamed from the cache'}: "
                      f"training it in memory peaks at ~{peak / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available "
                      f"(held up to {RESIDENT_SHARE:.0%} of it)")

def float32_bytes(shape: tuple[int, ...]) -> int:
    """Bytes of a speech block of ``shape`` as float32 (what holding it in memory for training takes)."""
    return int(np.prod(shape)) * 4


SPAN_ROWS = 4096  # rows read per contiguous slice (two 2048-row chunks per hidden state)


def read_rows(reader: CacheReader, rows: np.ndarray, span_rows: int = SPAN_ROWS) -> np.ndarray:
    """``[len(rows), L+1, D]`` float16 speech of sorted cache ``rows``. Read as contiguous slices of at most
    ``span_rows`` rows, keeping the wanted ones: HDF5's own selection of scattered rows (a dev partition's
    podcasts among the train ones) took 4.6 s for 2048 rows of the MSP-scale cache, spans 0.8 s
    (``benchmarks/bench_scale.py --steps probe``): each chunk is read and checksummed whole anyway."""
    out = None
    starts = np.flatnonzero(np.diff(rows // span_rows, prepend=-1))  # first wanted row of each span window
    for first, stop in zip(starts, [*starts[1:], len(rows)]):
        lo, hi = int(rows[first]), int(rows[stop - 1]) + 1
        span = reader.read("speech", "pooled", np.s_[lo:hi])
        if out is None:
            out = np.empty((len(rows), *span.shape[1:]), span.dtype)
        out[first:stop] = span[rows[first:stop] - lo]
        del span
    return out


def streamed_statistics(reader: CacheReader, rows: np.ndarray, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (layer, dimension) mean and std ``[L+1, D]`` float64 of the speech of ``rows`` (sorted), in one pass
    over blocks (float64 sums); the same floors as ``core.standardise.zscore`` (std <= 1e-8 -> 1)."""
    total = total_sq = None
    for start in range(0, len(rows), block_rows):
        x = read_rows(reader, rows[start : start + block_rows]).astype(np.float32)
        s, sq = x.sum(0, dtype=np.float64), np.square(x).sum(0, dtype=np.float64)
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
    release_free_memory()
    mean = total / len(rows)
    std = np.sqrt(np.maximum(total_sq / len(rows) - mean**2, 0.0))
    return mean, np.where(std > 1e-8, std, 1.0)


@dataclass
class StreamedSpeech:
    """The standardised ``[n, L+1, D]`` float32 speech of one split's ``rows`` (sorted cache rows), read on demand.

    ``speech[positions]`` (positions into ``rows``) returns the batch; every position must lie in the blocks of
    the current epoch's windows (``epoch_order``) or the whole split is read block by block (``blocks``).
    ``resident`` holds the split's float16 rows in memory instead (``make_resident``: validation rows, read
    every epoch)."""

    reader: CacheReader = field(repr=False)
    rows: np.ndarray  # [n] int64, sorted
    mean: np.ndarray  # [L+1, D] float64
    std: np.ndarray  # [L+1, D] float64
    block_rows: int = 2048
    window_blocks: int = 8
    device: torch.device = torch.device("cpu")
    _window_of: np.ndarray | None = field(default=None, repr=False)  # block -> window (this epoch)
    _loaded: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # block -> [<=block_rows, L+1, D] f16
    resident: np.ndarray | None = field(default=None, repr=False)  # [n, L+1, D] float16, or None: read on demand

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.rows), *self.mean.shape)

    def dim(self) -> int:
        return 3

    def to(self, device: torch.device) -> "StreamedSpeech":
        return replace(self, device=device, _loaded={})

    @property
    def num_blocks(self) -> int:
        return -(-len(self.rows) // self.block_rows)

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """``[n]`` positions: blocks in random order, ``window_blocks`` at a time, rows shuffled in each window."""
        blocks = torch.randperm(self.num_blocks, generator=generator).numpy()
        windows = [blocks[i : i + self.window_blocks] for i in range(0, len(blocks), self.window_blocks)]
        self._window_of = np.empty(self.num_blocks, np.int64)
        order = []
        for w, window in enumerate(windows):
            self._window_of[window] = w
            positions = np.concatenate([np.arange(b * self.block_rows, min((b + 1) * self.block_rows, len(self.rows)))
                                        for b in window])
            order.append(positions[torch.randperm(len(positions), generator=generator).numpy()])
        return torch.from_numpy(np.concatenate(order))

    def __getitem__(self, positions: torch.Tensor) -> torch.Tensor:
        positions = positions.cpu().numpy()
        blocks = positions // self.block_rows
        needed = set(np.unique(blocks).tolist())
        if not needed <= set(self._loaded):
            windows = set(self._window_of[list(needed)].tolist()) if self._window_of is not None else set()
            wanted = {b for b in range(self.num_blocks) if self._window_of is not None and self._window_of[b] in windows}
            wanted |= needed
            for b in set(self._loaded) - wanted:  # free the old window before reading the next
                del self._loaded[b]
            release_free_memory()  # or the freed window stays resident (pipeline.runtime.allocator)
            for b in sorted(wanted - set(self._loaded)):
                self._loaded[b] = self._read_block(b)
        rows = np.stack([self._loaded[b][p - b * self.block_rows] for b, p in zip(blocks, positions)])
        return self._standardise(rows)

    def blocks(self):  # noqa: ANN201 - Iterator[tuple[np.ndarray, torch.Tensor]]
        """``(positions, standardised speech)`` of every block in order (for prediction; nothing kept)."""
        for b in range(self.num_blocks):
            start = b * self.block_rows
            yield np.arange(start, min(start + self.block_rows, len(self.rows))), self._standardise(self._read_block(b))
            release_free_memory()  # 200 MB float32 blocks one after another fragment the heap otherwise

    def make_resident(self) -> "StreamedSpeech":
        """The same split with its rows read once into memory (float16): for a split read every epoch."""
        resident = np.empty(self.shape, np.float16)  # filled block by block: one copy in memory, not two
        for b in range(self.num_blocks):
            resident[b * self.block_rows : (b + 1) * self.block_rows] = self._read_block(b)
        release_free_memory()
        return replace(self, resident=resident, _loaded={})

    def _read_block(self, block: int) -> np.ndarray:
        if self.resident is not None:
            return self.resident[block * self.block_rows : (block + 1) * self.block_rows]
        return read_rows(self.reader, self.rows[block * self.block_rows : (block + 1) * self.block_rows])

    def _standardise(self, rows: np.ndarray) -> torch.Tensor:
        """As ``core.standardise.standardise`` then NaN -> 0 (the training mean), float32, on ``self.device``."""
        x = torch.from_numpy(rows).to(self.device, torch.float32)  # the one new tensor; the rest is in place
        mean, std = (torch.from_numpy(v.astype(np.float32)).to(self.device) for v in (self.mean, self.std))
        return x.sub_(mean).div_(std).clamp_(-CLIP, CLIP).nan_to_num_(nan=0.0)
