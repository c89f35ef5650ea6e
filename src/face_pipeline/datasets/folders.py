"""Kedro datasets of image folders: links followed (or refused outside), and a cache that grows by partitions."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import fsspec
from kedro.io.core import (
    AbstractDataset,
    DatasetError,
)
from kedro_datasets.partitions import PartitionedDataset


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


class CacheDataset(PartitionedDataset):
    """A ``PartitionedDataset`` that a cache starts as: empty (``{}``) before its first partition.

    Saving adds partitions and keeps the others (``overwrite`` stays false), so each run's new
    entries join the cache and a later run loads them all.
    """

    def load(self) -> dict[str, Callable[[], Any]]:
        if not self._list_partitions():
            return {}
        return super().load()
