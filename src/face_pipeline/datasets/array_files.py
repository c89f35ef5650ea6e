"""Kedro datasets of arrays: one ``.npy`` file (versioned), or a split as shards larger than memory."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from copy import deepcopy
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

from face_pipeline.datasets.arrays import SHARD_ROWS, ShardedArray
from face_pipeline.ops.files import written_atomically


class NumpyDataset(AbstractVersionedDataset[np.ndarray, np.ndarray]):
    """A NumPy array stored as a ``.npy`` file on any fsspec filesystem.

    Local files are memory-mapped on load (``mmap_mode: r`` by default), so a
    large image array is paged in as it is read instead of being copied into
    RAM up front. Remote files are read into memory.

    For arrays that fit in memory; the image splits use ``ShardedArrayDataset``. Example::

        embeddings:
          type: face_pipeline.datasets.folders.NumpyDataset
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


INDEX_FILE = "index.json"


SHARD_NAME = "shard-{:05d}.npy"


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
          type: face_pipeline.datasets.folders.ShardedArrayDataset
          filepath: data/05_model_input/train_images
    """

    def __init__(
        self,
        *,
        filepath: str,
        shard_rows: int = SHARD_ROWS,
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
        with (
            written_atomically(self._fs, self._file(name)) as partial_path,
            self._fs.open(partial_path, "wb") as stream,
        ):
            write(stream)

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
