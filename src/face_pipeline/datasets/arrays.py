"""Arrays larger than memory: a split stored as shards, read back like one (memory-mapped) array."""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Rows per saved shard: what one shard holds in memory while it is written (64 MB of 128 px faces).
SHARD_ROWS = 4096


@dataclass
class ArrayStream:
    """Chunks of one array to save with ``ShardedArrayDataset``, produced as they are iterated.

    ``attrs`` is saved in the index once every chunk is written, so a producer can record there
    what it learnt on the way (e.g. the rows it left out).
    """

    chunks: Iterable[np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.chunks)


def _release_pages(array: np.ndarray) -> None:
    """Drop a memory-mapped shard's pages from this process (they stay in the page cache).

    Without it every page a gather touched stays counted in the resident set, so an epoch over
    memory-mapped shards would grow it to the whole split's size.
    """
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


class ShardedArray:
    """Several arrays of the same row shape read as one, without copying them together.

    Indexing follows NumPy for what the project uses: an int gives a row, a slice gives a
    ``ShardedArray`` view (no data read), an integer or boolean index array gives a new
    ``np.ndarray`` gathered shard by shard; ``np.asarray`` copies the whole array.
    Shards are arrays (e.g. memory-mapped) or functions returning one, called on first use.
    """

    def __init__(
        self,
        shards: Sequence[np.ndarray | Callable[[], np.ndarray]],
        rows: Sequence[int],
        row_shape: tuple[int, ...],
        dtype: np.dtype | str,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        if len(shards) != len(rows):
            raise ValueError(f"{len(shards)} shards but {len(rows)} row counts")
        self._shards = list(shards)
        self._rows = [int(count) for count in rows]
        self._starts = np.concatenate([[0], np.cumsum(self._rows, dtype=np.int64)])
        self.dtype = np.dtype(dtype)
        self.shape = (int(self._starts[-1]), *row_shape)
        self.attrs = dict(attrs or {})

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def shard_count(self) -> int:
        return len(self._shards)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedArray(shape={self.shape}, dtype={self.dtype}, shards={len(self._shards)})"

    def shard(self, number: int) -> np.ndarray:
        """Shard ``number`` as an array (loaded now if it is loaded lazily)."""
        shard = self._shards[number]
        if callable(shard):
            shard = self._shards[number] = shard()
        return shard

    def __iter__(self) -> Iterator[np.ndarray]:
        for number in range(len(self._shards)):
            yield from self.shard(number)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self._gather(np.arange(len(self)))
        return array if dtype is None else array.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> Any:
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if rows is Ellipsis or rows is None:  # e.g. images[..., 0]: every row
            return np.asarray(self)[key]
        if isinstance(rows, (int, np.integer)):
            result = self._row(int(rows))
        elif isinstance(rows, slice) and rows.step in (None, 1):
            view = self._view(*rows.indices(len(self))[:2])
            return view[(slice(None), *rest)] if rest else view
        elif isinstance(rows, slice):
            result = self._gather(np.arange(*rows.indices(len(self))))
        else:
            result = self._gather(np.asarray(rows))
        prefix = (slice(None),) if result.ndim == self.ndim else ()
        return result[(*prefix, *rest)] if rest else result

    def _row(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of bounds for axis 0 with size {len(self)}")
        index %= len(self)
        number = int(np.searchsorted(self._starts, index, side="right")) - 1
        return np.array(self.shard(number)[index - self._starts[number]])

    def _view(self, start: int, stop: int) -> ShardedArray:
        """Rows ``start:stop`` as a ``ShardedArray`` over slices of the shards (nothing read)."""
        stop = max(start, stop)
        shards, rows = [], []
        for number in range(len(self._shards)):
            low, high = max(start, self._starts[number]), min(stop, self._starts[number + 1])
            if low < high:
                offset = int(self._starts[number])
                shards.append(self.shard(number)[low - offset : high - offset])
                rows.append(int(high - low))
        return ShardedArray(shards, rows, self.shape[1:], self.dtype, self.attrs)

    def _gather(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` (in that order) copied out of the shards, one shard at a time."""
        if indices.dtype == bool:
            if indices.shape != (len(self),):
                raise IndexError(f"boolean index of shape {indices.shape} for {len(self)} rows")
            indices = np.flatnonzero(indices)
        if indices.size and not np.issubdtype(indices.dtype, np.integer):
            raise IndexError(f"arrays used as indices must be of integer type, not {indices.dtype}")
        indices = indices.astype(np.int64, copy=False).reshape(-1)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"index out of bounds for axis 0 with size {len(self)}")
        indices = indices % max(len(self), 1)
        order = np.argsort(indices, kind="stable")
        ordered = indices[order]
        out = np.empty((len(indices), *self.shape[1:]), dtype=self.dtype)
        bounds = np.searchsorted(ordered, self._starts)
        for number in range(len(self._shards)):
            low, high = bounds[number], bounds[number + 1]
            if low == high:
                continue
            shard = self.shard(number)
            out[order[low:high]] = shard[ordered[low:high] - self._starts[number]]
            _release_pages(shard)
        return out
