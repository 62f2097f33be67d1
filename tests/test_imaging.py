"""Tests of request-image validation, decoding and tensor layout (connector.image_classification.imaging)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from bench.material import REPO, as_jpeg, photo_files, photos, reference_tensor
from connector.image_classification import imaging
from connector.image_classification.errors import (
    ContentMismatchError,
    EmptyBodyError,
    ImageDecodeError,
    ImageTooLargeError,
    InvalidImageHeaderError,
    RequestError,
    TooManyScansError,
    UnsupportedContentTypeError,
)

BAD_INPUT = REPO / "tests" / "data" / "bad-input"


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



# --- image_dimensions: the size a header claims, read without decoding ------------------------------------

def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def sof_payload(width: int, height: int, components: int = 3) -> bytes:
    return bytes([8]) + height.to_bytes(2, "big") + width.to_bytes(2, "big") + bytes([components]) + \
        b"".join(bytes([i + 1, 0x11, 0]) for i in range(components))


def claimed_png(width: int, height: int) -> bytes:
    """Signature and an IHDR chunk only: enough for the header check, nothing to decode."""
    import struct
    import zlib

    data = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + data + \
        struct.pack(">I", zlib.crc32(b"IHDR" + data))


def claimed_jpeg(width: int, height: int, before_sof: bytes = b"") -> bytes:
    return b"\xff\xd8" + before_sof + jpeg_segment(0xC0, sof_payload(width, height)) + b"\xff\xd9"


@pytest.mark.parametrize("name", sorted(photos()))
def test_image_dimensions_of_every_photo_match_the_decoded_size(name, files):
    content_type, path = files[name]
    with Image.open(path) as image:
        expected = image.size
    assert imaging.image_dimensions(path.read_bytes(), content_type) == expected


@pytest.mark.parametrize("name", ["go/video-001.jpeg", "go/video-001.progressive.jpeg", "go/video-001.cmyk.jpeg",
                                  "go/video-001.rgb.jpeg", "go/video-005.gray.jpeg", "cpython/python-raw.jpg",
                                  "go/video-001.separate.dc.progression.progressive.jpeg",
                                  "go/gray-gradient.interlaced.png", "go/pngsuite/basn3p04-31i.png",
                                  "go/pngsuite/basn0g16.png", "go/benchPaletted.png"])
def test_image_dimensions_of_odd_formats(name):
    body = (BAD_INPUT / name).read_bytes()
    content_type = imaging.check_content("image/png" if name.endswith(".png") else "image/jpeg", body)
    with Image.open(BAD_INPUT / name) as image:
        assert imaging.image_dimensions(body, content_type) == image.size


def test_header_walk_agrees_with_opencv_on_every_decodable_corpus_file():
    """The size check is only a guard if it reads the frame the decoder will allocate: compare on every file."""
    compared = 0
    for path in sorted(BAD_INPUT.rglob("*")):
        body = path.read_bytes() if path.is_file() else b""
        content_type = {b"\xff\xd8\xff": "image/jpeg", b"\x89PN": "image/png"}.get(body[:3])
        if content_type is None:
            continue
        try:
            width, height = imaging.image_dimensions(body, content_type)
        except InvalidImageHeaderError:
            assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) is None, path.name
            continue
        if width * height > imaging.DEFAULT_MAX_IMAGE_PIXELS or width * height == 0:
            continue
        decoded = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        if decoded is not None:
            assert (width, height) in ((decoded.shape[1], decoded.shape[0]), (decoded.shape[0], decoded.shape[1])), \
                path.name  # transposed only where EXIF orientation rotates the image
            compared += 1
    assert compared >= 75


def test_exif_rotation_keeps_the_pixel_count():
    body = (BAD_INPUT / "generated" / "jpeg-exif-orientation-6.jpg").read_bytes()
    assert imaging.image_dimensions(body, "image/jpeg") == (16, 12)
    assert imaging.decode_rgb(body, "image/jpeg").shape == (16, 12, 3)  # rotated by the EXIF tag


@pytest.mark.parametrize("marker", [0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF])
def test_every_sof_marker_is_a_frame_header(marker):
    body = b"\xff\xd8" + jpeg_segment(marker, sof_payload(321, 123)) + b"\xff\xd9"
    assert imaging.image_dimensions(body, "image/jpeg") == (321, 123)


@pytest.mark.parametrize("marker", [0xC4, 0xC8, 0xCC, 0xDB, 0xDD, 0xE0, 0xE1, 0xED, 0xEF, 0xFE, 0xF0])
def test_segments_that_look_like_a_frame_header_are_skipped_by_length(marker):
    """DHT (C4), JPG (C8), DAC (CC), DQT, DRI, APPn, COM: a fake SOF inside them must not be read."""
    fake = b"\xff\xc0\x00\x11\x08" + (60000).to_bytes(2, "big") * 2 + b"\x03"
    body = claimed_jpeg(40, 30, before_sof=jpeg_segment(marker, fake))
    assert imaging.image_dimensions(body, "image/jpeg") == (40, 30)


def test_exif_thumbnail_is_not_the_frame():
    body = (BAD_INPUT / "generated" / "jpeg-app1-holds-60000x60000-sof.jpg").read_bytes()
    assert b"\xff\xc0\x00\x11\x08\xea\x60\xea\x60" in body[:40]  # the fake frame header sits before the real one
    assert imaging.image_dimensions(body, "image/jpeg") == (150, 103)


@pytest.mark.parametrize("between", [
    b"\xff\xff\xff",                         # fill bytes before a marker
    b"\xff\xd0\xff\xd7\xff\x01",              # RSTn and TEM: markers without a length
    b"junk",                                  # bytes that are no marker (libjpeg warns and skips them)
    b"\xff\x00\xff\x00",                      # stuffed zero bytes are data, not markers
    b"\xff\xe0\x00\x00",                      # APP0 with length 0: libjpeg skips nothing
    b"\xff\xfe\x00\x01",                      # COM with length 1
])
def test_jpeg_header_walk_tolerates_what_libjpeg_tolerates(between):
    assert imaging.image_dimensions(claimed_jpeg(40, 30, before_sof=between), "image/jpeg") == (40, 30)


@pytest.mark.parametrize("body, problem", [
    (b"\xff\xd8\xff", "the data ends before a frame header (SOF marker) gives the size"),
    (b"\xff\xd8\xff\xd9", "the image ends (EOI) before any frame header (SOF marker)"),
    (b"\xff\xd8\xff\xda\x00\x08" + bytes(6), "scan data (SOS) comes before any frame header (SOF marker)"),
    (b"\xff\xd8\xff\xd8", "a second start-of-image marker (SOI) comes before the frame header"),
    (b"\xff\xd8\xff\xdb\x00\x01", "marker 0xFFDB has an impossible segment length 1"),
    (b"\xff\xd8\xff\xc0\x00\x07\x08\x00\x10\x00", "(SOF marker 0xFFC0) is 7 bytes long, too short to hold the size"),
    (b"\xff\xd8\xff\xe1\x40\x00Exif", "the data ends before a frame header (SOF marker) gives the size"),
    (b"\xff\xd8\xff\xe0", "the data ends inside the segment of marker 0xFFE0"),
])
def test_broken_jpeg_headers_are_named(body, problem):
    with pytest.raises(InvalidImageHeaderError) as info:
        imaging.image_dimensions(body, "image/jpeg")
    assert problem in str(info.value)
    assert str(info.value).startswith("the image/jpeg image could not be decoded: ")
    assert info.value.reason == "invalid-image-header" and isinstance(info.value, ImageDecodeError)


def test_every_prefix_of_a_jpeg_header_is_refused_or_read_right(rocket_jpeg):
    """Cut anywhere: before the frame header is complete the header is refused, after it the size is right."""
    sof_end = next(i for i in range(2, 4096) if rocket_jpeg[i] == 0xFF and rocket_jpeg[i + 1] in (0xC0, 0xC2)) + 9
    for cut in range(3, sof_end + 64):
        prefix = rocket_jpeg[:cut]
        if cut < sof_end:
            with pytest.raises(InvalidImageHeaderError):
                imaging.image_dimensions(prefix, "image/jpeg")
        else:
            assert imaging.image_dimensions(prefix, "image/jpeg") == (640, 427), cut


def test_every_prefix_of_a_png_header_is_refused_or_read_right(coffee_png):
    for cut in range(8, 40):
        if cut < 24:
            with pytest.raises(InvalidImageHeaderError, match=f"the data ends after {cut} bytes"):
                imaging.image_dimensions(coffee_png[:cut], "image/png")
        else:
            assert imaging.image_dimensions(coffee_png[:cut], "image/png") == (600, 400)


def test_png_first_chunk_must_be_ihdr(coffee_png):
    body = coffee_png[:12] + b"IDAT" + coffee_png[16:]
    with pytest.raises(InvalidImageHeaderError, match="the first chunk is b'IDAT', not the IHDR header"):
        imaging.image_dimensions(body, "image/png")


def test_png_dimension_beyond_the_spec_is_refused():
    with pytest.raises(InvalidImageHeaderError, match="2147483648x1 pixels, beyond the PNG maximum"):
        imaging.image_dimensions(claimed_png(2 ** 31, 1), "image/png")
    assert imaging.image_dimensions(claimed_png(2 ** 31 - 1, 1), "image/png") == (2 ** 31 - 1, 1)


def test_zero_sizes_are_returned_then_refused_by_the_check():
    assert imaging.image_dimensions(claimed_png(0, 5), "image/png") == (0, 5)
    assert imaging.image_dimensions(claimed_jpeg(5, 0), "image/jpeg") == (5, 0)
    for body, content_type, size in ((claimed_png(0, 0), "image/png", "0x0"),
                                     (claimed_png(7, 0), "image/png", "7x0"),
                                     (claimed_jpeg(5, 0), "image/jpeg", "5x0"),
                                     (claimed_jpeg(0, 9), "image/jpeg", "0x9")):
        with pytest.raises(InvalidImageHeaderError) as info:
            imaging.preprocess(body, content_type, 28, 28)
        assert f"its header says {size} pixels: an image needs at least one pixel each way" in str(info.value)


def test_image_dimensions_wants_a_supported_content_type(coffee_png):
    with pytest.raises(UnsupportedContentTypeError):
        imaging.image_dimensions(coffee_png, "image/gif")


# --- the size limit -----------------------------------------------------------------------------------------

def test_default_limit_is_64_megapixels():
    assert imaging.DEFAULT_MAX_IMAGE_PIXELS == 8192 * 8192 == 67_108_864


@pytest.mark.parametrize("make", [claimed_png, claimed_jpeg])
def test_too_large_claim_is_refused_with_size_count_and_limit(make):
    content_type = "image/png" if make is claimed_png else "image/jpeg"
    with pytest.raises(ImageTooLargeError) as info:
        imaging.preprocess(make(60000, 60000), content_type, 28, 28)
    assert str(info.value) == (f"the {content_type} image is too large: its header says 60000x60000 = "
                               f"3,600,000,000 pixels, more than the limit of 67,108,864 pixels; send a smaller image")
    assert info.value.reason == "image-too-large"


def test_limit_is_checked_before_decoding():
    """Garbage after a too-large header: the size is refused, so the decoder never ran on it."""
    body = claimed_jpeg(20000, 20000) + b"\x00garbage" * 100
    with pytest.raises(ImageTooLargeError, match="20000x20000 = 400,000,000 pixels"):
        imaging.preprocess(body, "image/jpeg", 28, 28)
    with pytest.raises(ImageDecodeError):  # what decoding it would have said
        imaging.preprocess(body, "image/jpeg", 28, 28, max_pixels=10 ** 12)


def test_limit_does_not_rely_on_opencvs_own():
    """20000x20000 is under OpenCV's 2^30-pixel guard: OpenCV would allocate 1.2 GB for it; we refuse it."""
    assert 20000 * 20000 < 2 ** 30
    body = (BAD_INPUT / "generated" / "jpeg-20000x20000.jpg").read_bytes()
    with pytest.raises(ImageTooLargeError, match="20000x20000"):
        imaging.preprocess(body, "image/jpeg", 28, 28)


def test_limit_boundary_on_a_real_photo(rocket_jpeg):
    pixels = 640 * 427
    tensor = imaging.preprocess(rocket_jpeg, "image/jpeg", 28, 28, max_pixels=pixels)
    assert np.array_equal(tensor, reference_tensor(rocket_jpeg, 28, 28))
    with pytest.raises(ImageTooLargeError, match="640x427 = 273,280 pixels, more than the limit of 273,279"):
        imaging.preprocess(rocket_jpeg, "image/jpeg", 28, 28, max_pixels=pixels - 1)


def test_opencv_errors_become_decode_errors():
    """With our limit lifted, OpenCV's own guard raises cv2.error on 60000x60000: it must come back as a
    request error naming OpenCV's reason, not as cv2.error."""
    body = (BAD_INPUT / "generated" / "jpeg-60000x60000.jpg").read_bytes()
    with pytest.raises(cv2.error):
        cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    with pytest.raises(ImageDecodeError) as info:
        imaging.preprocess(body, "image/jpeg", 28, 28, max_pixels=10 ** 12)
    assert type(info.value) is ImageDecodeError
    assert str(info.value).startswith("the image/jpeg image could not be decoded: ")
    assert "OpenCV(" not in str(info.value)  # OpenCV's reason, without its source path


def test_resize_errors_become_decode_errors(rocket_jpeg):
    with pytest.raises(ImageDecodeError, match="could not be converted"):
        imaging.preprocess(rocket_jpeg, "image/jpeg", 0, 28)


# --- resize before colour conversion: the same tensor -------------------------------------------------------

def ok_corpus_images():
    import json

    cases = json.loads((BAD_INPUT / "manifest.json").read_text())["cases"]
    return [(case["content_type"], (BAD_INPUT / case["file"]).read_bytes()) for case in cases if case["expect"] == "ok"]


@pytest.mark.parametrize("height, width", [(224, 224), (28, 28), (100, 150), (299, 299), (1, 1), (17, 503),
                                           (1200, 900)])
@pytest.mark.parametrize("channels", [3, 1])
def test_resizing_bgr_then_converting_is_bit_identical_to_the_documented_order(height, width, channels):
    """preprocess resizes the decoded BGR image and converts the small result; the documented order (decode →
    RGB → resize) must give the very same tensor, on real photos and every valid odd corpus image, when shrinking
    and when enlarging, for 3-channel and luma models."""
    images = [(content_type, body) for content_type, body in photos().values()] + ok_corpus_images()
    assert len(images) >= 80
    for content_type, body in images:
        documented = imaging.to_tensor(imaging.decode_rgb(body, content_type), height, width, channels)
        tensor = imaging.preprocess(body, content_type, height, width, channels)
        assert tensor.dtype == np.float32 and tensor.shape == (1, channels, height, width)
        assert np.array_equal(tensor, documented)



# --- truncated JPEGs decode the same way every time ---------------------------------------------------------

DECODE_HASHES = r"""
import hashlib, sys
import cv2, numpy as np
from connector.image_classification import imaging
for path in sys.argv[2:]:
    body = open(path, "rb").read()
    if sys.argv[1] == "opencv":
        pixels = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    else:
        pixels = imaging.preprocess(body, "image/jpeg", 103, 150)
    print(hashlib.sha256(pixels.tobytes()).hexdigest())
"""


def decode_hashes(how: str, paths, perturb: int):
    import os
    import subprocess
    import sys

    env = dict(os.environ, MALLOC_PERTURB_=str(perturb))  # glibc fills fresh heap memory with this byte
    result = subprocess.run([sys.executable, "-c", DECODE_HASHES, how, *map(str, paths)], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_truncated_jpeg_never_exposes_uninitialised_memory():
    """OpenCV leaves the rows after a truncated JPEG scan uninitialised; the connector ends the stream with EOI
    so the same bytes always give the same tensor, whatever was in memory before."""
    paths = [BAD_INPUT / "generated" / name for name in ("jpeg-trunc-scan-10pct.jpg", "jpeg-trunc-scan-50pct.jpg",
                                                         "jpeg-trunc-no-eoi.jpg")]
    raw = [decode_hashes("opencv", paths, perturb) for perturb in (17, 99)]
    assert raw[0] != raw[1], "OpenCV now initialises truncated JPEG rows: the EOI workaround may be dropped"
    ours = [decode_hashes("connector", paths, perturb) for perturb in (17, 99)]
    assert ours[0] == ours[1]



MEASURE_PEAK = r"""
import sys
from connector.image_classification import imaging

def status_kb(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])

body = open(sys.argv[1], "rb").read()
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # reset the peak (VmHWM) to the current RSS; ru_maxrss would carry the parent's over exec
before = status_kb("VmRSS")
imaging.preprocess(body, sys.argv[2], 224, 224)
print(status_kb("VmHWM") - before)
"""


def _big_photo_like(side: int) -> Image.Image:
    ramp = np.add.outer(np.arange(side), np.arange(side)).astype(np.uint8)
    return Image.fromarray(np.dstack([ramp, ramp.T, ramp // 2]), "RGB")


@pytest.mark.parametrize("kind, expected", [("png", 6), ("baseline", 6), ("progressive-420", 6),
                                            ("progressive-444", 9)])
def test_decode_peak_memory_is_what_the_header_predicts(tmp_path, kind, expected):
    """What a size limit is budgeted with (ImageHeader.decode_peak_bytes, 6 bytes a pixel, 9 for a progressive
    4:4:4 JPEG and its coefficient buffer): measured in a fresh process."""
    import subprocess
    import sys

    side = 3072
    image = _big_photo_like(side)
    options = {"png": ("PNG", {}), "baseline": ("JPEG", {"quality": 90}),
               "progressive-420": ("JPEG", {"quality": 90, "progressive": True}),
               "progressive-444": ("JPEG", {"quality": 90, "progressive": True, "subsampling": 0})}[kind]
    body = pil_bytes(image, options[0], **options[1])
    content_type = "image/png" if kind == "png" else "image/jpeg"
    header = imaging.read_header(body, content_type)
    assert header.decode_peak_bytes_per_pixel == expected
    path = tmp_path / "big"
    path.write_bytes(body)
    result = subprocess.run([sys.executable, "-c", MEASURE_PEAK, str(path), content_type], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    grown = int(result.stdout) * 1024
    budget = header.decode_peak_bytes
    assert 0.9 * budget <= grown <= 1.05 * budget + 8 * 2 ** 20, f"{grown / side / side:.2f} bytes per pixel"


# --- scans ------------------------------------------------------------------------------------------------

def test_scans_are_counted_from_the_markers(small_rgb, files):
    assert imaging.read_header(pil_bytes(small_rgb, "JPEG"), "image/jpeg").scans == 1
    progressive = imaging.read_header(pil_bytes(small_rgb, "JPEG", progressive=True), "image/jpeg")
    assert (progressive.scans, progressive.progressive) == (10, True)  # libjpeg's default script for colour
    grey = imaging.read_header(pil_bytes(small_rgb.convert("L"), "JPEG", progressive=True), "image/jpeg")
    assert grey.scans == 6
    for name, (content_type, path) in files.items():
        if content_type == "image/jpeg":
            assert imaging.read_header(path.read_bytes(), content_type).scans == 1, name  # baseline photos


def test_a_thumbnail_inside_exif_is_not_counted_as_a_scan(small_rgb):
    thumbnail = pil_bytes(small_rgb, "JPEG")
    assert b"\xff\xda" in thumbnail
    app1 = b"Exif\x00\x00" + thumbnail
    body = pil_bytes(small_rgb, "JPEG")
    with_exif = body[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + body[2:]
    assert with_exif.count(b"\xff\xda") == 2
    assert imaging.read_header(with_exif, "image/jpeg").scans == 1


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding():
    from bench.hostile_images import progressive_jpeg

    body = progressive_jpeg(1024, 1024, 3000)
    assert imaging.read_header(body, "image/jpeg").scans == 3000
    with pytest.raises(TooManyScansError) as info:
        imaging.preprocess(body, "image/jpeg", 28, 28)
    assert str(info.value) == ("the image/jpeg image has 3,000 scans, more than the limit of 100: each scan is a "
                               "pass over the whole image (a progressive photo has about 10); re-encode it")
    assert info.value.reason == "too-many-scans"
    decoded = imaging.preprocess(body, "image/jpeg", 28, 28, max_scans=3000)  # the crafted file is a real JPEG
    assert decoded.shape == (1, 3, 28, 28)
    tensor = imaging.preprocess(progressive_jpeg(1024, 1024, 100), "image/jpeg", 28, 28)
    assert tensor.shape == (1, 3, 28, 28)
