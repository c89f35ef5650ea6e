"""Prior knowledge from a face-recognition network: dlib's ResNet embedding of a face (128 numbers).

dlib's ``dlib_face_recognition_resnet_model_v1`` was trained on about 3 million faces of 7,485
people (public domain; shipped inside the ``face-recognition-models`` package, run by the
``dlib-bin`` wheel): far more faces than our networks learn from. Its embedding of a face is the
input of the small embedding heads (``pipelines/embeddings``, ``--mode accurate``).

A face reaches the embedding as it reaches our networks: found and aligned onto the training
chips' geometry (``faces.face_chip``). dlib's 5-point landmarks are then measured on that chip,
inside the box dlib's own detector draws on such chips, and ``get_face_chip`` frames the face as
the ResNet was trained to see it (150 px, padding 0.25). Only the 5-point model is used: the
68-point model in the same package was trained on data for non-commercial use.

This module must stay free of TensorFlow imports: it runs in worker processes. The ResNet runs
in dlib (``DlibEmbedder``) or, batched, as a Keras network with the same weights
(``embedding_network``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from face_pipeline.config import read_block, require_choice, require_range
from face_pipeline.imaging.alignment import ChipGeometry
from face_pipeline.ops.parallel import CHUNK_SIZE

EMBEDDING_SIZE = 128
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's framing for its ResNet (dnn_face_recognition_ex.cpp)
BACKENDS = ("dlib", "keras")
# The networks alone, or mixed with their embedding heads; the first is the default.
PREDICT_MODES = ("fast", "accurate")
# What an embedding depends on besides the image: cached embeddings of another method are not reused.
METHOD = f"dlib_resnet_v1-5pt-{CHIP_SIZE}px-{CHIP_PADDING}"
# The box dlib's HOG detector draws on UTKFace's 200 px chips (median over 285 chips: left/top 12,
# right/bottom 167), from the eyes' centre in units of the eye-to-mouth distance, so that it
# follows the chip geometry. The 5-point model was trained on such boxes.
DLIB_BOX = {"left": -1.047, "top": -0.579, "right": 0.829, "bottom": 1.298}
_local = threading.local()


@dataclass(frozen=True)
class EmbeddingSettings:
    """``embeddings`` in ``conf/base/parameters_embeddings.yml``: how the embeddings are computed."""

    backend: str = "keras"
    batch_size: int = 64
    workers: int | None = None
    chunk_size: int = CHUNK_SIZE
    scheduler: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "embeddings") -> EmbeddingSettings:
        settings = read_block(cls, params, block)
        require_choice(settings.backend, BACKENDS, f"{block}.backend")
        for name in ("batch_size", "chunk_size"):
            require_range(getattr(settings, name), f"{block}.{name}", at_least=1)
        return settings


def content_key(data: bytes) -> str:
    """The cache key of an image: its bytes' SHA-1 (a renamed or moved file is still found)."""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _dlib_models() -> tuple[Any, Any]:
    """This thread's 5-point landmark model and ResNet, loaded on first use (dlib objects are not shared)."""
    if not hasattr(_local, "models"):
        import dlib  # noqa: PLC0415 - loaded only where embeddings are computed
        import face_recognition_models  # noqa: PLC0415

        _local.models = (
            dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location()),
            dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location()),
        )
    return _local.models


def dlib_box(geometry: ChipGeometry) -> tuple[int, int, int, int]:
    """Left, top, right, bottom of the box dlib's detector would draw on a chip of ``geometry``."""
    points = geometry.landmarks
    eyes = np.mean([points["eye_left"], points["eye_right"]], axis=0)
    mouth = np.asarray(points.get("mouth", (eyes[0], eyes[1] + 0.41 * geometry.size)))
    unit = float(np.linalg.norm(mouth - eyes))
    return (
        round(eyes[0] + DLIB_BOX["left"] * unit),
        round(eyes[1] + DLIB_BOX["top"] * unit),
        round(eyes[0] + DLIB_BOX["right"] * unit),
        round(eyes[1] + DLIB_BOX["bottom"] * unit),
    )


def embedding_chip(face_chip: np.ndarray, geometry: ChipGeometry) -> np.ndarray:
    """The ``(150, 150, 3)`` uint8 RGB chip the ResNet takes, from a face framed like a training chip.

    ``face_chip`` is an RGB face of ``geometry`` (``faces.face_chip``), at any size: the box is
    scaled to it.
    """
    import dlib  # noqa: PLC0415

    landmarks, _ = _dlib_models()
    rgb = np.ascontiguousarray(face_chip if face_chip.ndim == 3 else np.repeat(face_chip[..., None], 3, axis=2))
    scale = rgb.shape[0] / geometry.size
    box = dlib.rectangle(*(round(value * scale) for value in dlib_box(geometry)))
    return np.asarray(dlib.get_face_chip(rgb, landmarks(rgb, box), size=CHIP_SIZE, padding=CHIP_PADDING))


def normalised(descriptors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (dlib's descriptors have lengths around 1.3; the heads see directions)."""
    descriptors = np.asarray(descriptors, dtype=np.float32).reshape(-1, EMBEDDING_SIZE)
    return descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)


class DlibEmbedder:
    """Chips (``embedding_chip``) -> unit-length embeddings, computed by dlib itself (one core per process).

    Has ``predict_on_batch`` like a Keras network, so the predictor runs it beside the networks.
    """

    pad_batches = False  # every face costs dlib the same: a padded batch would only cost more

    def predict_on_batch(self, chips: np.ndarray) -> np.ndarray:
        if not len(chips):
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        _, resnet = _dlib_models()
        return normalised(resnet.compute_face_descriptor([np.ascontiguousarray(chip) for chip in chips]))

    def __reduce__(self):  # dlib's models stay in each process: pickling sends only the class
        return (DlibEmbedder, ())


def embedder(backend: str) -> Any:
    """The network that embeds chips: dlib's own (``dlib``) or the Keras copy of it (``keras``)."""
    if backend == "dlib":
        return DlibEmbedder()
    from face_pipeline.embedding.network import unit_embedding_network  # noqa: PLC0415 - TensorFlow

    return unit_embedding_network()
