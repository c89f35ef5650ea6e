"""Kedro datasets that kedro-datasets does not provide."""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Callable, Iterable
from copy import deepcopy
from dataclasses import dataclass
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
from kedro_datasets.partitions import PartitionedDataset

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


@dataclass(frozen=True)
class Refused:
    """The loader of a folder entry that is listed but never read: a folder link in a loop, or a
    link out of the folder where those are refused. Calling it raises ``ImageRejected``, so the
    entry becomes a reported row (ingestion's rejections, a prediction's error) like a bad file."""

    reason: str
    detail: str

    def __call__(self) -> bytes:
        from face_pipeline.imaging.decoding import ImageRejected  # noqa: PLC0415 - keep this module light

        raise ImageRejected(self.reason, self.detail)


def list_folder(folder: str, refuse_outside_links: bool = False) -> tuple[list[str], dict[str, Refused]]:
    """Every file under the local ``folder``, sorted, and the entries not followed, with why.

    Links are followed, to files and to folders (a subset made with ``ln -s``, DVC's and Hugging
    Face's caches), and files keep the path they have inside ``folder``. A folder reached a second
    time (a link back to a folder above it: a loop; or a second link to one already listed) is
    reported instead of walked again, so no link can make the listing endless. With
    ``refuse_outside_links`` (folders you do not trust), a link that leads outside ``folder`` is
    reported and never followed. Broken links and links to themselves are listed as files: reading
    them fails, which reports them.
    """
    files: list[str] = []
    refused: dict[str, Refused] = {}
    root = os.path.realpath(folder)
    if not os.path.isdir(root):
        return files, refused
    listed = {root: folder}  # each real folder walked, and the path it was walked under
    pending = [(folder, (root,))]  # a folder to walk and the real folders it lies in
    while pending:
        path, ancestors = pending.pop()
        try:
            entries = sorted(os.scandir(path), key=lambda entry: entry.name)
        except OSError as exc:
            refused[path] = Refused("unreadable folder", f"{path}: {exc.strerror or exc}")
            continue
        for entry in entries:
            if entry.is_symlink() and refuse_outside_links and outside_folder(root, entry.path):
                what = "a folder" if _is_folder(entry) else "a file"
                refused[entry.path] = Refused(
                    "outside the folder", f"{entry.path} links to {what} outside {folder}; not read"
                )
            elif not _is_folder(entry):
                files.append(entry.path)
            elif (real := os.path.realpath(entry.path)) in ancestors:
                refused[entry.path] = Refused(
                    "link loop", f"{entry.path} leads back to {listed[real]}, which holds it; not followed"
                )
            elif real in listed:
                refused[entry.path] = Refused(
                    "folder listed twice", f"{entry.path} leads to {listed[real]}, listed already; not followed"
                )
            else:
                listed[real] = entry.path
                pending.append((entry.path, (*ancestors, real)))
    return sorted(files), refused


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a folder or a link to one; a link to itself or to nothing is not."""
    try:
        return entry.is_dir()
    except OSError:  # a link in a loop of its own (ELOOP)
        return False


class ImageFolderDataset(PartitionedDataset):
    """A folder of images as ``{partition id: loader}``, like ``PartitionedDataset``, with links
    followed on local disks (``list_folder``): a folder link in a loop, and with
    ``refuse_outside_links`` a link out of the folder, is a ``Refused`` entry that reports itself
    when loaded. Object stores have no links and are listed as ``PartitionedDataset`` lists them.

    Example::

        raw_images:
          type: face_pipeline.datasets.folders.ImageFolderDataset
          path: data/01_raw/utkface
          refuse_outside_links: false
          dataset: {type: text.TextDataset, fs_args: {open_args_load: {mode: rb}}}
    """

    def __init__(self, *, refuse_outside_links: bool = False, **kwargs: Any) -> None:
        if not isinstance(refuse_outside_links, bool):
            raise DatasetError(f"refuse_outside_links must be true or false; got {refuse_outside_links!r}")
        super().__init__(**kwargs)
        self._refuse_outside_links = refuse_outside_links

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "refuse_outside_links": self._refuse_outside_links}

    def _local_listing(self) -> tuple[list[str], dict[str, Refused]]:
        root = self._filesystem._strip_protocol(self._normalized_path).rstrip(self._sep)
        files, refused = list_folder(root, self._refuse_outside_links)
        return [path for path in files if path.endswith(self._filename_suffix)], refused

    def _list_partitions(self) -> list[str]:
        if self._protocol != "file":
            return super()._list_partitions()
        return self._local_listing()[0]

    def load(self) -> dict[str, Callable[[], Any]]:
        if self._protocol != "file":
            return super().load()
        files, refused = self._local_listing()
        partitions: dict[str, Callable[[], Any]] = {}
        for path in files:
            config = deepcopy(self._dataset_config)
            config[self._filepath_arg] = path
            partitions[self._path_to_partition(path)] = self._dataset_type(**config).load
        partitions.update({self._path_to_partition(path): refusal for path, refusal in refused.items()})
        if not partitions:
            raise DatasetError(f"No partitions found in '{self._path}'")
        return dict(sorted(partitions.items()))


class ImageFilesDataset(AbstractDataset[None, dict[str, Callable[[], bytes]]]):
    """Photos to predict on: a folder (searched recursively), one file, or a list of either.

    ``paths`` is a path or fsspec URL, a string of several separated by ``;`` or ``,`` (``;`` on
    the command line: Kedro's ``--params`` splits at commas), or a list. Loads as
    ``{location: loader}`` like ``PartitionedDataset``; each loader returns the file's bytes.
    Links in local folders are followed (``list_folder``); a folder link in a loop, and with
    ``refuse_outside_links`` a link out of its folder, loads as a ``Refused`` entry, which
    reports itself as the photo's error. Read-only.
    """

    def __init__(
        self, *, paths: str | list[str], refuse_outside_links: bool = False, metadata: dict[str, Any] | None = None
    ) -> None:
        if isinstance(paths, str):
            paths = paths.replace(";", ",").split(",")
        if not isinstance(refuse_outside_links, bool):
            raise DatasetError(f"refuse_outside_links must be true or false; got {refuse_outside_links!r}")
        self._paths = [str(p).strip() for p in paths if str(p).strip()]
        self._refuse_outside_links = refuse_outside_links
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"paths": self._paths, "refuse_outside_links": self._refuse_outside_links}

    def load(self) -> dict[str, Callable[[], bytes]]:
        from face_pipeline.imaging.decoding import is_image_file  # noqa: PLC0415 - keep this module light

        files: dict[str, Callable[[], bytes]] = {}
        for location in self._paths:
            fs, path = fsspec.core.url_to_fs(location)
            if not fs.isdir(path):
                if not fs.exists(path):
                    raise DatasetError(f"No such file or folder: {location}")
                files[fs.unstrip_protocol(path) if "://" in location else path] = functools.partial(_read, fs, path)
            elif "://" in location:
                for item in sorted(p for p in fs.find(path) if is_image_file(p)):
                    files[fs.unstrip_protocol(item)] = functools.partial(_read, fs, item)
            else:
                found, refused = list_folder(path, self._refuse_outside_links)
                files.update({item: functools.partial(_read, fs, item) for item in found if is_image_file(item)})
                # A refused link is reported if it could be a photo; a refused folder always.
                files.update(
                    {item: refusal for item, refusal in refused.items() if is_image_file(item) or os.path.isdir(item)}
                )
        return files

    def save(self, data: None) -> None:
        raise DatasetError("ImageFilesDataset is read-only")


class _FromModelSource(AbstractDataset[None, Any]):
    """A read-only dataset of what was saved at (or with) a model ``source``: a ``.keras`` file, a
    Kedro versioned folder (its latest version) or an MLflow model URI."""

    def __init__(self, *, source: str, metadata: dict[str, Any] | None = None) -> None:
        self._source = str(source)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"source": self._source}

    def save(self, data: Any) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only")


class KerasModelDataset(_FromModelSource):
    """A trained Keras model from a ``.keras`` file, a Kedro versioned folder (its latest
    version) or an MLflow model URI (``runs:/<run>/gender_model``, ``models:/face_gender/1``).
    Read-only: training saves models through ``tensorflow.TensorFlowModelDataset``.
    """

    def load(self) -> Any:
        from face_pipeline.inference.predictor import load_keras_model  # noqa: PLC0415 - TensorFlow only when needed

        return load_keras_model(self._source)


class CalibrationDataset(_FromModelSource):
    """The calibration saved with the model at ``source`` (``predict.load_calibration``): the same
    path or MLflow URI a ``KerasModelDataset`` reads the model from. Read-only."""

    def load(self) -> dict[str, Any]:
        from face_pipeline.inference.predictor import load_calibration  # noqa: PLC0415

        return load_calibration(self._source)


class EmbeddingHeadDataset(_FromModelSource):
    """A loader of the embedding head and combination saved with the model at ``source``
    (``predict.load_embedding_head``), for ``mode: accurate``: called only in that mode, so the
    fast mode loads nothing more. Read-only."""

    def load(self) -> Callable[[], dict[str, Any]]:
        from face_pipeline.inference.predictor import load_embedding_head  # noqa: PLC0415

        return functools.partial(load_embedding_head, self._source)


class MlflowParamsDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A dict saved as a JSON file and, in an active MLflow run, logged as that run's params.

    For what a node decides at run time (the epochs a time budget planned, the precision
    ``auto`` resolved to): params sit beside the configured ones in the MLflow UI, so two runs
    with equal parameters that trained different networks tell apart. Keys become
    ``<prefix>.<key>``; values longer than MLflow's limit are cut. With ``log_artifact`` the
    file is also logged as an artifact of the run, under its own name (what ``runs:/`` URIs read
    back with its types intact).

    Example::

        "{task}.training_decisions":
          type: face_pipeline.datasets.folders.MlflowParamsDataset
          filepath: data/08_reporting/{task}_training_decisions.json
          prefix: "{task}.decided"
    """

    def __init__(
        self,
        *,
        filepath: str,
        prefix: str = "",
        log_artifact: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol)
        self._filepath = PurePosixPath(path)
        self._prefix = prefix
        self._log_artifact = log_artifact
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
            if self._log_artifact:
                mlflow.log_dict(data, self._filepath.name)

    def _exists(self) -> bool:
        return self._fs.exists(self._path())


class CacheDataset(PartitionedDataset):
    """A ``PartitionedDataset`` that a cache starts as: empty (``{}``) before its first partition.

    Saving adds partitions and keeps the others (``overwrite`` stays false), so each run's new
    entries join the cache and a later run loads them all.
    """

    def load(self) -> dict[str, Callable[[], Any]]:
        if not self._list_partitions():
            return {}
        return super().load()
