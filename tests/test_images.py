import numpy as np
import pytest
from fake_faces import corrupt_jpeg, encode, face_like, png_claiming_size, truncated_jpeg
from PIL import Image

from face_pipeline.imaging.decoding import ImageRejected, ImageSpec, decode_face, inspect_image, resize_square

GRAY = ImageSpec(size=32)
RGB = ImageSpec(size=32, color_mode="rgb")


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "JPEG"),
        ("RGB", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("I;16", "PNG"),
        ("1", "BMP"),
        ("RGB", "WEBP"),
    ],
)
@pytest.mark.parametrize("spec", [GRAY, RGB], ids=["grayscale", "rgb"])
def test_every_mode_decodes_to_the_network_shape(mode, fmt, spec):
    image = face_like(3, 80)
    image = image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)
    pixels = decode_face(encode(image, fmt), spec)
    assert pixels.shape == spec.shape
    assert pixels.dtype == np.uint8
    assert pixels.std() > 5  # a picture, not a blank


def test_sixteen_bit_range_is_stretched_not_clipped():
    values = np.linspace(1000, 3000, 64 * 64, dtype=np.uint16).reshape(64, 64)
    pixels = decode_face(encode(Image.fromarray(values), "PNG"), GRAY)
    assert pixels.min() < 10
    assert pixels.max() > 245


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert decode_face(encode(image, "PNG"), GRAY).min() == 255


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(fmt):
    # Dark left half, bright right half; orientation 6 means "rotate 90 degrees clockwise to display".
    array = np.zeros((64, 64), dtype=np.uint8)
    array[:, 32:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = decode_face(encode(Image.fromarray(array), fmt, exif=exif), GRAY)[..., 0].astype(int)
    top, bottom = pixels[:12].mean(), pixels[-12:].mean()
    assert top < 40
    assert bottom > 215


def test_grayscale_jpeg_matches_pil_luma():
    image = face_like(5, 128)
    data = encode(image, quality=95)
    pixels = decode_face(data, ImageSpec(size=128))[..., 0].astype(int)
    reference = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("L"), dtype=int)
    assert np.abs(pixels - reference).mean() < 2


def test_non_square_images_are_centre_cropped():
    array = np.zeros((100, 300), dtype=np.uint8)
    array[:, 100:200] = 255  # only the central square is white
    pixels = decode_face(encode(Image.fromarray(array), "PNG"), GRAY)
    assert pixels.min() > 200


def test_large_shrink_does_not_alias():
    checkerboard = (np.indices((1024, 1024)).sum(axis=0) % 2 * 255).astype(np.uint8)
    small = resize_square(checkerboard, 128)
    assert abs(float(small.mean()) - 127.5) < 2
    assert small.std() < 3


def test_small_images_are_enlarged():
    assert decode_face(encode(face_like(1, 16), "PNG"), GRAY).shape == (32, 32, 1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"name,age\nsomeone,30\n", "not an image"),
        (truncated_jpeg(), "truncated image"),
        (png_claiming_size(100_000, 100_000), "too many pixels"),
    ],
    ids=["empty", "text", "truncated", "bomb"],
)
def test_bad_input_is_rejected_with_a_reason(data, reason):
    with pytest.raises(ImageRejected) as error:
        inspect_image(data, max_pixels=40_000_000)
    assert error.value.reason == reason


def test_corrupt_jpeg_is_rejected():
    with pytest.raises(ImageRejected) as error:
        inspect_image(corrupt_jpeg(), max_pixels=40_000_000)
    assert error.value.reason in {"corrupt image", "truncated image"}


def test_pixel_limit_is_a_parameter():
    data = encode(face_like(1, 100))
    assert inspect_image(data, max_pixels=10_000).width == 100
    with pytest.raises(ImageRejected, match="too many pixels"):
        inspect_image(data, max_pixels=9_999)


def test_inspect_reports_original_size_and_mode():
    info = inspect_image(encode(face_like(1, 50).convert("L"), "PNG"), max_pixels=10**6)
    assert (info.width, info.height, info.mode, info.format) == (50, 50, "L", "PNG")


def test_spec_rejects_unknown_options():
    with pytest.raises(ValueError, match="color_mode"):
        ImageSpec.from_params({"color_mode": "sepia"})
    with pytest.raises(ValueError, match="resample"):
        ImageSpec.from_params({"resample": "magic"})
