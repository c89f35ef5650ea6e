"""Image decoding shared by ingestion, preprocessing and prediction.

``decode_face`` is the single place where a photo becomes the uint8 array the
networks see. Scaling to [0, 1] is *not* done here: it lives inside the Keras
models (a ``Rescaling`` layer), so training and serving cannot disagree.

This module must stay free of TensorFlow imports: it runs in worker processes.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from face_pipeline.config import read_block, require_choice

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_image_file(name: str) -> bool:
    """Whether a file name has an image extension (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


# Filters for the final (< 2x) shrink; enlarging always uses bilinear.
RESAMPLING = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "nearest": cv2.INTER_NEAREST,
}
COLOR_MODES = {"grayscale": ("L", 1), "rgb": ("RGB", 3)}
# OpenCV decodes baseline JPEGs (the vast majority of face photos) about twice as fast as
# PIL, straight to grayscale and at 1/2, 1/4 or 1/8 scale, applying EXIF orientation itself.
_JPEG_FLAGS = {
    ("L", 1): cv2.IMREAD_GRAYSCALE,
    ("L", 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    ("L", 4): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    ("L", 8): cv2.IMREAD_REDUCED_GRAYSCALE_8,
    ("RGB", 1): cv2.IMREAD_COLOR,
    ("RGB", 2): cv2.IMREAD_REDUCED_COLOR_2,
    ("RGB", 4): cv2.IMREAD_REDUCED_COLOR_4,
    ("RGB", 8): cv2.IMREAD_REDUCED_COLOR_8,
}


class ImageRejected(ValueError):
    """An input that cannot be used as an image; ``reason`` is short and stable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# Images with more pixels are refused before decoding (decompression bombs); conf sets it too.
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class ImageSpec:
    """How a photo becomes a network input."""

    size: int = 128
    color_mode: str = "grayscale"
    resample: str = "linear"
    max_pixels: int = MAX_PIXELS

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color_mode][1]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.channels)

    @classmethod
    def from_params(cls, params: dict, block: str = "preprocessing.image") -> ImageSpec:
        spec = read_block(cls, params, block)
        require_choice(spec.color_mode, sorted(COLOR_MODES), f"{block}.color_mode")
        require_choice(spec.resample, sorted(RESAMPLING), f"{block}.resample")
        return spec


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) and check the size before any pixel is decoded."""
    if not data:
        raise ImageRejected("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too many pixels", str(exc)) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageRejected("not an image", "no known image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("corrupt image", str(exc)) from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected("too many pixels", f"{width}x{height} exceeds {max_pixels:,} pixels")
    if width == 0 or height == 0:
        raise ImageRejected("corrupt image", f"size {width}x{height}")
    return image


def load_pixels(image: Image.Image) -> Image.Image:
    """Decode the pixel data, turning decoder failures into rejections."""
    try:
        image.load()
    except OSError as exc:
        message = str(exc)
        reason = "truncated image" if "truncated" in message or "broken data" in message else "corrupt image"
        raise ImageRejected(reason, message) from exc
    except (SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageRejected("corrupt image", str(exc)) from exc
    return image


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL mode (L, RGB, RGBA, P, CMYK, I;16, F, 1, ...) to ``mode``."""
    if image.mode == mode:
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit data: stretch the actual range to 0-255 instead of clipping.
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    elif image.mode in ("P", "PA", "LA", "RGBA") or "transparency" in image.info:
        # Composite transparent pixels on white rather than on arbitrary palette colours.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert(mode)


def resize_square(pixels: np.ndarray, size: int, resample: str = "linear") -> np.ndarray:
    """Centre-crop an ``(H, W[, C])`` array to a square and resize it to ``size``.

    Shrinking by 2x or more first averages whole blocks of pixels (cheap, and
    it prevents aliasing), so ``resample`` only ever bridges the last < 2x.
    """
    height, width = pixels.shape[:2]
    factor = max(1, min(height, width) // size)
    side = min(height, width) // factor * factor
    top, left = (height - side) // 2, (width - side) // 2
    square = pixels[top : top + side, left : left + side]
    if factor > 1:
        square = cv2.resize(square, (side // factor, side // factor), interpolation=cv2.INTER_AREA)
    if square.shape[0] == size:
        return np.ascontiguousarray(square)
    interpolation = RESAMPLING[resample] if square.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def _decode_jpeg(data: bytes, mode: str, shorter_side: int, size: int) -> np.ndarray | None:
    scale = next(s for s in (8, 4, 2, 1) if s == 1 or shorter_side // s >= size)
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _JPEG_FLAGS[mode, scale])
    if pixels is not None and mode == "RGB":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return pixels


def load_image(data: bytes, spec: ImageSpec, min_side: int | None = None) -> np.ndarray:
    """Bytes of a photo -> uint8 ``(H, W)`` or ``(H, W, 3)`` array in ``spec``'s colour mode.

    EXIF orientation is applied. With ``min_side``, JPEGs are decoded at 1/2, 1/4 or 1/8
    scale as long as the shorter side stays at least ``min_side`` pixels.
    """
    return load_scaled_image(data, spec, min_side)[0]


def load_scaled_image(data: bytes, spec: ImageSpec, min_side: int | None = None) -> tuple[np.ndarray, float]:
    """``load_image``, and how many of the photo's pixels one decoded pixel spans (1, 2, 4 or 8)."""
    mode, _ = COLOR_MODES[spec.color_mode]
    image = open_image(data, spec.max_pixels)
    longer_side = max(image.size)
    pixels = None
    if image.format == "JPEG" and image.mode in ("L", "RGB"):
        pixels = _decode_jpeg(data, mode, min(image.size), min_side or min(image.size))
    if pixels is None:  # other formats and modes, or a JPEG OpenCV could not read
        image = load_pixels(image)
        ImageOps.exif_transpose(image, in_place=True)
        pixels = np.asarray(to_mode(image, mode))
    return pixels, longer_side / max(pixels.shape[:2])


def convert_pixels(pixels: np.ndarray, color_mode: str) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 array in ``color_mode`` (grayscale: ITU-R 601 luma, as JPEG's)."""
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) if color_mode == "grayscale" else pixels


def face_input(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """A face (whole image or detected crop) -> the network input, shape ``spec.shape``."""
    return resize_square(pixels, spec.size, spec.resample).reshape(spec.shape)


def decode_face(data: bytes, spec: ImageSpec) -> np.ndarray:
    """Bytes of a face photo -> uint8 array of shape ``spec.shape``.

    EXIF orientation is applied, the image is centre-cropped to a square and
    resized. JPEGs are decoded at reduced scale when that loses nothing.
    """
    return face_input(load_image(data, spec, min_side=spec.size), spec)


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mode: str
    format: str


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Check that ``data`` is a whole, decodable image and describe it.

    Every byte is decoded (truncation and corruption only show up there), but
    JPEGs at 1/8 scale, which costs a fraction of a full decode.
    """
    image = open_image(data, max_pixels)
    info = ImageInfo(image.width, image.height, image.mode, image.format or "")
    if image.format == "JPEG":
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
    load_pixels(image)
    return info
