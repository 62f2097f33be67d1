"""Tests of request-image validation, decoding and tensor layout (connector.imaging)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from connector import imaging
from connector.errors import (
    ContentMismatchError,
    EmptyBodyError,
    ImageDecodeError,
    RequestError,
    UnsupportedContentTypeError,
)
from material import as_jpeg, photo_files, photos, reference_tensor


def png_bytes(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    return encoded.tobytes()


def pil_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files():
    return photo_files()


@pytest.fixture(scope="module")
def coffee_png(files) -> bytes:
    return files["coffee"][1].read_bytes()


@pytest.fixture(scope="module")
def rocket_jpeg(files) -> bytes:
    return files["rocket"][1].read_bytes()


@pytest.fixture(scope="module")
def small_rgb() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "RGB")


# --- check_content ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [None, ""])
def test_missing_content_type_is_named(content_type, coffee_png):
    with pytest.raises(UnsupportedContentTypeError, match="ContentType is missing") as info:
        imaging.check_content(content_type, coffee_png)
    assert "image/jpeg" in str(info.value) and "image/png" in str(info.value)
    assert info.value.reason == "unsupported-content-type"


@pytest.mark.parametrize("content_type", ["image/gif", "application/octet-stream", "text/plain", "jpeg",
                                          "image/jpg", "image/webp"])
def test_unsupported_content_type_is_quoted(content_type, coffee_png):
    with pytest.raises(UnsupportedContentTypeError) as info:
        imaging.check_content(content_type, coffee_png)
    assert f"ContentType {content_type!r} is not supported" in str(info.value)
    assert "use 'image/jpeg' or 'image/png'" in str(info.value)


@pytest.mark.parametrize("content_type, expected", [
    ("image/JPEG; charset=x", "image/jpeg"),
    ("  Image/Jpeg ", "image/jpeg"),
    ("image/jpeg;q=1", "image/jpeg"),
])
def test_content_type_is_normalised(content_type, expected, rocket_jpeg):
    assert imaging.check_content(content_type, rocket_jpeg) == expected


def test_png_content_type_normalised(coffee_png):
    assert imaging.check_content("IMAGE/PNG; foo=bar", coffee_png) == "image/png"


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png"])
def test_empty_body(content_type):
    with pytest.raises(EmptyBodyError, match="Body is empty") as info:
        imaging.check_content(content_type, b"")
    assert info.value.reason == "empty-body"


def test_unsupported_type_reported_before_empty_body():
    with pytest.raises(UnsupportedContentTypeError):
        imaging.check_content("image/gif", b"")


def test_png_bytes_declared_jpeg(coffee_png):
    with pytest.raises(ContentMismatchError) as info:
        imaging.check_content("image/jpeg", coffee_png)
    message = str(info.value)
    assert "not a JPEG image" in message
    assert "'image/jpeg'" in message
    assert "looks like PNG" in message
    assert info.value.reason == "content-mismatch"


def test_jpeg_bytes_declared_png(rocket_jpeg):
    with pytest.raises(ContentMismatchError) as info:
        imaging.check_content("image/png", rocket_jpeg)
    message = str(info.value)
    assert "not a PNG image" in message
    assert "looks like JPEG" in message


@pytest.mark.parametrize("fmt, name, options", [
    ("GIF", "GIF", {}),
    ("WEBP", "WebP", {}),
    ("TIFF", "TIFF", {}),
    ("BMP", "BMP", {}),
])
@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png"])
def test_other_formats_are_named(fmt, name, options, content_type, small_rgb):
    body = pil_bytes(small_rgb, fmt, **options)
    with pytest.raises(ContentMismatchError) as info:
        imaging.check_content(content_type, body)
    assert f"looks like {name}" in str(info.value)


def test_big_endian_tiff_is_named():
    body = b"MM\x00*" + b"\x00" * 32
    assert imaging.sniff_format(body) == "TIFF"
    with pytest.raises(ContentMismatchError, match="looks like TIFF"):
        imaging.check_content("image/png", body)


def test_riff_that_is_not_webp_is_unknown():
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt "
    assert imaging.sniff_format(wav) is None


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png"])
def test_text_bytes(content_type):
    with pytest.raises(ContentMismatchError) as info:
        imaging.check_content(content_type, b'{"hello": "world"}')
    assert "does not start with any known image signature" in str(info.value)


def test_request_errors_are_expected_request_errors(coffee_png):
    for call in (lambda: imaging.check_content(None, coffee_png),
                 lambda: imaging.check_content("image/png", b""),
                 lambda: imaging.check_content("image/jpeg", coffee_png)):
        with pytest.raises(RequestError) as info:
            call()
        assert info.value.expected is True


# --- decode_rgb ---------------------------------------------------------------------------------------------

def test_greyscale_png_decodes_to_three_equal_channels(files):
    path = files["camera"][1]
    assert Image.open(path).mode == "L"
    rgb = imaging.decode_rgb(path.read_bytes(), "image/png")
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2])
    assert np.array_equal(rgb[:, :, 0], np.asarray(Image.open(path)))


def test_rgba_png_drops_alpha(files):
    path = files["logo"][1]
    with Image.open(path) as image:
        assert image.mode == "RGBA"
        expected = np.asarray(image)[:, :, :3]
    rgb = imaging.decode_rgb(path.read_bytes(), "image/png")
    assert rgb.shape == expected.shape and rgb.dtype == np.uint8
    assert np.array_equal(rgb, expected)


def test_sixteen_bit_png_becomes_eight_bit():
    ramp = np.linspace(0, 65535, 40 * 30 * 3).reshape(40, 30, 3).astype(np.uint16)
    body = png_bytes(ramp)
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    rgb = imaging.decode_rgb(body, "image/png")
    assert rgb.shape == (40, 30, 3) and rgb.dtype == np.uint8
    # 16 → 8 bit keeps the high byte; the channel order flips BGR → RGB.
    assert np.array_equal(rgb, (ramp >> 8).astype(np.uint8)[:, :, ::-1])


def test_palette_png(files):
    with Image.open(files["chelsea"][1]) as image:
        palette = image.convert("RGB").convert("P")
    body = pil_bytes(palette, "PNG")
    assert body[25] == 3  # IHDR colour type 3: indexed colour
    rgb = imaging.decode_rgb(body, "image/png")
    assert rgb.shape == (palette.height, palette.width, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, np.asarray(palette.convert("RGB")))


@pytest.mark.parametrize("name", sorted(photos()))
def test_every_photo_decodes_to_hw3_uint8(name, files):
    content_type, path = files[name]
    rgb = imaging.decode_rgb(path.read_bytes(), content_type)
    with Image.open(path) as image:
        assert rgb.shape == (image.height, image.width, 3)
    assert rgb.dtype == np.uint8


def test_channel_order_is_rgb():
    bgr = np.zeros((5, 7, 3), np.uint8)
    bgr[:, :] = (0, 0, 255)  # pure red in OpenCV's BGR order
    rgb = imaging.decode_rgb(png_bytes(bgr), "image/png")
    assert (rgb[:, :, 0] == 255).all()
    assert (rgb[:, :, 1] == 0).all() and (rgb[:, :, 2] == 0).all()


def test_channel_order_is_rgb_for_jpeg():
    image = Image.new("RGB", (32, 32), (0, 0, 255))  # pure blue, written by Pillow in RGB order
    rgb = imaging.decode_rgb(pil_bytes(image, "JPEG", quality=100), "image/jpeg")
    assert (rgb[:, :, 2] > 240).all() and (rgb[:, :, 0] < 15).all()


@pytest.mark.parametrize("cut", [0.2, 0.5, 0.95])
def test_truncated_png_raises(cut, coffee_png):
    with pytest.raises(ImageDecodeError) as info:
        imaging.decode_rgb(coffee_png[: int(len(coffee_png) * cut)], "image/png")
    assert "the image/png image could not be decoded" in str(info.value)
    assert info.value.reason == "undecodable-image"


def test_png_signature_followed_by_garbage_raises(coffee_png):
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        imaging.decode_rgb(coffee_png[:8] + bytes(range(256)) * 4, "image/png")


def test_corrupt_jpeg_header_raises():
    with pytest.raises(ImageDecodeError, match="the image/jpeg image could not be decoded"):
        imaging.decode_rgb(b"\xff\xd8\xff" + b"\x00garbage" * 50, "image/jpeg")


def test_preprocess_rejects_truncated_png_after_passing_check(coffee_png):
    truncated = coffee_png[:4000]
    assert imaging.check_content("image/png", truncated) == "image/png"
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        imaging.preprocess(truncated, "image/png", 28, 28)


# --- to_tensor ----------------------------------------------------------------------------------------------

def test_to_tensor_stretches_to_requested_size():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (20, 60, 3), dtype=np.uint8)
    tensor = imaging.to_tensor(rgb, 28, 28)
    assert tensor.shape == (1, 3, 28, 28)
    assert tensor.dtype == np.float32
    assert tensor.min() >= 0 and tensor.max() <= 255
    assert tensor.flags["C_CONTIGUOUS"]
    expected = cv2.resize(rgb, (28, 28), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)[None]
    assert np.array_equal(tensor, expected.astype(np.float32))


def test_to_tensor_height_and_width_are_not_swapped():
    rgb = np.zeros((10, 10, 3), np.uint8)
    assert imaging.to_tensor(rgb, 24, 40).shape == (1, 3, 24, 40)


def test_to_tensor_keeps_raw_values_no_mean_subtraction():
    grey = np.full((20, 60, 3), 200, np.uint8)
    tensor = imaging.to_tensor(grey, 28, 28)
    assert tensor.shape == (1, 3, 28, 28)
    assert (tensor == 200.0).all()


def test_to_tensor_same_size_is_plain_layout():
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    tensor = imaging.to_tensor(rgb, 4, 5)
    assert np.array_equal(tensor[0, 0], rgb[:, :, 0].astype(np.float32))
    assert np.array_equal(tensor[0, 2], rgb[:, :, 2].astype(np.float32))


def test_to_tensor_one_channel_is_luma():
    rgb = np.zeros((20, 60, 3), np.uint8)
    rgb[:, :] = (255, 0, 0)
    tensor = imaging.to_tensor(rgb, 28, 14, channels=1)
    assert tensor.shape == (1, 1, 28, 14) and tensor.dtype == np.float32
    assert (tensor == 76.0).all()  # round(0.299 * 255)


def test_to_tensor_one_channel_of_grey_is_unchanged():
    tensor = imaging.to_tensor(np.full((8, 8, 3), 200, np.uint8), 8, 8, channels=1)
    assert tensor.shape == (1, 1, 8, 8)
    assert (tensor == 200.0).all()


# --- preprocess ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("height, width", [(224, 224), (28, 28), (100, 150)])
def test_preprocess_matches_reference_for_every_photo(height, width):
    for name, (content_type, body) in photos().items():
        tensor = imaging.preprocess(body, content_type, height, width)
        expected = reference_tensor(body, height, width)
        assert tensor.shape == (1, 3, height, width), name
        assert tensor.dtype == np.float32, name
        assert np.array_equal(tensor, expected), name


def test_preprocess_of_jpeg_made_from_png_matches_reference(files):
    body = as_jpeg(files["astronaut"][1])
    assert np.array_equal(imaging.preprocess(body, "image/jpeg", 64, 48), reference_tensor(body, 64, 48))


def test_preprocess_validates_before_decoding(coffee_png):
    with pytest.raises(ContentMismatchError, match="looks like PNG"):
        imaging.preprocess(coffee_png, "image/jpeg", 28, 28)
    with pytest.raises(UnsupportedContentTypeError):
        imaging.preprocess(coffee_png, None, 28, 28)
