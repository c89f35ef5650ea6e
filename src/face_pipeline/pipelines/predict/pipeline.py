"""Predict pipeline: photos -> faces -> gender and age, with the saved models."""

from kedro.pipeline import Node, Pipeline

from face_pipeline.inference.packaging import log_face_model, register_models
from face_pipeline.inference.photos import inference_settings

from .nodes import annotate_photos, predict_faces


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                predict_faces,
                [
                    "predict_photos",
                    "predict_gender_model",
                    "predict_age_model",
                    "predict_gender_calibration",
                    "predict_age_calibration",
                    "predict_gender_head",
                    "predict_age_head",
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


def create_packaging_pipeline(**kwargs) -> Pipeline:
    """Bundle both trained networks with detection and preprocessing as the MLflow model ``face_model``,
    the model card (``model_card``) with them."""
    return Pipeline(
        [
            Node(
                log_face_model,
                [
                    "gender.model",
                    "age.model",
                    "inference_settings",
                    "gender.calibration",
                    "age.calibration",
                    "gender.head",
                    "age.head",
                    "gender.combination",
                    "age.combination",
                    "params:predict",
                    "model_card",
                ],
                "face_model_uri",
                name="log_face_model",
            ),
            Node(register_models, ["face_model_uri", "params:registry"], "registered_models", name="register_models"),
        ]
    )
