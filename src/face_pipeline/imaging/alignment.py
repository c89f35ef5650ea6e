"""Face alignment: warp a face so its landmarks sit where they sit on the training chips.

UTKFace's "aligned & cropped" chips place the eyes, nose and mouth at nearly fixed positions of
a 200x200 image. A detected face is mapped onto those positions by the similarity transform
(rotation, uniform scale, shift) that fits its landmarks best in the least-squares sense, and
the resulting chip then goes through the same ``face_input`` as a training image.

This module must stay free of TensorFlow imports: it runs in worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from face_pipeline.config import ConfigError, check_keys

Point = tuple[float, float]


@dataclass(frozen=True)
class ChipGeometry:
    """Where a chip of ``size`` x ``size`` pixels has each landmark, in pixels."""

    size: int
    landmarks: Mapping[str, Point]

    @classmethod
    def from_params(cls, params: Mapping, block: str = "predict.detection.chip") -> ChipGeometry:
        params = check_keys(params, {"size", "landmarks"}, block)
        landmarks = {name: (float(x), float(y)) for name, (x, y) in params["landmarks"].items()}
        if len(landmarks) < 2:
            raise ConfigError(f"{block}.landmarks needs at least two points (both eyes)")
        return cls(int(params["size"]), landmarks)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of the rotation + uniform scale + shift that best maps ``source`` onto ``target``.

    Least squares over all points (Umeyama's method, reflections excluded); two points map exactly.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    # Complex numbers make a 2-D similarity one multiplication: target = a * source + b.
    z_source = source_centred[:, 0] + 1j * source_centred[:, 1]
    z_target = target_centred[:, 0] + 1j * target_centred[:, 1]
    denominator = float(np.sum(np.abs(z_source) ** 2))
    if denominator < 1e-9:
        raise ValueError("landmarks coincide: no transform")
    a = np.sum(np.conj(z_source) * z_target) / denominator
    b = complex(*target_mean) - a * complex(*source_mean)
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def align(pixels: np.ndarray, landmarks: Mapping[str, Point], geometry: ChipGeometry) -> np.ndarray:
    """The chip of ``geometry.size`` pixels in which ``landmarks`` (image pixels) sit at the chip's positions.

    Only the landmarks that both know are used. Parts of the chip outside the photo repeat its
    edge pixels.
    """
    names = [name for name in geometry.landmarks if name in landmarks]
    if len(names) < 2:
        raise ValueError(f"need at least two of the landmarks {sorted(geometry.landmarks)}, got {sorted(landmarks)}")
    matrix = similarity_transform(
        np.array([landmarks[name] for name in names]), np.array([geometry.landmarks[name] for name in names])
    )
    return warp(pixels, matrix, geometry.size, cv2.BORDER_REPLICATE)


def warp(pixels: np.ndarray, matrix: np.ndarray, size: int, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """The ``size`` x ``size`` image that the 2x3 ``matrix`` maps ``pixels`` onto.

    Where the transform shrinks by 2x or more, the region the output covers is first
    block-averaged (as ``resize_square`` does), so the warp does not alias. ``border``: how the
    output is filled outside the photo (black, or its edge pixels repeated).
    """
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    factor = int(1 / scale) if scale < 0.5 else 1
    if factor > 1:
        pixels, matrix = _shrink_region(pixels, matrix, size, factor)
    return cv2.warpAffine(pixels, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def _shrink_region(pixels: np.ndarray, matrix: np.ndarray, size: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``pixels`` the chip covers, shrunk ``factor`` times, and the matrix adjusted to it."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse.T
    height, width = pixels.shape[:2]
    left = int(np.clip(np.floor(corners[:, 0].min()) - factor, 0, width - 1))
    top = int(np.clip(np.floor(corners[:, 1].min()) - factor, 0, height - 1))
    right = int(np.clip(np.ceil(corners[:, 0].max()) + factor, left + 1, width))
    bottom = int(np.clip(np.ceil(corners[:, 1].max()) + factor, top + 1, height))
    # Whole blocks only, so INTER_AREA averages exactly factor x factor pixels each.
    right = left + max(factor, (right - left) // factor * factor)
    bottom = top + max(factor, (bottom - top) // factor * factor)
    region = pixels[top:bottom, left:right]
    if region.shape[0] < factor or region.shape[1] < factor:  # the face is (nearly) outside the photo
        return pixels, matrix
    small = cv2.resize(region, (region.shape[1] // factor, region.shape[0] // factor), interpolation=cv2.INTER_AREA)
    # A pixel centre s of the small image lies at origin + factor * (s + 0.5) - 0.5 in the photo.
    to_photo = np.array([[factor, 0, left + 0.5 * factor - 0.5], [0, factor, top + 0.5 * factor - 0.5], [0, 0, 1]])
    return small, matrix @ to_photo
