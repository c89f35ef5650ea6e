"""Kedro datasets that kedro-datasets does not provide."""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import mmap
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
from kedro.io.core import (
    AbstractDataset,
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)


class NumpyDataset(AbstractVersionedDataset[np.ndarray, np.ndarray]):
    """A NumPy array stored as a ``.npy`` file on any fsspec filesystem.

    Local files are memory-mapped on load (``mmap_mode: r`` by default), so a
    large image array is paged in as it is read instead of being copied into
    RAM up front. Remote files are read into memory.

    For arrays that fit in memory; the image splits use ``ShardedArrayDataset``. Example::

        embeddings:
          type: face_pipeline.datasets.NumpyDataset
          filepath: data/07_model_output/embeddings.npy
    """

    def __init__(
        self,
        *,
        filepath: str,
        mmap_mode: str | None = "r",
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        fs_args = deepcopy(fs_args) or {}
        if protocol == "file":
            fs_args.setdefault("auto_mkdir", True)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **fs_args)
        self._mmap_mode = mmap_mode
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "mmap_mode": self._mmap_mode}

    def load(self) -> np.ndarray:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        if self._protocol == "file" and self._mmap_mode:
            return np.load(load_path, mmap_mode=self._mmap_mode, allow_pickle=False)
        with self._fs.open(load_path, mode="rb") as stream:
            return np.load(stream, allow_pickle=False)

    def save(self, data: np.ndarray) -> None:
        if not isinstance(data, np.ndarray):
            raise DatasetError(f"NumpyDataset saves numpy arrays, got {type(data).__name__}")
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        with written_atomically(self._fs, save_path) as partial, self._fs.open(partial, mode="wb") as stream:
            np.save(stream, data, allow_pickle=False)
        self._fs.invalidate_cache(save_path)

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(load_path)


def partial_name(path: str) -> str:
    """Where ``path`` is written before it is complete: a name no dataset loads (Kedro's versioned
    loads look for the exact file name), one per process so that two runs never share one."""
    return f"{path}.partial-{os.getpid()}"


@contextlib.contextmanager
def written_atomically(fs: fsspec.AbstractFileSystem, path: str):
    """Yield a temporary name to write ``path`` under; renamed to ``path`` only once it is complete.

    A run killed or failing mid-write (full disk) leaves no file at ``path``, or the previous
    complete one: a half-written output is never taken for a finished one (``--only-missing-outputs``,
    a later pipeline loading it). On a local disk the rename is atomic.
    """
    partial = partial_name(path)
    remove_stale_partials(fs, path)
    try:
        yield partial
        fs.mv(partial, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            fs.rm(partial)
        if isinstance(exc, OSError) and exc.errno in WRITE_ADVICE:
            raise OSError(exc.errno, f"{exc.strerror}: {path} was not written; {WRITE_ADVICE[exc.errno]}") from exc
        raise


def remove_stale_partials(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete what killed runs left half-written at ``path`` (their process is gone; local disks only:
    a process id means nothing on another machine)."""
    if "file" not in fs.protocol:
        return
    for stale in fs.glob(f"{path}.partial-*"):
        pid = stale.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                fs.rm(stale)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# What to do about the write errors a user can fix.
WRITE_ADVICE = {
    errno.ENOSPC: "free space on that disk or move the data folder to a larger one, then run again",
    errno.EDQUOT: "free space within your quota or move the data folder, then run again",
    errno.EROFS: "the folder is on a read-only file system: make it writable or move the data folder",
    errno.EACCES: "make the folder writable for this user or move the data folder",
    errno.EPERM: "make the folder writable for this user or move the data folder",
}


INDEX_FILE = "index.json"
SHARD_NAME = "shard-{:05d}.npy"


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


class ShardedArrayDataset(AbstractDataset[Iterable[np.ndarray] | np.ndarray, ShardedArray]):
    """An array stored as a folder of ``.npy`` shards and an index, on any fsspec filesystem.

    ``save`` takes an ``np.ndarray`` (cut into shards of ``shard_rows``) or any iterable of
    arrays, e.g. an ``ArrayStream`` or a generator: each array becomes one shard, written as it
    arrives, so the whole array is never in memory. Each shard is written under a temporary
    name and renamed; ``index.json`` (shard files, row counts, shape, dtype, attrs) comes last,
    and the old index is removed first: a folder without an index is an unfinished save.

    ``load`` returns a ``ShardedArray``: local shards memory-mapped, remote ones read into
    memory one shard at a time as they are first used.

    Example::

        train_images:
          type: face_pipeline.datasets.ShardedArrayDataset
          filepath: data/05_model_input/train_images
    """

    def __init__(
        self,
        *,
        filepath: str,
        shard_rows: int = 4096,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **deepcopy(fs_args or {}))
        self._path = get_filepath_str(PurePosixPath(path), protocol)
        self._shard_rows = max(1, int(shard_rows))
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._path, "protocol": self._protocol, "shard_rows": self._shard_rows}

    def _file(self, name: str) -> str:
        return f"{self._path.rstrip('/')}/{name}"

    def _exists(self) -> bool:
        return self._fs.exists(self._file(INDEX_FILE))

    def save(self, data: Iterable[np.ndarray] | np.ndarray) -> None:
        if isinstance(data, np.ndarray):
            data = [data[start : start + self._shard_rows] for start in range(0, len(data), self._shard_rows)] or [data]
        if self._fs.exists(self._path):
            self._fs.rm(self._path, recursive=True)
        self._fs.mkdirs(self._path, exist_ok=True)
        shards: list[dict[str, Any]] = []
        row_shape, dtype = None, None
        for item in data:
            chunk = np.asarray(item)
            if row_shape is None:
                row_shape, dtype = chunk.shape[1:], chunk.dtype
            elif (chunk.shape[1:], chunk.dtype) != (row_shape, dtype):
                raise DatasetError(
                    f"{self._path}: chunk of shape {chunk.shape} {chunk.dtype} after rows of {row_shape} {dtype}"
                )
            if len(chunk):
                shards.append({"file": SHARD_NAME.format(len(shards)), "rows": len(chunk)})
                self._write_then_rename(shards[-1]["file"], partial(np.save, arr=chunk, allow_pickle=False))
        if row_shape is None:
            raise DatasetError(f"{self._path}: nothing to save (no chunk, not even an empty one)")
        index = {
            "shape": [sum(shard["rows"] for shard in shards), *row_shape],
            "dtype": dtype.str,
            "shards": shards,
            "attrs": getattr(data, "attrs", {}),
        }
        self._write_then_rename(INDEX_FILE, lambda stream: stream.write(json.dumps(index, indent=1).encode()))
        self._fs.invalidate_cache(self._path)

    def _write_then_rename(self, name: str, write: Callable[[Any], Any]) -> None:
        partial_name = self._file(f".{name}.partial")
        with self._fs.open(partial_name, mode="wb") as stream:
            write(stream)
        self._fs.mv(partial_name, self._file(name))

    def load(self) -> ShardedArray:
        try:
            with self._fs.open(self._file(INDEX_FILE), "rb") as stream:
                index = json.loads(stream.read())
        except FileNotFoundError:
            raise DatasetError(
                f"{self._path} has no {INDEX_FILE}: it was not written, or its writing did not finish; "
                "run the pipeline that writes it again"
            ) from None
        row_shape, dtype = tuple(index["shape"][1:]), np.dtype(index["dtype"])
        loaders = [
            partial(self._load_shard, shard["file"], (shard["rows"], *row_shape), dtype) for shard in index["shards"]
        ]
        # Local shards are mapped now, so a missing or truncated one is refused at load time.
        shards = [load() for load in loaders] if self._protocol == "file" else loaders
        rows = [shard["rows"] for shard in index["shards"]]
        return ShardedArray(shards, rows, row_shape, dtype, index.get("attrs"))

    def _load_shard(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        path = self._file(name)
        try:
            if self._protocol == "file":
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            else:
                with self._fs.open(path, mode="rb") as stream:
                    array = np.load(io.BytesIO(stream.read()), allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise DatasetError(f"{path}: unreadable shard ({reason}); write the array again") from exc
        if array.shape != shape or array.dtype != dtype:
            raise DatasetError(
                f"{path}: shard of {array.shape} {array.dtype} where the index says {shape} {dtype}; "
                "write the array again"
            )
        return array


def _read(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    with fs.open(path, "rb") as stream:
        return stream.read()


def outside_folder(folder: str, path: str) -> bool:
    """Whether the local ``path`` leads (through links) to somewhere outside ``folder``. Remote
    locations (fsspec URLs) have no links and are never outside."""
    if "://" in str(folder):
        return False
    root = os.path.realpath(folder)
    return os.path.commonpath([root, os.path.realpath(path)]) != root


def _refuse_outside(path: str, folder: str) -> bytes:
    from face_pipeline.images import ImageRejected  # noqa: PLC0415 - keep this module light

    raise ImageRejected("outside the folder", f"{path} links to a file outside {folder}; not read")


class ImageFilesDataset(AbstractDataset[None, dict[str, Callable[[], bytes]]]):
    """Photos to predict on: a folder (searched recursively), one file, or a list of either.

    ``paths`` is a path or fsspec URL, a string of several separated by ``;`` or ``,`` (``;`` on
    the command line: Kedro's ``--params`` splits at commas), or a list. Loads as
    ``{location: loader}`` like ``PartitionedDataset``; each loader returns the file's bytes.
    Read-only.
    """

    def __init__(self, *, paths: str | list[str], metadata: dict[str, Any] | None = None) -> None:
        if isinstance(paths, str):
            paths = paths.replace(";", ",").split(",")
        self._paths = [str(p).strip() for p in paths if str(p).strip()]
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"paths": self._paths}

    def load(self) -> dict[str, Callable[[], bytes]]:
        from face_pipeline.images import is_image_file  # noqa: PLC0415 - keep this module light

        files: dict[str, Callable[[], bytes]] = {}
        for location in self._paths:
            fs, path = fsspec.core.url_to_fs(location)
            if fs.isdir(path):
                found = sorted(p for p in fs.find(path) if is_image_file(p))
            elif fs.exists(path):
                found = [path]
            else:
                raise DatasetError(f"No such file or folder: {location}")
            for item in found:
                # A folder's links may lead anywhere: only what is inside the folder is read.
                escapes = item != path and outside_folder(path, item)
                read = (
                    functools.partial(_refuse_outside, item, location)
                    if escapes
                    else functools.partial(_read, fs, item)
                )
                files[fs.unstrip_protocol(item) if "://" in location else item] = read
        return files

    def save(self, data: None) -> None:
        raise DatasetError("ImageFilesDataset is read-only")


class KerasModelDataset(AbstractDataset[None, Any]):
    """A trained Keras model from a ``.keras`` file, a Kedro versioned folder (its latest
    version) or an MLflow model URI (``runs:/<run>/gender_model``, ``models:/face_gender/1``).
    Read-only: training saves models through ``tensorflow.TensorFlowModelDataset``.
    """

    def __init__(self, *, source: str, metadata: dict[str, Any] | None = None) -> None:
        self._source = str(source)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"source": self._source}

    def load(self) -> Any:
        from face_pipeline.predict import load_keras_model  # noqa: PLC0415 - TensorFlow only when needed

        return load_keras_model(self._source)

    def save(self, data: Any) -> None:
        raise DatasetError("KerasModelDataset is read-only")


class MlflowParamsDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A dict saved as a JSON file and, in an active MLflow run, logged as that run's params.

    For what a node decides at run time (the epochs a time budget planned, the precision
    ``auto`` resolved to): params sit beside the configured ones in the MLflow UI, so two runs
    with equal parameters that trained different networks tell apart. Keys become
    ``<prefix>.<key>``; values longer than MLflow's limit are cut.

    Example::

        "{task}.training_decisions":
          type: face_pipeline.datasets.MlflowParamsDataset
          filepath: data/08_reporting/{task}_training_decisions.json
          prefix: "{task}.decided"
    """

    def __init__(self, *, filepath: str, prefix: str = "", metadata: dict[str, Any] | None = None) -> None:
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol)
        self._filepath = PurePosixPath(path)
        self._prefix = prefix
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "prefix": self._prefix}

    def _path(self) -> str:
        return get_filepath_str(self._filepath, self._protocol)

    def load(self) -> dict[str, Any]:
        with self._fs.open(self._path(), "r") as file:
            return json.load(file)

    def save(self, data: dict[str, Any]) -> None:
        import mlflow  # noqa: PLC0415 - only where a run logs

        path = self._path()
        self._fs.mkdirs(str(PurePosixPath(path).parent), exist_ok=True)
        with self._fs.open(path, "w") as file:
            json.dump(data, file, indent=2, default=str)
        if mlflow.active_run() is not None:
            prefix = f"{self._prefix}." if self._prefix else ""
            mlflow.log_params({f"{prefix}{key}": str(value)[:6000] for key, value in data.items()})

    def _exists(self) -> bool:
        return self._fs.exists(self._path())
