"""The served model: one MLflow pyfunc bundling detection, preprocessing and both networks.

Input: a DataFrame with a column ``image`` of base64-encoded photos (any format PIL or OpenCV
reads) and optionally ``id``. Output: one row per face, as ``FacePredictor`` gives it.

    mlflow models serve -m runs:/<run id>/face_model --env-manager local -h 127.0.0.1 -p 5001
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

import face_pipeline
from face_pipeline.images import ImageRejected, open_image

MAX_IMAGE_BYTES = 20 * 1024 * 1024
# What a logged model needs to load, pinned to the versions installed (MLflow adds itself).
# Pinning them here spares MLflow's requirement inference, which loads each model in a fresh
# Python process (about 20 s per model). Each entry: alternative distributions, first found wins.
NETWORK_REQUIREMENTS = (("tensorflow-cpu", "tensorflow"), ("keras",), ("numpy",))
SERVING_REQUIREMENTS = (
    *NETWORK_REQUIREMENTS,
    ("opencv-python-headless", "opencv-python"),
    ("ai-edge-litert",),
    ("pillow",),
    ("pandas",),
    ("fsspec",),
)


def _reject(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def decode_payload(model_input: pd.DataFrame, max_bytes: int, max_pixels: int) -> list[tuple[str, bytes]]:
    """``(id, image bytes)`` per row; any bad row rejects the request with a message naming it."""
    if not isinstance(model_input, pd.DataFrame) or "image" not in model_input.columns:
        raise _reject("expected a table with a column 'image' of base64-encoded photos")
    ids = model_input["id"].astype(str) if "id" in model_input.columns else model_input.index.astype(str)
    photos = []
    for row, (name, value) in enumerate(zip(ids, model_input["image"], strict=True)):
        if not isinstance(value, str) or not value.strip():
            raise _reject(f"row {row}: 'image' is empty or not a string")
        if len(value) > max_bytes * 4 // 3 + 4:
            raise _reject(f"row {row}: image larger than {max_bytes // (1024 * 1024)} MB")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _reject(f"row {row}: 'image' is not valid base64 ({exc})") from exc
        try:
            open_image(data, max_pixels)
        except ImageRejected as exc:
            raise _reject(f"row {row}: {exc}") from exc
        photos.append((name, data))
    return photos


class FaceModel(mlflow.pyfunc.PythonModel):
    """Detection + ``face_input`` + the gender and age networks, as one MLflow model."""

    def load_context(self, context) -> None:
        import keras  # noqa: PLC0415

        from face_pipeline.predict import FacePredictor  # noqa: PLC0415

        config = context.model_config
        self.max_bytes = int(config.get("max_image_bytes", MAX_IMAGE_BYTES))
        self.predictor = FacePredictor.from_settings(
            keras.models.load_model(context.artifacts["gender_model"]),
            keras.models.load_model(context.artifacts["age_model"]),
            config["inference_settings"],
        )
        self.max_pixels = self.predictor.spec.max_pixels

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        photos = decode_payload(model_input, self.max_bytes, self.max_pixels)
        return self.predictor.predict(photos).rename(columns={"file": "id"})


def pinned_requirements(requirements: tuple[tuple[str, ...], ...] = NETWORK_REQUIREMENTS) -> list[str]:
    """``package==version`` of each installed requirement; a requirement with none installed is left out.

    Default: what the Keras networks need (the ``pip_requirements`` of their MLflow models,
    ``${network_requirements:}`` in the catalog).
    """
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    pins = []
    for alternatives in requirements:
        for package in alternatives:
            try:
                pins.append(f"{package}=={version(package)}")
                break
            except PackageNotFoundError:
                continue
    return pins


def log_face_model(gender_model, age_model, inference_settings: dict[str, Any]) -> str:
    """Log the bundled model as ``face_model`` into the active MLflow run; returns its URI.

    Node function: kedro-mlflow's model dataset cannot attach the two networks as artifacts,
    so the node logs the model itself (into the run kedro-mlflow opened).
    """
    config = {"inference_settings": inference_settings, "max_image_bytes": MAX_IMAGE_BYTES}
    with tempfile.TemporaryDirectory() as folder:
        paths = {"gender_model": str(Path(folder) / "gender.keras"), "age_model": str(Path(folder) / "age.keras")}
        gender_model.save(paths["gender_model"])
        age_model.save(paths["age_model"])
        info = mlflow.pyfunc.log_model(
            name="face_model",
            python_model=FaceModel(),
            artifacts=paths,
            model_config=config,
            code_paths=[str(Path(face_pipeline.__file__).parent)],
            pip_requirements=pinned_requirements(SERVING_REQUIREMENTS),
            input_example=None,
        )
    return info.model_uri


def register_models(face_model_uri: str, registry: dict[str, Any]) -> dict[str, int]:
    """Register this run's models in the MLflow Model Registry when ``registry.register`` is on.

    Returns ``{registered name: version}`` (empty when registration is off).
    """
    if not registry.get("register"):
        return {}
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("registry.register needs an active MLflow run (kedro-mlflow opens one per kedro run)")
    names = registry["names"]
    sources = {
        names["gender"]: f"runs:/{run.info.run_id}/gender_model",
        names["age"]: f"runs:/{run.info.run_id}/age_model",
        names["face"]: face_model_uri,
    }
    return {name: int(mlflow.register_model(source, name).version) for name, source in sources.items()}
