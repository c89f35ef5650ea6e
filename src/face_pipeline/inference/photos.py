"""Photos into the networks' inputs: decoding, detection, alignment and the shared preprocessing,
one photo at a time, failures as rows (no TensorFlow: worker processes run this)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from face_pipeline.imaging.decoding import ImageRejected, ImageSpec, convert_pixels, face_input, load_scaled_image
from face_pipeline.imaging.detection import DetectionSettings, Face, face_chip, find_faces, whole_image


def inference_settings(
    preprocessing: dict[str, Any], predict: dict[str, Any], embeddings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What turns a photo into the networks' input: the image spec, the detection settings and the
    embedding network's backend (``mode: accurate``).

    Saved with the trained models (``data/06_models/inference_settings.json`` and the MLflow
    run's artifact of that name) so that the ``predict`` pipeline, the ``face-pipeline`` command
    and the served model build the same ``FacePredictor`` from it.
    """
    from face_pipeline.embedding.descriptor import EmbeddingSettings  # noqa: PLC0415

    spec = ImageSpec.from_params(preprocessing["image"])
    return {
        "image": asdict(spec),
        "detection": DetectionSettings.from_params(predict["detection"]).to_params(),
        "embedding": {"backend": EmbeddingSettings.from_params(embeddings or {}).backend},
    }


def prepare_photo(
    name: str,
    data: bytes | Callable[[], bytes],
    spec: ImageSpec,
    detection: DetectionSettings,
    embedding_chips: bool = False,
) -> tuple[list[dict], list[np.ndarray]]:
    """Rows (without predictions) and network inputs for one photo; failures become rows.

    ``data`` is the photo's bytes or a function returning them (a catalog loader). With detection
    off the photo gets exactly the training images' preprocessing (``decode_face``); otherwise
    each face found is aligned onto the training chips' geometry, then goes through the same
    ``face_input``. With ``embedding_chips`` each input is a pair: the network input and the
    face's chip for the embedding network (``embedding.embedding_chip``, from the same aligned face).
    """
    try:
        data = data() if callable(data) else data
        if detection.mode == "never" and not embedding_chips:
            pixels, scale = load_scaled_image(data, spec, min_side=spec.size)
            return [_row(name, 0, whole_image(pixels), scale)], [face_input(pixels, spec)]
        rgb, scale = load_scaled_image(data, replace(spec, color_mode="rgb"), min_side=detection.max_side)
    except ImageRejected as exc:
        return [{"file": name, "status": "error", "reason": str(exc)}], []
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
        return [{"file": name, "status": "error", "reason": f"unreadable image: {type(exc).__name__}: {exc}"}], []
    faces = find_faces(rgb, detection)
    if not faces:
        return [{"file": name, "status": "no face", "reason": "no face detected"}], []
    chips = [face_chip(rgb, face, detection) for face in faces]
    inputs = [face_input(convert_pixels(chip, spec.color_mode), spec) for chip in chips]
    if embedding_chips:
        from face_pipeline.embedding.descriptor import embedding_chip  # noqa: PLC0415 - dlib, only when asked

        inputs = [(face, embedding_chip(chip, detection.chip)) for face, chip in zip(inputs, chips, strict=True)]
    return [_row(name, index, face, scale) for index, face in enumerate(faces)], inputs


def _row(name: str, index: int, face: Face, scale: float) -> dict:
    """A face's row, its box in the photo's own pixels."""
    x, y, size = (round(value * scale) for value in (face.box.x, face.box.y, face.box.size))
    return {"file": name, "face": index, "box_x": x, "box_y": y, "box_size": size, "status": "ok"}


@dataclass(frozen=True)
class PreparedFaces:
    """The faces of some photos, ready for the networks: one row per face (or per failed photo),
    the networks' inputs of the ``ok`` rows and, when asked for, their embedding chips."""

    rows: list[dict]
    inputs: np.ndarray
    chips: np.ndarray | None = None


def prepare_photos(
    photos: Sequence[tuple[str, bytes | Callable[[], bytes]]],
    spec: ImageSpec,
    detection: DetectionSettings,
    embedding_chips: bool = False,
) -> PreparedFaces:
    """``prepare_photo`` for a chunk of photos: all rows, and the inputs (and chips) stacked in arrays."""
    rows: list[dict] = []
    inputs: list = []
    for name, data in photos:
        photo_rows, photo_inputs = prepare_photo(name, data, spec, detection, embedding_chips)
        rows.extend(photo_rows)
        inputs.extend(photo_inputs)
    faces = [face for face, _ in inputs] if embedding_chips else inputs
    stacked = np.stack(faces) if faces else np.empty((0, *spec.shape), dtype=np.uint8)
    if not embedding_chips:
        return PreparedFaces(rows, stacked)
    from face_pipeline.embedding.descriptor import CHIP_SIZE  # noqa: PLC0415

    chips = np.stack([chip for _, chip in inputs]) if inputs else np.empty((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    return PreparedFaces(rows, stacked, chips)
