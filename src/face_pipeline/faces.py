"""Face detection before the networks: OpenCV's Haar cascade, which ships inside opencv-python.

The networks were trained on UTKFace's "aligned & cropped" faces, which show the whole head with
some margin. A detected box is therefore enlarged by ``margin`` on every side and made square
before it goes through the same ``face_input`` as the training images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

DETECT_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class FaceBox:
    """A face's square crop in image pixels: left, top, side length."""

    x: int
    y: int
    size: int

    def crop(self, pixels: np.ndarray) -> np.ndarray:
        return pixels[self.y : self.y + self.size, self.x : self.x + self.size]


@dataclass(frozen=True)
class DetectionSettings:
    mode: str = "auto"
    margin: float = 0.4
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_face_fraction: float = 0.05
    crop_face_fraction: float = 0.25
    crop_max_side: int = 400
    max_side: int = 1024

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DetectionSettings:
        settings = cls(**{key: params[key] for key in cls.__dataclass_fields__ if key in params})
        if settings.mode not in DETECT_MODES:
            raise ValueError(f"detect_faces must be one of {DETECT_MODES}, got {settings.mode!r}")
        return settings


@functools.cache
def _cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's face cascade could not be loaded from {path}")
    return cascade


def _gray(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)


def detect(pixels: np.ndarray, settings: DetectionSettings) -> list[tuple[int, int, int, int]]:
    """Raw detections ``(x, y, w, h)``, largest first."""
    gray = cv2.equalizeHist(_gray(pixels))
    smallest = max(20, int(min(gray.shape) * settings.min_face_fraction))
    boxes = _cascade().detectMultiScale(
        gray, scaleFactor=settings.scale_factor, minNeighbors=settings.min_neighbors, minSize=(smallest, smallest)
    )
    return sorted((tuple(int(v) for v in box) for box in boxes), key=lambda b: -b[2] * b[3])


def expand(box: tuple[int, int, int, int], margin: float, height: int, width: int) -> FaceBox:
    """Square box around ``box`` with ``margin`` x its size added on each side, kept inside the image."""
    x, y, w, h = box
    side = min(round(max(w, h) * (1 + 2 * margin)), height, width)
    center_x, center_y = x + w / 2, y + h / 2
    left = round(min(max(center_x - side / 2, 0), width - side))
    top = round(min(max(center_y - side / 2, 0), height - side))
    return FaceBox(left, top, side)


def find_faces(pixels: np.ndarray, settings: DetectionSettings) -> list[FaceBox]:
    """Where the faces are.

    ``never``: the whole image is one face. ``always``: only detected faces (maybe none).
    ``auto``: detected faces, except that an image which already is a face crop counts as one
    face: near-square, and either one face fills at least ``crop_face_fraction`` of it, or no
    face is found and it is no larger than ``crop_max_side`` (the detector often misses faces
    that fill the whole frame).
    """
    height, width = pixels.shape[:2]
    side = min(height, width)
    whole = FaceBox((width - side) // 2, (height - side) // 2, side)
    if settings.mode == "never":
        return [whole]
    boxes = detect(pixels, settings)
    if settings.mode == "auto":
        largest = boxes[0][2] * boxes[0][3] if boxes else 0
        square = 0.75 <= width / height <= 1.33
        small = side <= settings.crop_max_side
        if square and ((not boxes and small) or largest >= settings.crop_face_fraction * width * height):
            return [whole]
    return [expand(box, settings.margin, height, width) for box in boxes]
