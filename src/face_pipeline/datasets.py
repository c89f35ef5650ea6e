"""Kedro datasets that kedro-datasets does not provide."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
from collections.abc import Callable
from copy import deepcopy
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

    Example::

        train_images:
          type: face_pipeline.datasets.NumpyDataset
          filepath: data/05_model_input/train_images.npy
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
