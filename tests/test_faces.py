"""Face detection on a real photo that scikit-image ships (NASA's portrait of Eileen Collins)."""

import numpy as np
import pytest
from PIL import Image
from skimage import data

from face_pipeline.faces import DetectionSettings, FaceBox, detect, expand, find_faces

ASTRONAUT = data.astronaut()  # 512x512 RGB, one face around x 180-270, y 70-160


def test_the_cascade_finds_the_astronauts_face():
    [(x, y, w, h)] = detect(ASTRONAUT, DetectionSettings())
    center_x, center_y = x + w / 2, y + h / 2
    assert 190 < center_x < 260
    assert 90 < center_y < 150
    assert 60 < w < 160


def test_full_photo_gives_one_face_with_margin():
    [box] = find_faces(ASTRONAUT, DetectionSettings(mode="auto", margin=0.4))
    [(x, y, w, _)] = detect(ASTRONAUT, DetectionSettings())
    assert box.size == round(w * 1.8)
    assert box.x <= x and box.y <= y
    crop = box.crop(ASTRONAUT)
    assert crop.shape[:2] == (box.size, box.size)


def test_a_ready_crop_is_one_face_in_auto_mode():
    crop = np.asarray(Image.fromarray(ASTRONAUT).crop((160, 50, 300, 190)))
    assert find_faces(crop, DetectionSettings(mode="auto")) == [FaceBox(0, 0, 140)]


def test_no_face_in_a_large_photo_without_one():
    noise = np.random.default_rng(0).integers(0, 255, (600, 800), dtype=np.uint8)
    assert find_faces(noise, DetectionSettings(mode="auto")) == []
    assert find_faces(noise, DetectionSettings(mode="always")) == []


def test_never_mode_uses_the_centre_square():
    assert find_faces(np.zeros((100, 300), np.uint8), DetectionSettings(mode="never")) == [FaceBox(100, 0, 100)]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((40, 40, 20, 20), FaceBox(32, 32, 36)),  # margin 0.4 on each side
        ((0, 0, 20, 20), FaceBox(0, 0, 36)),  # pushed back inside the image
        ((90, 10, 10, 30), FaceBox(46, 0, 54)),  # square, clipped at the right and top
    ],
)
def test_expand(box, expected):
    assert expand(box, 0.4, height=100, width=100) == expected


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="detect_faces"):
        DetectionSettings.from_params({"mode": "sometimes"})
