"""Request image → model input tensor.

The SageMaker image-classification algorithm serves raw 0-255 RGB pixels stretched to the training `image_shape`
(no crop, aspect ratio not kept); its first layer `bn_data` normalises. We decode with OpenCV exactly as
`mxnet.image.imdecode` does (`IMREAD_COLOR`: grey, palette, alpha and 16-bit become 3-channel 8-bit, EXIF
orientation applied), resize bilinearly, convert BGR to RGB and lay the result out as NCHW float32.

Before anything is decoded, the image header (PNG IHDR, JPEG SOFn) is read and an image that claims more than
`max_pixels` pixels, or no pixels at all, is refused: a 100-byte file can claim 60000x60000, and OpenCV would
allocate the whole buffer before finding out the data is missing.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

from connector.image_classification.errors import (
    ContentMismatchError,
    EmptyBodyError,
    ImageDecodeError,
    ImageTooLargeError,
    InvalidImageHeaderError,
    UnsupportedContentTypeError,
)

JPEG = "image/jpeg"
PNG = "image/png"
SUPPORTED_CONTENT_TYPES = (JPEG, PNG)

# Memory a decode needs at its peak, per pixel the image header claims: the 3-byte BGR image twice, because
# cv2.imdecode's Python binding copies OpenCV's result into a new numpy array (measured: 386 MiB for 8192x8192).
# (Resizing before the colour conversion spares one more full-size buffer, and its time, after the decode.)
DECODE_PEAK_BYTES_PER_PIXEL = 6
# 64 MP (8192x8192): every photo a camera or phone commonly takes (8K UHD is 33 MP, 50 MP sensors exist) while
# refusing decompression bombs: a few hundred bytes can claim 60000x60000, and OpenCV allocates the whole image
# before it finds the data missing. OpenCV's own guard (CV_IO_MAX_IMAGE_PIXELS, 2^30 pixels, a 6 GiB peak) is far
# too generous to protect the service, so this check does not rely on it. At the peak above, 64 MP costs 384 MiB on
# top of the model: a deployment with a small LocalInferenceServiceMemoryLimitKB wants a lower limit.
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192

_SIGNATURES = {
    JPEG: b"\xff\xd8\xff",
    PNG: b"\x89PNG\r\n\x1a\n",
}
# Formats a caller may send by mistake; naming them makes the error useful.
_OTHER_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"v/1\x01", "OpenEXR"),
    (b"\x00\x00\x01\x00", "ICO"),
)

# JPEG markers (ITU T.81 table B.1). SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) are frame headers.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0..RST7: no length field
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = 0xD8, 0xD9, 0xDA
_JPEG_END = b"\xff\xd9"  # the EOI marker
_JPEG_SKIPPED_LENIENTLY = frozenset([*range(0xE0, 0xF0), 0xFE])  # APP0..APP15, COM: libjpeg skips, never parses
_PNG_MAX_DIMENSION = 2 ** 31 - 1  # PNG spec: width and height are at most 2^31 - 1


def sniff_format(body: bytes) -> Optional[str]:
    """Name the image format the bytes start with, or None when unknown."""
    for content_type, signature in _SIGNATURES.items():
        if body.startswith(signature):
            return "JPEG" if content_type == JPEG else "PNG"
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "WebP"
    for signature, name in _OTHER_SIGNATURES:
        if body.startswith(signature):
            return name
    return None


def check_content(content_type: Optional[str], body: bytes) -> str:
    """Validate ContentType and that the bytes are really that format; return the normalised content type."""
    if content_type is None or content_type == "":
        raise UnsupportedContentTypeError(
            "ContentType is missing: pass ContentType='image/jpeg' or ContentType='image/png'")
    normalised = content_type.split(";", 1)[0].strip().lower()
    if normalised not in SUPPORTED_CONTENT_TYPES:
        raise UnsupportedContentTypeError(
            f"ContentType {content_type!r} is not supported: use 'image/jpeg' or 'image/png'")
    if not body:
        raise EmptyBodyError("Body is empty: send the bytes of a JPEG or PNG image")
    if not body.startswith(_SIGNATURES[normalised]):
        found = sniff_format(body)
        what = f"looks like {found}" if found else "does not start with any known image signature"
        expected = "JPEG" if normalised == JPEG else "PNG"
        raise ContentMismatchError(
            f"Body is not a {expected} image as ContentType {normalised!r} says: it {what}")
    return normalised


# --- header dimensions ------------------------------------------------------------------------------------------

def _header_error(content_type: str, problem: str) -> InvalidImageHeaderError:
    return InvalidImageHeaderError(f"the {content_type} image could not be decoded: {problem}")


def _png_dimensions(body: bytes) -> Tuple[int, int]:
    # signature (8) | IHDR length (4) | "IHDR" (4) | width (4) | height (4) | depth, colour type, ... (5) | CRC
    if len(body) < 24:
        raise _header_error(PNG, f"the data ends after {len(body)} bytes, before the IHDR header gives the size")
    chunk_type = body[12:16]
    if chunk_type != b"IHDR":
        raise _header_error(PNG, f"the first chunk is {chunk_type!r}, not the IHDR header that must come first")
    width = int.from_bytes(body[16:20], "big")
    height = int.from_bytes(body[20:24], "big")
    if width > _PNG_MAX_DIMENSION or height > _PNG_MAX_DIMENSION:
        raise _header_error(PNG, f"its IHDR header says {width}x{height} pixels, beyond the PNG maximum of "
                                 f"{_PNG_MAX_DIMENSION} a side")
    return width, height


def _jpeg_dimensions(body: bytes) -> Tuple[int, int]:
    """Walk the marker segments from SOI to the first frame header (SOFn), as libjpeg's jpeg_read_header does.

    Segments are skipped by their length field, so a thumbnail inside APP1 (EXIF) is never mistaken for the frame;
    bytes between segments are skipped up to the next marker, as libjpeg does (with a warning).
    """
    size = len(body)
    pos = 2  # after SOI, which check_content has seen
    while True:
        pos = body.find(b"\xff", pos)
        if pos < 0:
            raise _header_error(JPEG, "the data ends before a frame header (SOF marker) gives the size")
        while pos < size and body[pos] == 0xFF:  # a marker may be preceded by any number of 0xFF fill bytes
            pos += 1
        if pos >= size:
            raise _header_error(JPEG, "the data ends before a frame header (SOF marker) gives the size")
        marker = body[pos]
        pos += 1
        if marker == 0x00:  # a stuffed 0xFF00 is data, not a marker
            continue
        if marker in _JPEG_STANDALONE:
            continue
        if marker == _JPEG_SOS:
            raise _header_error(JPEG, "scan data (SOS) comes before any frame header (SOF marker)")
        if marker == _JPEG_EOI:
            raise _header_error(JPEG, "the image ends (EOI) before any frame header (SOF marker)")
        if marker == _JPEG_SOI:
            raise _header_error(JPEG, "a second start-of-image marker (SOI) comes before the frame header")
        if pos + 2 > size:
            raise _header_error(JPEG, f"the data ends inside the segment of marker 0xFF{marker:02X}")
        length = int.from_bytes(body[pos:pos + 2], "big")
        if length < 2:
            if marker in _JPEG_SKIPPED_LENIENTLY:  # libjpeg skips nothing and looks for the next marker
                pos += 2
                continue
            raise _header_error(JPEG, f"marker 0xFF{marker:02X} has an impossible segment length {length}")
        if marker in _JPEG_SOF:
            # length (2) | precision (1) | height (2) | width (2) | component count (1) | components
            if length < 8:
                raise _header_error(JPEG, f"its frame header (SOF marker 0xFF{marker:02X}) is {length} bytes "
                                          f"long, too short to hold the size")
            if pos + 7 > size:
                raise _header_error(JPEG, "the data ends inside the frame header (SOF marker)")
            height = int.from_bytes(body[pos + 3:pos + 5], "big")
            width = int.from_bytes(body[pos + 5:pos + 7], "big")
            return width, height
        pos += length


def image_dimensions(body: bytes, content_type: str) -> Tuple[int, int]:
    """(width, height) as the image header claims them, read without decoding: PNG IHDR or JPEG SOFn.

    `content_type` is a normalised one from `check_content` (the signature has been checked). Raises
    `InvalidImageHeaderError` when the header is missing or truncated; a claim of 0 is returned as is.
    """
    if content_type == PNG:
        return _png_dimensions(body)
    if content_type == JPEG:
        return _jpeg_dimensions(body)
    raise UnsupportedContentTypeError(f"ContentType {content_type!r} is not supported: use 'image/jpeg' or "
                                      f"'image/png'")


def check_dimensions(body: bytes, content_type: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Tuple[int, int]:
    """Refuse, from its header alone, an image that claims no pixels or more than `max_pixels`; return (w, h)."""
    width, height = image_dimensions(body, content_type)
    if width == 0 or height == 0:
        raise _header_error(content_type, f"its header says {width}x{height} pixels: an image needs at least one "
                                          f"pixel each way")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f"the {content_type} image is too large: its header says {width}x{height} = {pixels:,} pixels, more "
            f"than the limit of {max_pixels:,} pixels; send a smaller image")
    return width, height


# --- decoding and layout ----------------------------------------------------------------------------------------

def _decode_bgr(body: bytes, content_type: str) -> np.ndarray:
    """Decode JPEG/PNG bytes to an H×W×3 uint8 array in OpenCV's BGR order.

    A JPEG that does not end with its EOI marker gets one appended. OpenCV's in-memory JPEG source makes libjpeg
    stop where a truncated stream ends and leaves the rows it has not decoded uninitialised, so the tensor would
    hold stale heap memory and the answer would change from call to call. After an EOI marker libjpeg finishes
    the image the standard way (missing blocks decode flat). A complete JPEG (or one with data after its EOI) is
    decoded exactly as before: libjpeg stops at the first EOI.
    """
    if content_type == JPEG and not body.endswith(_JPEG_END):
        body = body + _JPEG_END
    buffer = np.frombuffer(body, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV raises on some malformed inputs instead of returning None
        raise ImageDecodeError(f"the {content_type} image could not be decoded: {_cv_message(exc)}") from None
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(
            f"the {content_type} image could not be decoded: the data is corrupt or truncated")
    return bgr


def _cv_message(exc: cv2.error) -> str:
    text = (getattr(exc, "err", None) or str(exc)).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def decode_rgb(body: bytes, content_type: str) -> np.ndarray:
    """Decode JPEG/PNG bytes to an H×W×3 uint8 RGB array."""
    return cv2.cvtColor(_decode_bgr(body, content_type), cv2.COLOR_BGR2RGB)


def to_tensor(rgb: np.ndarray, height: int, width: int, channels: int = 3) -> np.ndarray:
    """Stretch-resize (bilinear) to width×height and return a 1×C×H×W float32 tensor of raw 0-255 values.

    A model trained on one channel (image_shape "1,H,W") gets the luma of the image.
    """
    if rgb.shape[0] != height or rgb.shape[1] != width:
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    if channels == 1:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[np.newaxis, np.newaxis].astype(np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def preprocess(body: bytes, content_type: Optional[str], height: int, width: int, channels: int = 3, *,
               max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Validate, check the header's size claim, decode and lay out one request image for the model.

    The resize runs on the decoded BGR image and the colour conversion on the small result: bilinear resizing
    treats each channel alone, so this gives the very tensor decode → RGB → resize gives (tests prove it
    bit for bit) without a second full-size copy of the image.
    """
    normalised = check_content(content_type, body)
    check_dimensions(body, normalised, max_pixels)
    bgr = _decode_bgr(body, normalised)
    decoded_pixels = bgr.shape[0] * bgr.shape[1]
    if decoded_pixels > max_pixels:  # cannot happen when the header walk agrees with the decoder; never trust it
        raise ImageTooLargeError(
            f"the {normalised} image is too large: it decoded to {bgr.shape[1]}x{bgr.shape[0]} = "
            f"{decoded_pixels:,} pixels, more than the limit of {max_pixels:,} pixels; send a smaller image")
    try:
        if bgr.shape[0] != height or bgr.shape[1] != width:
            bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return to_tensor(rgb, height, width, channels)
    except cv2.error as exc:
        raise ImageDecodeError(f"the {normalised} image could not be converted: {_cv_message(exc)}") from None
