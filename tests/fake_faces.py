"""Generated face-like test images (never real faces) and UTKFace-style names."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def face_like(seed: int, size: int = 64, brightness: int | None = None, mode: str = "RGB") -> Image.Image:
    """A face-ish picture: skin-toned ellipse, two eyes, a mouth, noisy background.

    With ``brightness`` the whole picture is one flat grey level instead, so a
    test can recover which label a preprocessed row came from.
    """
    rng = np.random.default_rng(seed)
    if brightness is not None:
        return Image.new(mode, (size, size), (brightness,) * len(mode) if len(mode) > 1 else brightness)
    background = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    skin = tuple(int(c) for c in rng.integers(120, 230, 3))
    margin = size // 8
    draw.ellipse([margin, margin // 2, size - margin, size - margin // 2], fill=skin)
    eye = size // 12
    for x in (size // 3, 2 * size // 3):
        draw.ellipse([x - eye, size * 2 // 5 - eye, x + eye, size * 2 // 5 + eye], fill=(30, 30, 30))
    draw.line([size // 3, size * 7 // 10, 2 * size // 3, size * 7 // 10], fill=(120, 20, 20), width=max(1, size // 20))
    return image.convert(mode)


def encode(image: Image.Image, fmt: str = "JPEG", **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def utkface_name(age: int, gender: int, race: int | None, index: int) -> str:
    stamp = f"20170116{index:09d}"
    fields = [str(age), str(gender)] + ([] if race is None else [str(race)]) + [stamp]
    return "_".join(fields) + ".jpg.chip.jpg"


def write_utkface_folder(folder: Path, count: int, size: int = 64, seed: int = 0) -> list[dict]:
    """``count`` good images with varied labels; returns their labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        age, gender, race = int(rng.integers(1, 90)), index % 2, int(rng.integers(0, 5))
        name = utkface_name(age, gender, race, index)
        (folder / name).write_bytes(encode(face_like(seed * 10_000 + index, size)))
        rows.append({"image_id": name, "age": age, "gender": gender, "race": race})
    return rows


def truncated_jpeg(seed: int = 1) -> bytes:
    data = encode(face_like(seed, 96), quality=95)
    return data[: len(data) // 2]


def corrupt_jpeg(seed: int = 2) -> bytes:
    data = bytearray(encode(face_like(seed, 96), quality=95))
    header_end = 700  # keep the headers so the file still opens as a JPEG
    data[header_end:-2] = bytes((b * 7 + 13) % 256 for b in data[header_end:-2])
    return bytes(data)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8  # after the PNG signature
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    chunk = bytes(data[ihdr + 4 : ihdr + 8 + 13])
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", zlib.crc32(chunk))
    return bytes(data)
