"""Seeded hostile inputs for the fuzz tests: mutated photos, odd names, links out of the folder.

Every photo starts as a generated face (fake_faces.face_like) saved as JPEG, PNG, WebP or BMP;
``mutated_photos`` then flips bytes, truncates, rewrites header sizes, adds huge EXIF blocks, or
saves it animated, multi-frame, 16-bit, CMYK or empty.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fake_faces import encode, face_like, png_claiming_size
from PIL import Image

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 24)):
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
    return bytes(mutated)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(1, len(data))]


def absurd_bmp_size(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    mutated[18:26] = struct.pack("<ii", rng.choice([65_535, 2**31 - 1, -1]), rng.choice([65_535, -(2**31)]))
    return bytes(mutated)


def absurd_jpeg_size(data: bytes, rng: random.Random) -> bytes:
    """The first SOF marker's height and width set to 65,535 or 0."""
    mutated = bytearray(data)
    start = next((i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2)), None)
    if start is not None:
        mutated[start + 5 : start + 9] = struct.pack(">HH", rng.choice([65_535, 0]), rng.choice([65_535, 1]))
    return bytes(mutated)


def huge_exif(image: Image.Image, rng: random.Random) -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * rng.choice([60_000, 65_000])  # ImageDescription, near the JPEG segment limit
    exif[0x0112] = rng.choice([1, 3, 6, 8, 9, 0])  # Orientation, including invalid values
    return encode(image, "JPEG", exif=exif.tobytes())


def animated(image: Image.Image, rng: random.Random) -> bytes:
    frames = [image.rotate(angle) for angle in range(0, 360, rng.choice([45, 90, 120]))]
    fmt = rng.choice(["WEBP", "PNG"])  # animated WebP, APNG
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=40, loop=0)
    return buffer.getvalue()


def sixteen_bit(image: Image.Image, rng: random.Random) -> bytes:
    values = np.asarray(image.convert("L"), dtype=np.uint16) * rng.choice([1, 257, 64])
    return encode(Image.fromarray(values), "PNG")  # uint16: mode I;16


def cmyk(image: Image.Image, rng: random.Random) -> bytes:
    return encode(image.convert("CMYK"), "JPEG", quality=rng.randint(20, 95))


PLAIN_MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "flipped bytes": flip_bytes,
    "truncated": truncate,
}
IMAGE_MUTATIONS: dict[str, Callable[[Image.Image, random.Random], bytes]] = {
    "huge EXIF": huge_exif,
    "animated": animated,
    "16-bit": sixteen_bit,
    "CMYK": cmyk,
}


def mutated_photos(count: int, seed: int) -> list[tuple[str, str, bytes]]:
    """``(kind, extension, bytes)`` for ``count`` seeded hostile photos, plus a few fixed extremes."""
    rng = random.Random(seed)
    photos = [
        ("empty file", ".jpg", b""),
        ("absurd PNG size", ".png", png_claiming_size(100_000, 100_000)),
        ("zero PNG size", ".png", png_claiming_size(0, 10)),
    ]
    for index in range(count):
        image = face_like(seed * 1000 + index, rng.choice([48, 96, 160]))
        fmt = rng.choice(list(FORMATS))
        data = encode(image, fmt)
        choice = rng.randrange(4)
        if choice == 0:
            kind = rng.choice(list(PLAIN_MUTATIONS))
            photos.append((f"{kind} {fmt}", FORMATS[fmt], PLAIN_MUTATIONS[kind](data, rng)))
        elif choice == 1:
            kind = rng.choice(list(IMAGE_MUTATIONS))
            extension = ".webp" if kind == "animated" else ".png" if kind == "16-bit" else ".jpg"
            photos.append((kind, extension, IMAGE_MUTATIONS[kind](image, rng)))
        elif choice == 2 and fmt in ("BMP", "JPEG"):
            mutate = absurd_bmp_size if fmt == "BMP" else absurd_jpeg_size
            photos.append((f"absurd {fmt} size", FORMATS[fmt], mutate(data, rng)))
        else:
            photos.append((f"valid {fmt}", FORMATS[fmt], data))
    return photos


def odd_name(index: int, extension: str, rng: random.Random) -> str:
    stem = rng.choice(
        [
            f"with space {index}",
            f"-{index}-leading-dash",
            f"--{index}",
            f"ünïcødé_顔_{index}",
            f"{index}_" + "l" * 200,
            f"{index}.tar.gz.",
            f"{index}'quote\"s",
            f"{index};rm -rf x",
            f"{index}",
        ]
    )
    return stem + (extension.upper() if rng.random() < 0.2 else extension)


def hostile_folder(root: Path, count: int, seed: int) -> dict[str, str]:
    """A folder ``root/photos`` of mutated photos under odd names, links pointing outside it and in
    loops, and a file outside it (``root/outside``) that must never be read. Returns
    ``{name inside the folder: kind}``."""
    rng = random.Random(seed)
    folder, outside = root / "photos", root / "outside"
    folder.mkdir(parents=True)
    outside.mkdir()
    secret = outside / "secret.jpg"
    secret.write_bytes(encode(face_like(999, 96)))
    kinds = {}
    for index, (kind, extension, data) in enumerate(mutated_photos(count, seed)):
        name = odd_name(index, extension, rng)
        (folder / name).write_bytes(data)
        kinds[name] = kind
    links = {
        "link_out.jpg": (secret, "link outside the folder"),
        "link_loop.jpg": (folder / "link_loop.jpg", "link loop"),
        "dir_out": (outside, "folder link outside"),
        "dir_loop": (folder, "folder link loop"),
        "dangling.png": (root / "missing.png", "dangling link"),
    }
    for name, (target, kind) in links.items():
        os.symlink(target, folder / name)
        kinds[name] = kind
    sub = folder / "sub"
    sub.mkdir()
    os.symlink(Path("..") / ".." / "outside" / "secret.jpg", sub / "relative_out.jpg")
    kinds["sub/relative_out.jpg"] = "relative link outside the folder"
    return kinds


def reads_outside(folder: Path, root: Path) -> Callable[[], list[str]]:
    """Start recording every file opened under ``root`` but outside ``folder`` (an audit hook, for
    the rest of this process; it records only while the returned function has not been called)."""
    import sys  # noqa: PLC0415

    inside, base = os.path.realpath(folder), os.path.realpath(root)
    opened: list[str] = []
    recording = [True]

    def hook(event: str, args: tuple) -> None:
        if recording[0] and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            path = os.path.realpath(os.fsdecode(args[0]))
            if path.startswith(base + os.sep) and not path.startswith(inside + os.sep):
                opened.append(path)

    sys.addaudithook(hook)

    def stop() -> list[str]:
        recording[0] = False
        return opened

    return stop


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail with ``TimeoutError`` instead of hanging past ``seconds`` (main thread, Unix)."""

    def fail(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
