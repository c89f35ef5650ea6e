"""Pictures of the answers: every face's box and label drawn on a copy of its photo, at the photo's size.

A label reads ``F 0.97 · 34 (28-41)``: the gender's initial, the probability of that answer
(calibrated), the age and its range; ``?`` after the initial marks a ``gender_uncertain`` face.
The font is DejaVu Sans as matplotlib ships it (no system font is assumed), its size follows the
face's box, and each label sits on a dark band under a light box with a dark outline, so it
reads on light and dark photos alike.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from face_pipeline.imaging.decoding import ImageSpec, load_image

BOX_COLOUR = (255, 214, 0)  # bright yellow, outlined in black: visible on any background
OUTLINE = (0, 0, 0)
BAND = (0, 0, 0, 170)  # the label's background, partly transparent
TEXT = (255, 255, 255)


@cache
def _font_file() -> str:
    import matplotlib  # noqa: PLC0415 - only where pictures are drawn

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf")


def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(_font_file(), max(10, int(size)))


def annotate(
    data: bytes, rows: pd.DataFrame, label: Callable[[pd.Series], str], max_pixels: int = ImageSpec().max_pixels
) -> Image.Image:
    """The photo ``data`` at its own size (EXIF orientation applied, as prediction sees it) with each
    ``ok`` row's box and ``label(row)`` (``tasks.answers_text(row, short=True)``: ``F 0.97 · 34
    (28-41)``); a photo without one gets a note saying why."""
    picture = Image.fromarray(load_image(data, ImageSpec(color_mode="rgb", max_pixels=max_pixels))).convert("RGBA")
    overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    faces = rows[rows["status"] == "ok"]
    for _, row in faces.iterrows():
        x, y, size = (int(row[key]) for key in ("box_x", "box_y", "box_size"))
        width = max(2, size // 60)
        draw.rectangle((x - width, y - width, x + size + width, y + size + width), outline=OUTLINE, width=width)
        draw.rectangle((x, y, x + size, y + size), outline=BOX_COLOUR, width=width)
        _label(draw, label(row), x, y + size + width, size, picture.size)
    if faces.empty:
        reason = rows["reason"].dropna().iloc[0] if rows["reason"].notna().any() else "no face detected"
        _label(draw, str(reason), 0, 0, min(picture.size) // 2, picture.size)
    return Image.alpha_composite(picture, overlay).convert("RGB")


def _label(draw: ImageDraw.ImageDraw, text: str, x: int, y: int, box: int, image_size: tuple[int, int]) -> None:
    """``text`` on a dark band under (or, at the bottom edge, over) a box ``box`` pixels wide."""
    lettering = font(max(box // 6, min(image_size) // 32))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=lettering)
    pad = max(2, (bottom - top) // 5)
    width, height = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(0, x), max(0, image_size[0] - width))
    if y + height > image_size[1]:  # no room below the box: inside it, at the bottom
        y = max(0, y - height - (box // 20))
    draw.rectangle((x, y, x + width, y + height), fill=BAND)
    draw.text((x + pad - left, y + pad - top), text, font=lettering, fill=TEXT)


def encoded(picture: Image.Image, name: str) -> bytes:
    """``picture`` in the format ``name``'s extension asks for (JPEG for ``.jpg``/``.jpeg``, else PNG)."""
    buffer = io.BytesIO()
    if Path(name).suffix.lower() in (".jpg", ".jpeg"):
        picture.save(buffer, "JPEG", quality=92)
    else:
        picture.save(buffer, "PNG")
    return buffer.getvalue()


def annotated_name(name: str, taken: set[str]) -> str:
    """The picture's file name for the photo ``name``: its own (PNG unless it was a JPEG or PNG),
    with ``-1``, ``-2``... where a photo of another folder already took it; added to ``taken``."""
    path = Path(name)
    suffix = path.suffix if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
    candidate, number = f"{path.stem}{suffix}", 0
    while candidate in taken:
        number += 1
        candidate = f"{path.stem}-{number}{suffix}"
    taken.add(candidate)
    return candidate


class Annotated(NamedTuple):
    """One photo of a prediction table: its picture and the picture's file name, or why there is none."""

    file: str
    name: str | None
    picture: Image.Image | None
    reason: str | None


def annotated_photos(
    table: pd.DataFrame,
    photos: Mapping[str, Callable[[], bytes]],
    taken: set[str],
    label: Callable[[pd.Series], str],
    max_pixels: int = ImageSpec().max_pixels,
) -> Iterator[Annotated]:
    """Each photo of the prediction ``table`` (its rows by ``file``) drawn by ``annotate``, read
    again through its loader in ``photos``; a photo that could not be read, or drawn, comes with
    the reason instead, and the others go on. Names come from ``annotated_name`` (``taken``)."""
    for file, rows in table.groupby("file", sort=False):
        if (rows["status"] == "error").all():
            yield Annotated(str(file), None, None, str(rows["reason"].iloc[0]))
            continue
        try:
            picture = annotate(photos[file](), rows, label, max_pixels)
        except Exception as exc:  # noqa: BLE001 - one picture must not stop the others
            yield Annotated(str(file), None, None, f"{type(exc).__name__}: {exc}")
            continue
        yield Annotated(str(file), annotated_name(str(file), taken), picture, None)
