"""Pictures of the answers: boxes and labels drawn on a copy of each photo."""

import io

import numpy as np
import pandas as pd
import pytest
from fake_faces import encode
from PIL import Image
from skimage import data

from face_pipeline.imaging.annotate import annotate, annotated_name, encoded
from face_pipeline.tasks import face_label

PHOTO = encode(Image.fromarray(data.astronaut()), quality=90)


def row(**values) -> pd.Series:
    base = {"status": "ok", "box_x": 150, "box_y": 50, "box_size": 150, "reason": None}
    return pd.Series({**base, **values})


@pytest.mark.parametrize(
    ("values", "label"),
    [
        (
            {"gender": "female", "female_probability": 0.97, "age": 34.2, "age_low": 28.0, "age_high": 41.0},
            "F 0.97 · 34 (28-41)",
        ),
        (
            {"gender": "male", "female_probability": 0.1, "age": 61.6, "age_low": np.nan, "age_high": np.nan},
            "M 0.90 · 62",
        ),
        ({"gender": "female", "female_probability": 0.62, "gender_uncertain": True}, "F? 0.62"),
        ({"age": 7.0, "age_low": 5.0, "age_high": 9.0}, "7 (5-9)"),
    ],
)
def test_labels_read_gender_its_probability_age_and_range(values, label):
    assert face_label(row(**values)) == label


def test_a_face_is_boxed_and_labelled_at_the_photos_size():
    rows = pd.DataFrame([row(gender="female", female_probability=0.93, age=31.8, age_low=25.0, age_high=41.0)])
    picture = annotate(PHOTO, rows, face_label)
    assert picture.size == (512, 512)
    original = np.asarray(Image.open(io.BytesIO(PHOTO)).convert("RGB")).astype(int)
    drawn = np.asarray(picture).astype(int)
    changed = np.abs(drawn - original).sum(axis=2) > 60
    assert changed[50:200, 150].mean() > 0.9  # the box's left edge
    assert not changed[400:, :100].any()  # far from the face: untouched
    band = drawn[205:222, 152:300]  # the label under the box: light letters on a dark band
    assert (band.mean(axis=2) < 80).mean() > 0.3 and (band.mean(axis=2) > 200).mean() > 0.03


def test_a_photo_without_a_face_is_copied_with_a_note():
    blank = encode(Image.new("RGB", (300, 200), (250, 250, 250)), "PNG")
    rows = pd.DataFrame([{"status": "no face", "reason": "no face detected"}])
    picture = annotate(blank, rows, face_label)
    assert picture.size == (300, 200)
    pixels = np.asarray(picture)
    assert pixels[:20, :60].min() < 100  # the note's dark band, top left, readable on a white photo
    assert (pixels[150:, 200:] == 250).all()


def test_names_keep_the_photo_unless_taken():
    taken: set[str] = set()
    assert [annotated_name(name, taken) for name in ("a/x.jpg", "b/x.jpg", "c.webp", "d.PNG")] == [
        "x.jpg",
        "x-1.jpg",
        "c.png",
        "d.PNG",
    ]
    picture = Image.new("RGB", (8, 8))
    assert encoded(picture, "x.jpg")[:2] == b"\xff\xd8" and encoded(picture, "c.png")[:4] == b"\x89PNG"
