"""dlib's face-recognition ResNet in Keras against dlib itself, on chips of a real photo.

Needs dlib (dlib-bin) and face-recognition-models, which are not project dependencies: skipped
without them. Uses the 5-point landmark model only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

dlib = pytest.importorskip("dlib")
face_recognition_models = pytest.importorskip("face_recognition_models")
skimage_data = pytest.importorskip("skimage.data")
skimage_transform = pytest.importorskip("skimage.transform")

from face_pipeline.embedding.dlib_file import read_dlib_network  # noqa: E402 - after the skips
from face_pipeline.embedding.network import DESCRIPTOR_SIZE, INPUT_SIZE, build_embedding_network  # noqa: E402 - after the skips

TOLERANCE = 1e-4


def photo_variants(photo: np.ndarray) -> dict[str, np.ndarray]:
    """The photo flipped, shifted, rotated and brighter or darker: each gives a different chip."""
    variants = {"original": photo, "mirrored": photo[:, ::-1]}
    variants["shifted"] = np.roll(photo, (5, -7), axis=(0, 1))
    for degrees in (-9, 6):
        rotated = skimage_transform.rotate(photo, degrees, preserve_range=True, mode="edge")
        variants[f"rotated {degrees}"] = np.round(rotated).astype(np.uint8)
    for factor in (0.6, 1.3):
        variants[f"brightness x{factor}"] = np.clip(photo * factor, 0, 255).astype(np.uint8)
    variants["half size"] = np.round(skimage_transform.rescale(photo, 0.5, channel_axis=2, preserve_range=True))
    return {name: np.ascontiguousarray(image, dtype=np.uint8) for name, image in variants.items()}


@pytest.fixture(scope="module")
def chips() -> dict[str, np.ndarray]:
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    chips = {}
    for name, image in photo_variants(skimage_data.astronaut()).items():
        faces = detector(image, 1)
        assert faces, f"no face found in the {name} photo"
        face = max(faces, key=lambda rectangle: rectangle.area())
        chips[name] = dlib.get_face_chip(image, landmarks(image, face), size=INPUT_SIZE, padding=0.25)
    return chips


@pytest.fixture(scope="module")
def dlib_descriptors(chips: dict[str, np.ndarray]) -> np.ndarray:
    network = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    return np.array([np.array(network.compute_face_descriptor(chip)) for chip in chips.values()])


def test_layers_read_from_dlib_file() -> None:
    layers = read_dlib_network(face_recognition_models.face_recognition_model_location())
    kinds = [layer.kind for layer in layers]
    assert kinds[0] == "input_rgb_image_sized"
    assert kinds[-2:] == ["fc", "loss_metric"]
    assert kinds.count("con") == kinds.count("affine") == 29
    assert kinds.count("add_prev") == 14
    assert layers[0].settings["average_rgb"] == pytest.approx([122.782, 117.001, 104.298])
    assert layers[1].weights["filters"].shape == (32, 3, 7, 7)
    assert layers[-2].weights["weights"].shape == (256, DESCRIPTOR_SIZE)


def test_keras_network_gives_dlib_descriptors(
    chips: dict[str, np.ndarray], dlib_descriptors: np.ndarray, tmp_path: Path
) -> None:
    model = build_embedding_network(cache_dir=tmp_path)
    assert tuple(model.input.shape) == (None, INPUT_SIZE, INPUT_SIZE, 3)
    assert tuple(model.output.shape) == (None, DESCRIPTOR_SIZE)
    batch = np.stack(list(chips.values()))
    descriptors = model.predict(batch.astype(np.float32), batch_size=4, verbose=0)
    assert descriptors.dtype == np.float32
    differences = np.abs(descriptors - dlib_descriptors).max(axis=1)
    assert differences.max() <= TOLERANCE, dict(zip(chips, differences, strict=True))
    # The chips really differ, so the comparison covers more than one input.
    distances = np.linalg.norm(dlib_descriptors[:, None] - dlib_descriptors[None], axis=2)
    assert distances[np.triu_indices(len(chips), 1)].min() > 1e-3

    # The second build loads the cached .keras file (safe mode: built-in layers only).
    assert len(list(tmp_path.glob("*.keras"))) == 1
    reloaded = build_embedding_network(cache_dir=tmp_path)
    assert reloaded is not model
    np.testing.assert_array_equal(reloaded.predict(batch, verbose=0), model.predict(batch, verbose=0))


def test_module_imports_without_tensorflow() -> None:
    import subprocess  # noqa: PLC0415

    code = "import sys, face_pipeline.embedding.network; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
