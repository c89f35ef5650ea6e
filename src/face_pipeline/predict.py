"""Age and gender for the faces in any photo: detection, the shared preprocessing, both networks.

``FacePredictor`` is used by the ``predict`` pipeline, the ``face-pipeline predict`` command and
the served MLflow model alike, so all three give the same answer for the same photo.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.faces import DetectionSettings, find_faces
from face_pipeline.images import ImageRejected, ImageSpec, face_input, load_image

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = [
    "file",
    "face",
    "box_x",
    "box_y",
    "box_size",
    "gender",
    "female_probability",
    "age",
    "status",
    "reason",
]
MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "dbfs:/")


def load_keras_model(source: str | Path):
    """A Keras model from a ``.keras`` file, a Kedro versioned folder (latest version) or an MLflow URI."""
    import keras  # noqa: PLC0415 - TensorFlow starts only when a model is needed

    source = str(source)
    if source.startswith(MLFLOW_SCHEMES):
        import mlflow  # noqa: PLC0415

        return mlflow.keras.load_model(source)
    path = Path(source)
    if path.is_dir():  # Kedro's versioned layout: name.keras/<version>/name.keras
        versions = sorted(version for version in path.iterdir() if (version / path.name).is_file())
        if not versions:
            raise FileNotFoundError(f"No saved model version in {path}; train one with `kedro run`")
        path = versions[-1] / path.name
    if not path.is_file():
        raise FileNotFoundError(f"No model at {path}; train one with `kedro run` or pass a path or MLflow URI")
    return keras.models.load_model(path)


def predict_in_batches(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """One output per image, ``images`` fed to the model ``batch_size`` at a time (works on memmaps)."""
    if not len(images):
        return np.empty(0, dtype=np.float32)
    return np.concatenate(
        [
            np.asarray(model.predict_on_batch(np.asarray(images[start : start + batch_size]))).reshape(-1)
            for start in range(0, len(images), batch_size)
        ]
    )


@dataclass
class FacePredictor:
    gender_model: Any
    age_model: Any
    spec: ImageSpec = field(default_factory=ImageSpec)
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    batch_size: int = 64

    def faces(self, name: str, data: bytes | Callable[[], bytes]) -> tuple[list[dict], list[np.ndarray]]:
        """Rows (without predictions) and network inputs for one photo; failures become rows.

        ``data`` is the photo's bytes or a function returning them (a catalog loader).
        """
        try:
            data = data() if callable(data) else data
            pixels = load_image(data, self.spec, min_side=self.detection.max_side)
        except ImageRejected as exc:
            return [{"file": name, "status": "error", "reason": str(exc)}], []
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            return [{"file": name, "status": "error", "reason": f"unreadable image: {type(exc).__name__}: {exc}"}], []
        boxes = find_faces(pixels, self.detection)
        if not boxes:
            return [{"file": name, "status": "no face", "reason": "no face detected"}], []
        rows = [
            {"file": name, "face": index, "box_x": box.x, "box_y": box.y, "box_size": box.size, "status": "ok"}
            for index, box in enumerate(boxes)
        ]
        return rows, [face_input(box.crop(pixels), self.spec) for box in boxes]

    def predict(self, photos: Iterable[tuple[str, bytes | Callable[[], bytes]]]) -> pd.DataFrame:
        """One row per face found (or per photo without a usable face), in input order."""
        rows: list[dict] = []
        inputs: list[np.ndarray] = []
        for name, data in photos:
            photo_rows, photo_inputs = self.faces(name, data)
            rows.extend(photo_rows)
            inputs.extend(photo_inputs)
        table = pd.DataFrame(rows, columns=PREDICTION_COLUMNS).astype(
            {"gender": "object", "female_probability": "float64", "age": "float64", "reason": "object"}
        )
        if inputs:
            batch = np.stack(inputs)
            female = predict_in_batches(self.gender_model, batch, self.batch_size).astype(np.float64)
            years = predict_in_batches(self.age_model, batch, self.batch_size).astype(np.float64)
            ok = table["status"] == "ok"
            table.loc[ok, "female_probability"] = np.round(female, 4)
            table.loc[ok, "gender"] = np.where(female >= 0.5, "female", "male")
            table.loc[ok, "age"] = np.round(np.clip(years, 0, None), 1)
        return table.astype({"face": "Int16", "box_x": "Int32", "box_y": "Int32", "box_size": "Int32"})
