"""Predict: every task's answer (gender, age, ...) for every face in new photos."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
from PIL import Image

from face_pipeline.imaging.annotate import annotated_photos
from face_pipeline.imaging.decoding import ImageSpec
from face_pipeline.inference.loading import embedding_backend, embedding_heads
from face_pipeline.inference.predictor import FacePredictor
from face_pipeline.parameters import PredictSettings
from face_pipeline.tasks import face_label

logger = logging.getLogger(__name__)


def predict_faces(
    photos: dict[str, Callable[[], bytes]],
    models: dict[str, Any],
    calibrations: dict[str, dict[str, Any]],
    heads: dict[str, Callable[[], dict[str, Any]]],
    inference_settings: dict[str, Any],
    predict: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per face (file, face index, box, and each task's columns: gender, calibrated
    P(female), whether that is uncertain, age and its range), plus one row per photo with no face
    or that could not be read, with the reason. Returned twice: Parquet and CSV.

    ``models``, ``calibrations`` and ``heads`` hold each task's network, its calibration and a
    loader of its embedding head (``TaskModelsDataset``). The photos are prepared as the models
    were saved to expect (``inference_settings``). With ``predict.mode: accurate`` each network's
    answer is mixed with its embedding head's (a missing one stops the run with a message naming it).
    """
    settings = PredictSettings.from_params(predict)
    accurate = None
    if settings.mode == "accurate":
        accurate = embedding_heads(
            {task: load() for task, load in heads.items()}, embedding_backend(inference_settings)
        )
    predictor = FacePredictor.from_settings(
        models,
        inference_settings,
        calibration=calibrations,
        batch_size=settings.batch_size,
        workers=settings.workers,
        worker_networks_from=settings.worker_networks_from,
        accurate=accurate,
    )
    started = time.perf_counter()
    table = predictor.predict(photos.items())
    elapsed = time.perf_counter() - started
    faces = int((table["status"] == "ok").sum())
    logger.info(
        "%d photo(s), %d face(s) in %.1f s; %d without a face, %d unreadable",
        len(photos),
        faces,
        elapsed,
        int((table["status"] == "no face").sum()),
        int((table["status"] == "error").sum()),
    )
    return table, table


def annotate_photos(
    photos: dict[str, Callable[[], bytes]],
    predictions: pd.DataFrame,
    inference_settings: dict[str, Any],
    predict: dict[str, Any],
) -> dict[str, Image.Image]:
    """With ``predict.annotate``: each photo with its faces' boxes and labels (``face_pipeline.imaging.annotate``),
    by file name; a photo that could not be read or drawn is named in the log with the reason.
    Otherwise nothing."""
    if not PredictSettings.from_params(predict).annotate:
        return {}
    max_pixels = ImageSpec.from_params(inference_settings["image"]).max_pixels
    pictures: dict[str, Image.Image] = {}
    for photo in annotated_photos(predictions, photos, set(), face_label, max_pixels):
        if photo.picture is None:
            logger.warning("%s not annotated: %s", photo.file, photo.reason)
        else:
            pictures[photo.name] = photo.picture
    logger.info("%d annotated photo(s)", len(pictures))
    return pictures
