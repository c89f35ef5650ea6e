"""Preprocessing: decode every usable image once into uint8 arrays per split, written in shards."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.datasets.array_files import ShardedArrayDataset
from face_pipeline.datasets.arrays import ArrayStream, ShardedArray
from face_pipeline.imaging.decoding import ImageRejected, ImageSpec, decode_face
from face_pipeline.imaging.detection import DetectionSettings
from face_pipeline.inference.photos import prepare_photo
from face_pipeline.ops.parallel import map_chunks
from face_pipeline.parameters import PreprocessingSettings

logger = logging.getLogger(__name__)

LABEL_COLUMNS = ["image_id", "age", "gender", "race"]
FAILURE_COLUMNS = ["path", "reason", "detail"]


def _decode_chunk(
    loaders: Sequence[Callable[[], bytes]], spec: ImageSpec, detection: DetectionSettings | None
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Decode a chunk; failures are returned by position, never raised.

    Without ``detection`` each image is a face as it is (``decode_face``); with it, the most
    confident face found is aligned first, exactly as for prediction, and an image without a
    face is a failure.
    """
    out = np.zeros((len(loaders), *spec.shape), dtype=np.uint8)
    failures = []
    for position, load in enumerate(loaders):
        try:
            if detection is None:
                out[position] = decode_face(load(), spec)
                continue
            [row, *_], inputs = prepare_photo("", load, spec, detection)
            if inputs:
                out[position] = inputs[0]
            else:
                failures.append((position, row["status"], row["reason"]))
        except ImageRejected as exc:
            failures.append((position, exc.reason, exc.detail))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
            failures.append((position, "unreadable image", f"{type(exc).__name__}: {exc}"))
    return out, failures


def decode_split(
    face_manifest: pd.DataFrame,
    raw_images: dict[str, Callable[[], bytes]],
    params: Mapping[str, Any],
    split: str,
) -> ArrayStream:
    """Images of one split as uint8 shards of at most ``shard_images`` rows, decoded as the
    stream is saved (``ShardedArrayDataset``), so the split is never whole in memory.

    Images that fail to decode now (changed since ingestion), or in which ``detection``
    finds no face, are left out chunk by chunk; once every shard is written, the stream's
    ``attrs["failures"]`` holds ``[position in the split, reason, detail]`` for each of them
    (``split_labels`` turns it into the row-aligned labels and the failure report).
    """
    settings = PreprocessingSettings.from_params(params)
    spec, detection = settings.image, settings.detection
    rows = face_manifest[face_manifest["split"] == split].reset_index(drop=True)
    missing = sorted(set(rows["image_id"]) - set(raw_images))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) in face_manifest are no longer in the raw folder (first: {missing[0]}); "
            "run the ingestion pipeline again"
        )
    failures: list[tuple[int, str, str]] = []
    chunks = map_chunks(
        _decode_chunk,
        [raw_images[image_id] for image_id in rows["image_id"]],
        workers=settings.workers,
        chunk_size=settings.chunk_size,
        scheduler=settings.scheduler,
        description=f"Decoding {split} images",
        spec=spec,
        detection=detection,
    )
    kept = _without_failures(chunks, failures, split)
    shards = _in_shards(kept, settings.shard_images, (0, *spec.shape))
    return ArrayStream(shards, {"failures": failures})


def _without_failures(
    chunks: Iterable[tuple[int, tuple[np.ndarray, list[tuple[int, str, str]]]]],
    failures: list[tuple[int, str, str]],
    split: str,
) -> Iterator[np.ndarray]:
    """Each decoded chunk without its failed rows; the failures are appended to ``failures``."""
    kept = 0
    for offset, (decoded, chunk_failures) in chunks:
        failures.extend((offset + position, reason, detail) for position, reason, detail in chunk_failures)
        keep = np.ones(len(decoded), dtype=bool)
        keep[[position for position, _, _ in chunk_failures]] = False
        kept += int(keep.sum())
        yield decoded if keep.all() else decoded[keep]
    if failures:
        logger.warning("%s: %d image(s) could not be decoded (see preprocessing_failures)", split, len(failures))
    logger.info("%s: %d images decoded", split, kept)


def _in_shards(chunks: Iterable[np.ndarray], shard_rows: int, empty_shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Consecutive chunks regrouped into arrays of ``shard_rows`` rows (the last one shorter).

    Only the shard being filled is held. An empty input gives one empty array of
    ``empty_shape``, so that an empty split is still saved with its row shape.
    """
    shard_rows = max(1, int(shard_rows))
    pending: list[np.ndarray] = []
    filled = 0
    produced = False
    for chunk in chunks:
        rest = chunk
        while len(rest):
            taken, rest = rest[: shard_rows - filled], rest[shard_rows - filled :]
            pending.append(taken)
            filled += len(taken)
            if filled == shard_rows:
                yield np.concatenate(pending)
                pending, filled, produced = [], 0, True
    if filled or not produced:
        yield np.concatenate(pending) if pending else np.empty(empty_shape, dtype=np.uint8)


def split_labels(face_manifest: pd.DataFrame, images: ShardedArray, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labels of the rows ``decode_split`` kept (row-aligned with ``images``) and the failures."""
    rows = face_manifest[face_manifest["split"] == split].reset_index(drop=True)
    failed = images.attrs.get("failures", [])
    failures = pd.DataFrame(
        [(rows.at[index, "path"], reason, detail) for index, reason, detail in failed], columns=FAILURE_COLUMNS
    )
    keep = np.ones(len(rows), dtype=bool)
    keep[[index for index, _, _ in failed]] = False
    labels = rows[keep].reset_index(drop=True)[LABEL_COLUMNS]
    if len(labels) != len(images):
        raise ValueError(
            f"{split}: {len(images)} images but {len(labels)} manifest rows kept; the images were written from "
            "another manifest: run the preprocessing pipeline again"
        )
    logger.info(
        "%s: %d images, array %s %s in %d shard(s) (%.1f MB)",
        split,
        len(images),
        images.shape,
        images.dtype,
        images.shard_count,
        images.nbytes / 1e6,
    )
    return labels, failures


def report_failures(*failures: pd.DataFrame) -> pd.DataFrame:
    """All images that passed ingestion but failed to decode, in one table."""
    return pd.concat(failures, ignore_index=True) if failures else pd.DataFrame(columns=FAILURE_COLUMNS)


def preprocess_split(
    face_manifest: pd.DataFrame,
    raw_images: dict[str, Callable[[], bytes]],
    params: Mapping[str, Any],
    split: str,
    filepath: str,
) -> tuple[ShardedArray, pd.DataFrame, pd.DataFrame]:
    """``decode_split`` saved to the folder ``filepath``, then ``split_labels``: the pipeline's two
    nodes in one call, for scripts and tests. Returns the loaded array, the labels and the failures."""
    dataset = ShardedArrayDataset(filepath=filepath)
    dataset.save(decode_split(face_manifest, raw_images, params, split))
    images = dataset.load()
    return images, *split_labels(face_manifest, images, split)
