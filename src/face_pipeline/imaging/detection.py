"""Face detection before the networks: MediaPipe's BlazeFace on LiteRT, then alignment.

BlazeFace finds each face with six landmarks (eye centres, nose tip, mouth centre, ear tragions).
``find_faces`` maps every detected face onto the geometry of the training chips (see
``alignment``), so a face in any photo reaches the networks framed as UTKFace's chips are. The
model files ship inside this package (``assets/``): nothing is downloaded at run time.

This module must stay free of TensorFlow imports: it runs in worker processes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from face_pipeline.config import check_keys, require_choice, require_range
from face_pipeline.imaging.alignment import ChipGeometry, Point, align, warp

DETECT_MODES = ("auto", "always", "never")
ASSETS = Path(__file__).parent / "assets"
# Landmark names in BlazeFace's output order, for an un-mirrored photo: "left" is image-left
# (the subject's right).
LANDMARKS = ("eye_left", "eye_right", "nose", "mouth", "ear_left", "ear_right")
# Where BlazeFace puts those landmarks on UTKFace's 200x200 chips: the median over 2,000 chips
# (bench/chip_geometry.py: 1,999 found, the eye line at +0.5 deg, levelled here as dlib and
# MTCNN both measure it level). The ears are left out: often hidden, and far off on turned heads.
UTKFACE_CHIP = {
    "size": 200,
    "landmarks": {
        "eye_left": (58.8, 59.8),
        "eye_right": (138.2, 59.8),
        "nose": (98.6, 103.7),
        "mouth": (97.9, 142.4),
    },
}


@dataclass(frozen=True)
class DetectorModel:
    """One BlazeFace variant: its file and the SSD anchor layout its outputs refer to."""

    file: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: int


# From MediaPipe's face_detection_{short,full}_range_common.pbtxt.
DETECTOR_MODELS = {
    "short_range": DetectorModel("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2),
    "full_range": DetectorModel("face_detection_full_range.tflite", 192, (4,), 1),
}


@dataclass(frozen=True)
class FaceBox:
    """A face's square crop in image pixels: left, top, side length."""

    x: int
    y: int
    size: int

    def crop(self, pixels: np.ndarray) -> np.ndarray:
        return pixels[self.y : self.y + self.size, self.x : self.x + self.size]


@dataclass(frozen=True)
class Face:
    """A face found in a photo: its square box, the detector's score and its landmarks in pixels.

    A face without landmarks is a whole image taken as one face (``never`` mode, or a face crop in
    which ``auto`` found none): it is centre-cropped instead of aligned.
    """

    box: FaceBox
    score: float | None = None
    landmarks: Mapping[str, Point] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectionSettings:
    """How faces are found in a photo and framed for the networks (``predict.detection``)."""

    mode: str = "auto"
    model: str = "short_range"
    min_score: float = 0.5
    overlap: float = 0.3
    border: float = 0.15
    crop_border: float = 0.435
    context: float = 2.0
    context_tolerance: float = 0.2
    crop_max_side: int = 400
    max_side: int = 1024
    chip: ChipGeometry = field(default_factory=lambda: ChipGeometry.from_params(UTKFACE_CHIP))

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "predict.detection") -> DetectionSettings:
        values = check_keys(params, cls.__dataclass_fields__, block)
        if "chip" in values:
            values["chip"] = ChipGeometry.from_params(values["chip"], f"{block}.chip")
        settings = cls(**values)
        require_choice(settings.mode, DETECT_MODES, f"{block}.mode")
        require_choice(settings.model, sorted(DETECTOR_MODELS), f"{block}.model")
        for name in ("border", "crop_border"):
            require_range(getattr(settings, name), f"{block}.{name}", at_least=0)
        require_range(settings.context_tolerance, f"{block}.context_tolerance", at_least=0, below=1)
        return settings

    def to_params(self) -> dict[str, Any]:
        """The settings as plain values (what ``from_params`` reads back), for saving with a model."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "chip"}
        chip = {"size": self.chip.size, "landmarks": {k: list(v) for k, v in self.chip.landmarks.items()}}
        return {**values, "chip": chip}


def _anchors(model: DetectorModel) -> np.ndarray:
    """Anchor centres ``(N, 2)`` in [0, 1], in the order of the model's outputs.

    Consecutive layers of one stride share a grid: each cell holds all their anchors in a row.
    """
    centres = []
    for stride, layers in itertools.groupby(model.strides):
        cells = model.input_size // stride
        grid = (np.stack(np.meshgrid(np.arange(cells), np.arange(cells)), axis=-1).reshape(-1, 2) + 0.5) / cells
        centres.append(np.repeat(grid, model.anchors_per_cell * len(list(layers)), axis=0))
    return np.concatenate(centres).astype(np.float32)


class BlazeFace:
    """A BlazeFace model on the LiteRT interpreter. Not thread-safe: see ``detector``."""

    def __init__(self, model: DetectorModel) -> None:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - only where faces are detected

        self.model = model
        # One thread: photos are searched in parallel by worker processes or server threads.
        self.interpreter = Interpreter(model_path=str(ASSETS / model.file), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        # Outputs: scores (1, N, 1) and box + landmark offsets (1, N, 16).
        scores, offsets = sorted(self.interpreter.get_output_details(), key=lambda output: output["shape"][-1])
        self.scores_index, self.offsets_index = scores["index"], offsets["index"]
        self.anchors = _anchors(model)

    def __call__(self, rgb: np.ndarray, min_score: float, overlap: float, square: FaceBox | None = None) -> list[Face]:
        """Faces in an ``(H, W, 3)`` uint8 RGB image, most confident first.

        The network sees ``square`` (default: the whole photo, letterboxed into a square as
        MediaPipe feeds it), black where it leaves the photo.
        """
        height, width = rgb.shape[:2]
        if square is None:
            side = max(height, width)
            square = FaceBox((width - side) // 2, (height - side) // 2, side)
        size = self.model.input_size
        scale = size / square.size
        # Pixel centres sit at whole coordinates: the input's pixel i covers photo pixels from
        # square.x + i / scale to square.x + (i + 1) / scale.
        shift = 0.5 * scale - 0.5
        to_input = np.array([[scale, 0, shift - square.x * scale], [0, scale, shift - square.y * scale]])
        pixels = warp(rgb, to_input, size)
        self.interpreter.set_tensor(self.input_index, (pixels.astype(np.float32) / 127.5 - 1.0)[None])
        self.interpreter.invoke()
        logits = self.interpreter.get_tensor(self.scores_index)[0, :, 0]
        candidates = np.flatnonzero(logits > np.log(min_score / (1 - min_score)))
        if not len(candidates):
            return []
        scores = 1 / (1 + np.exp(-np.clip(logits[candidates], -80, 80)))
        offsets = self.interpreter.get_tensor(self.offsets_index)[0, candidates].reshape(-1, 8, 2) / size
        anchors = self.anchors[candidates][:, None, :]
        centres, extents = offsets[:, 0] + anchors[:, 0], offsets[:, 1]
        origin = np.array([square.x, square.y]) - 0.5  # the model's 0 is the square's outer edge
        corners = np.concatenate([centres - extents / 2, centres + extents / 2], axis=1)
        boxes = corners * square.size + np.concatenate([origin, origin])
        points = (offsets[:, 2:] + anchors) * square.size + origin
        return [_face(box, score, landmarks) for box, landmarks, score in _blend(boxes, points, scores, overlap)]


def _blend(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, overlap: float):
    """MediaPipe's weighted non-maximum suppression: overlapping detections are averaged by score."""
    order = np.argsort(-scores)
    while len(order):
        best = boxes[order[0]]
        top_left = np.maximum(best[:2], boxes[order, :2])
        bottom_right = np.minimum(best[2:], boxes[order, 2:])
        intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        areas = np.prod(boxes[order, 2:] - boxes[order, :2], axis=1)
        iou = intersection / (areas[0] + areas - intersection + 1e-9)
        group, weights = order[iou > overlap], scores[order[iou > overlap]]
        yield (
            (boxes[group] * weights[:, None]).sum(0) / weights.sum(),
            (points[group] * weights[:, None, None]).sum(0) / weights.sum(),
            float(scores[order[0]]),
        )
        order = order[iou <= overlap]


def _face(box: np.ndarray, score: float, points: np.ndarray) -> Face:
    landmarks = dict(zip(LANDMARKS, (tuple(map(float, point)) for point in points), strict=True))
    if landmarks["eye_left"][0] > landmarks["eye_right"][0]:  # a mirrored or upside-down face
        landmarks["eye_left"], landmarks["eye_right"] = landmarks["eye_right"], landmarks["eye_left"]
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    square = FaceBox(round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2), round(side))
    return Face(square, score, landmarks)


_local = threading.local()


def detector(model: str) -> BlazeFace:
    """This thread's detector: LiteRT interpreters must not be shared between threads."""
    cache = _local.__dict__.setdefault("detectors", {})
    if model not in cache:
        cache[model] = BlazeFace(DETECTOR_MODELS[model])
    return cache[model]


def whole_image(pixels: np.ndarray) -> Face:
    """The image's centred square as one face, without landmarks."""
    height, width = pixels.shape[:2]
    side = min(height, width)
    return Face(FaceBox((width - side) // 2, (height - side) // 2, side))


def find_faces(rgb: np.ndarray, settings: DetectionSettings) -> list[Face]:
    """The faces in an ``(H, W, 3)`` uint8 RGB photo, most confident first.

    ``never``: the whole image is one face. ``always``: detected faces only (maybe none).
    ``auto``: detected faces; a near-square image no larger than ``crop_max_side`` in which
    none is found is taken as a face crop (one face, the whole image).
    """
    if settings.mode == "never":
        return [whole_image(rgb)]
    faces = detect(rgb, settings)
    if not faces and settings.mode == "auto" and crop_shaped(rgb, settings):
        return [whole_image(rgb)]
    return faces


def crop_shaped(rgb: np.ndarray, settings: DetectionSettings) -> bool:
    """Whether the image may be a face crop: near-square, its shorter side at most ``crop_max_side``."""
    height, width = rgb.shape[:2]
    return 0.75 <= width / height <= 1.33 and min(height, width) <= settings.crop_max_side


def detect(rgb: np.ndarray, settings: DetectionSettings) -> list[Face]:
    """Detected faces, each with landmarks measured again on a crop around it.

    BlazeFace places landmarks differently on a small face in a large photo than on a face that
    fills the frame, so each face is detected a second time in a square of ``context`` times its
    box: every face's landmarks then come from the same framing, the one the chip geometry was
    measured with. The first pass sees the photo with a ``border`` of black around it, so a face
    that fills a tight crop is still found. A crop-shaped image (``crop_shaped``) gets the wider
    ``crop_border`` first, which shows a face framed like the training chips at ``context``
    framing already (where that finds nothing, the photo is searched with ``border``). A face the
    first pass saw at that framing (its square within ``context_tolerance`` of ``context`` times
    the box, the box near its centre) keeps that pass's landmarks: a second pass would see nearly
    the same pixels.
    """
    model = detector(settings.model)
    height, width = rgb.shape[:2]
    borders = [settings.crop_border] if crop_shaped(rgb, settings) else []
    for border in [*borders, settings.border]:
        side = round(max(height, width) * (1 + 2 * border))
        whole = FaceBox((width - side) // 2, (height - side) // 2, side)
        found = model(rgb, settings.min_score, settings.overlap, whole)
        if found:
            break
    faces = []
    for first in found:
        window = round(first.box.size * settings.context)
        centre_x, centre_y = first.box.x + first.box.size / 2, first.box.y + first.box.size / 2
        # The first pass's square is centred on the photo: was the face already framed as the second
        # pass would frame it (its size, the face in the middle)?
        off_centre = max(abs(centre_x - width / 2), abs(centre_y - height / 2)) / first.box.size
        if max(abs(whole.size / window - 1), off_centre) <= settings.context_tolerance:
            faces.append(first)
            continue
        square = FaceBox(round(centre_x - window / 2), round(centre_y - window / 2), window)
        again = model(rgb, settings.min_score, settings.overlap, square)
        faces.append(Face(first.box, first.score, again[0].landmarks if again else first.landmarks))
    return faces


def face_chip(rgb: np.ndarray, face: Face, settings: DetectionSettings) -> np.ndarray:
    """The face framed like a training chip: aligned on its landmarks, or its box cropped if it has none."""
    if face.landmarks:
        return align(rgb, face.landmarks, settings.chip)
    return face.box.crop(rgb)
