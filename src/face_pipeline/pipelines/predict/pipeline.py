"""Predict pipeline: photos -> faces -> each task's answer, with the saved models."""

from collections.abc import Sequence

from kedro.pipeline import Node, Pipeline

from face_pipeline.inference.packaging import PACKAGED_PARTS, log_face_model, register_models
from face_pipeline.inference.photos import inference_settings

from .nodes import annotate_photos, predict_faces


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                predict_faces,
                [
                    "predict_photos",
                    "predict_models",
                    "predict_calibrations",
                    "predict_heads",
                    "inference_settings",
                    "params:predict",
                ],
                ["predictions", "predictions_csv"],
                name="predict_faces",
            ),
            Node(
                annotate_photos,
                ["predict_photos", "predictions", "inference_settings", "params:predict"],
                "annotated_photos",
                name="annotate_photos",
            ),
        ]
    )


def create_settings_pipeline(**kwargs) -> Pipeline:
    """The image spec and detection settings saved with the models (``inference_settings``)."""
    return Pipeline(
        [
            Node(
                inference_settings,
                ["params:preprocessing", "params:predict", "params:embeddings"],
                "inference_settings",
                name="save_inference_settings",
            )
        ]
    )


def create_packaging_pipeline(tasks: Sequence[str], **kwargs) -> Pipeline:
    """Bundle each task's trained network (with its calibration, embedding head and combination)
    with detection and preprocessing as the MLflow model ``face_model``, the model card
    (``model_card``) with them; then register them where ``registry.register`` says so."""
    parts = {f"{task}_{part}": f"{task}.{part}" for task in tasks for part in PACKAGED_PARTS}
    return Pipeline(
        [
            Node(
                log_face_model,
                {
                    "inference_settings": "inference_settings",
                    "predict": "params:predict",
                    "model_card": "model_card",
                    **parts,
                },
                "face_model_uri",
                name="log_face_model",
            ),
            Node(register_models, ["face_model_uri", "params:registry"], "registered_models", name="register_models"),
        ]
    )
