"""Preprocessing: decode every usable image once into uint8 arrays per split."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.faces import DetectionSettings
from face_pipeline.images import ImageRejected, ImageSpec, decode_face
from face_pipeline.parallel import map_chunks
from face_pipeline.predict import prepare_photo

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


def preprocess_split(
    face_manifest: pd.DataFrame,
    raw_images: dict[str, Callable[[], bytes]],
    params: dict[str, Any],
    split: str,
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Images of one split as an ``(N, H, W, C)`` uint8 array, with row-aligned labels.

    The array is allocated once and filled chunk by chunk, so peak memory is
    one copy of the split. Images that fail to decode now (changed since
    ingestion), or in which ``params.detection`` finds no face, are left out of
    both outputs and returned as failures.
    """
    spec = ImageSpec.from_params(params["image"])
    detection = DetectionSettings.from_params(params["detection"]) if params.get("detection") else None
    rows = face_manifest[face_manifest["split"] == split].reset_index(drop=True)
    missing = sorted(set(rows["image_id"]) - set(raw_images))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) in face_manifest are no longer in the raw folder (first: {missing[0]}); "
            "run the ingestion pipeline again"
        )
    images = np.empty((len(rows), *spec.shape), dtype=np.uint8)
    failed: list[tuple[int, str, str]] = []
    for offset, (chunk, chunk_failures) in map_chunks(
        _decode_chunk,
        [raw_images[image_id] for image_id in rows["image_id"]],
        workers=params.get("workers"),
        chunk_size=params.get("chunk_size", 256),
        scheduler=params.get("scheduler"),
        description=f"Decoding {split} images",
        spec=spec,
        detection=detection,
    ):
        images[offset : offset + len(chunk)] = chunk
        failed.extend((offset + position, reason, detail) for position, reason, detail in chunk_failures)

    failures = pd.DataFrame(
        [(rows.at[index, "path"], reason, detail) for index, reason, detail in failed], columns=FAILURE_COLUMNS
    )
    if failed:
        keep = np.ones(len(rows), dtype=bool)
        keep[[index for index, _, _ in failed]] = False
        images, rows = images[keep], rows[keep].reset_index(drop=True)
        logger.warning("%s: %d image(s) could not be decoded (see preprocessing_failures)", split, len(failed))
    logger.info(
        "%s: %d images, array %s %s (%.1f MB)", split, len(rows), images.shape, images.dtype, images.nbytes / 1e6
    )
    return images, rows[LABEL_COLUMNS], failures


def report_failures(*failures: pd.DataFrame) -> pd.DataFrame:
    """All images that passed ingestion but failed to decode, in one table."""
    return pd.concat(failures, ignore_index=True) if failures else pd.DataFrame(columns=FAILURE_COLUMNS)
