"""Reading a request image's header without decoding it: the format, the size it claims, and for a JPEG its scans
and the buffer its decoding needs.

Only the standard library: the connector's own process checks every request here before an inference worker sees
it (see `decode_budget.py`), and that process never loads OpenCV or MXNet. A 100-byte file can claim 60000x60000,
and a 660 KB progressive JPEG can hold 30,000 scans, each a pass over the whole image: both are refused from these
few header bytes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from connector.image_classification.errors import (
    ContentMismatchError,
    EmptyBodyError,
    ImageTooLargeError,
    InvalidImageHeaderError,
    TooManyScansError,
    UnsupportedContentTypeError,
)

JPEG = "image/jpeg"
PNG = "image/png"
SUPPORTED_CONTENT_TYPES = (JPEG, PNG)

# Memory a decode needs at its peak, per pixel the image header claims: the 3-byte BGR image twice, because
# cv2.imdecode's Python binding copies OpenCV's result into a new numpy array (measured: 386 MiB for 8192x8192).
# (Resizing before the colour conversion spares one more full-size buffer, and its time, after the decode.)
DECODE_PEAK_BYTES_PER_PIXEL = 6
# A JPEG with more than one scan (progressive, or sequential with one scan per component) is decoded through a
# whole-image buffer of DCT coefficients (2 bytes each, 64 per 8x8 block of each component) that lives beside
# OpenCV's BGR image until libjpeg finishes: a 4:4:4 progressive JPEG peaks at 9 bytes a pixel (measured 9.1),
# a 4:2:0 one at 6 (measured 6.2), because the copy into numpy comes after the coefficients are freed.
_BGR_BYTES_PER_PIXEL = 3
# 64 MP (8192x8192): every photo a camera or phone commonly takes (8K UHD is 33 MP, 50 MP sensors exist) while
# refusing decompression bombs: a few hundred bytes can claim 60000x60000, and OpenCV allocates the whole image
# before it finds the data missing. OpenCV's own guard (CV_IO_MAX_IMAGE_PIXELS, 2^30 pixels, a 6 GiB peak) is far
# too generous to protect the service, so this check does not rely on it. At the peak above, 64 MP costs 384 MiB on
# top of the model: this is the ceiling, and the connector derives a lower limit from LocalInferenceServiceMemoryLimitKB
# and the model's measured need (`decode_budget.py`).
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
# Real progressive JPEGs have 4 to 14 scans (measured: libjpeg's default script 10 for colour and 6 for grey, Go's
# test images 4 to 14); each scan is a pass over every block of the image, about 3 ms at 64 MP even when it holds
# no data, so 100 scans keep a 64 MP decode near a second while 30,000 took the whole timeout.
DEFAULT_MAX_IMAGE_SCANS = 100

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
_JPEG_PROGRESSIVE_SOF = frozenset([0xC2, 0xC6, 0xCA, 0xCE])
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0..RST7: no length field
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = 0xD8, 0xD9, 0xDA
_JPEG_SKIPPED_LENIENTLY = frozenset([*range(0xE0, 0xF0), 0xFE])  # APP0..APP15, COM: libjpeg skips, never parses
_PNG_MAX_DIMENSION = 2 ** 31 - 1  # PNG spec: width and height are at most 2^31 - 1


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, before decoding: enough to know what decoding it will cost."""

    content_type: str
    width: int
    height: int
    scans: int = 1                              # JPEG: scans (SOS markers); PNG: 1
    progressive: bool = False                   # JPEG: a progressive frame (SOF2, SOF6, SOF10, SOF14)
    coefficient_bytes_per_pixel: float = 0.0    # JPEG: the DCT coefficient buffer, were the image buffered

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def buffered(self) -> bool:
        """libjpeg decodes through a whole-image coefficient buffer: a progressive or multi-scan JPEG."""
        return self.progressive or self.scans > 1

    @property
    def decode_peak_bytes_per_pixel(self) -> float:
        coefficients = self.coefficient_bytes_per_pixel if self.buffered else 0.0
        return _BGR_BYTES_PER_PIXEL + max(coefficients, DECODE_PEAK_BYTES_PER_PIXEL - _BGR_BYTES_PER_PIXEL)

    @property
    def decode_peak_bytes(self) -> int:
        """The memory decoding this image needs at its peak (measured per kind, see the constants above)."""
        return int(self.pixels * self.decode_peak_bytes_per_pixel)

    def with_scans(self, scans: int) -> "ImageHeader":
        return dataclasses.replace(self, scans=scans)


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


def _jpeg_header(body: bytes) -> ImageHeader:
    """Walk the marker segments from SOI to the frame header (SOFn), as libjpeg's jpeg_read_header does, then on
    to the first scan (SOS), and count the scans.

    Segments are skipped by their length field, so a thumbnail inside APP1 (EXIF) is never mistaken for the frame;
    bytes between segments are skipped up to the next marker, as libjpeg does (with a warning). Past the first SOS
    the scans are counted as the `FF DA` byte pairs that follow: entropy-coded data never holds one (a 0xFF there is
    followed by 0x00 or a marker), so the count is exact for ordinary files and never less than the real number.
    """
    size = len(body)
    pos = 2  # after SOI, which check_content has seen
    frame = None
    while True:
        pos = body.find(b"\xff", pos)
        if pos < 0:
            break
        while pos < size and body[pos] == 0xFF:  # a marker may be preceded by any number of 0xFF fill bytes
            pos += 1
        if pos >= size:
            break
        marker = body[pos]
        pos += 1
        if marker == 0x00:  # a stuffed 0xFF00 is data, not a marker
            continue
        if marker in _JPEG_STANDALONE:
            continue
        if marker == _JPEG_SOS:
            if frame is None:
                raise _header_error(JPEG, "scan data (SOS) comes before any frame header (SOF marker)")
            return frame.with_scans(1 + body.count(b"\xff\xda", pos))
        if marker == _JPEG_EOI:
            if frame is None:
                raise _header_error(JPEG, "the image ends (EOI) before any frame header (SOF marker)")
            return frame
        if marker == _JPEG_SOI:
            if frame is None:
                raise _header_error(JPEG, "a second start-of-image marker (SOI) comes before the frame header")
            return frame
        if pos + 2 > size:
            if frame is None:
                raise _header_error(JPEG, f"the data ends inside the segment of marker 0xFF{marker:02X}")
            return frame
        length = int.from_bytes(body[pos:pos + 2], "big")
        if length < 2:
            if marker in _JPEG_SKIPPED_LENIENTLY:  # libjpeg skips nothing and looks for the next marker
                pos += 2
                continue
            if frame is None:
                raise _header_error(JPEG, f"marker 0xFF{marker:02X} has an impossible segment length {length}")
            return frame
        if marker in _JPEG_SOF and frame is None:
            frame = _jpeg_frame(body, pos, marker, length)
        pos += length
    if frame is None:
        raise _header_error(JPEG, "the data ends before a frame header (SOF marker) gives the size")
    return frame  # a JPEG cut before its first scan: decoded as far as it goes (grey)


def _jpeg_frame(body: bytes, pos: int, marker: int, length: int) -> ImageHeader:
    # length (2) | precision (1) | height (2) | width (2) | component count (1) | per component: id, HV, table
    if length < 8:
        raise _header_error(JPEG, f"its frame header (SOF marker 0xFF{marker:02X}) is {length} bytes "
                                  f"long, too short to hold the size")
    if pos + 7 > len(body):
        raise _header_error(JPEG, "the data ends inside the frame header (SOF marker)")
    height = int.from_bytes(body[pos + 3:pos + 5], "big")
    width = int.from_bytes(body[pos + 5:pos + 7], "big")
    factors = []
    count = body[pos + 7] if pos + 7 < len(body) else 0
    for index in range(count):
        at = pos + 8 + 3 * index + 1
        if at >= min(len(body), pos + length):
            break
        factors.append((max(1, body[at] >> 4), max(1, body[at] & 0x0F)))
    if factors and len(factors) == count:
        h_max = max(h for h, _ in factors)
        v_max = max(v for _, v in factors)
        samples = sum(h * v / (h_max * v_max) for h, v in factors)
    else:  # unreadable: assume the most a decoder could need, three full-resolution components
        samples = 3.0
    return ImageHeader(JPEG, width, height, scans=0, progressive=marker in _JPEG_PROGRESSIVE_SOF,
                       coefficient_bytes_per_pixel=2 * samples)


def image_dimensions(body: bytes, content_type: str) -> Tuple[int, int]:
    """(width, height) as the image header claims them, read without decoding: PNG IHDR or JPEG SOFn.

    `content_type` is a normalised one from `check_content` (the signature has been checked). Raises
    `InvalidImageHeaderError` when the header is missing or truncated; a claim of 0 is returned as is.
    """
    header = read_header(body, content_type)
    return header.width, header.height


def read_header(body: bytes, content_type: str) -> ImageHeader:
    """What the header says about decoding the image (size, scans, coefficient buffer), read without decoding.

    `content_type` is a normalised one from `check_content`. Raises `InvalidImageHeaderError` when the header is
    missing or truncated; a claim of 0 pixels is returned as is.
    """
    if content_type == PNG:
        width, height = _png_dimensions(body)
        return ImageHeader(PNG, width, height)
    if content_type == JPEG:
        return _jpeg_header(body)
    raise UnsupportedContentTypeError(f"ContentType {content_type!r} is not supported: use 'image/jpeg' or "
                                      f"'image/png'")


def check_header(body: bytes, content_type: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 max_scans: int = DEFAULT_MAX_IMAGE_SCANS) -> ImageHeader:
    """Refuse, from its header alone, an image that claims no pixels, more than `max_pixels` or (a JPEG) more
    than `max_scans` scans; return the header."""
    header = read_header(body, content_type)
    width, height = header.width, header.height
    if width == 0 or height == 0:
        raise _header_error(content_type, f"its header says {width}x{height} pixels: an image needs at least one "
                                          f"pixel each way")
    if header.pixels > max_pixels:
        raise ImageTooLargeError(
            f"the {content_type} image is too large: its header says {width}x{height} = {header.pixels:,} pixels, "
            f"more than the limit of {max_pixels:,} pixels; send a smaller image")
    if header.scans > max_scans:
        raise TooManyScansError(
            f"the {content_type} image has {header.scans:,} scans, more than the limit of {max_scans:,}: each scan "
            f"is a pass over the whole image (a progressive photo has about 10); re-encode it")
    return header
