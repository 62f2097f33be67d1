"""Request image → model input tensor.

The SageMaker image-classification algorithm serves raw 0-255 RGB pixels stretched to the training `image_shape`
(no crop, aspect ratio not kept); its first layer `bn_data` normalises. We decode with OpenCV exactly as
`mxnet.image.imdecode` does (`IMREAD_COLOR`: grey, palette, alpha and 16-bit become 3-channel 8-bit, EXIF
orientation applied), convert BGR to RGB, resize bilinearly and lay the result out as NCHW float32.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from .errors import (
    ContentMismatchError,
    EmptyBodyError,
    ImageDecodeError,
    UnsupportedContentTypeError,
)

JPEG = "image/jpeg"
PNG = "image/png"
SUPPORTED_CONTENT_TYPES = (JPEG, PNG)

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


def decode_rgb(body: bytes, content_type: str) -> np.ndarray:
    """Decode JPEG/PNG bytes to an H×W×3 uint8 RGB array."""
    buffer = np.frombuffer(body, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV raises on some malformed inputs instead of returning None
        raise ImageDecodeError(f"the {content_type} image could not be decoded: {exc.msg or exc}") from None
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(
            f"the {content_type} image could not be decoded: the data is corrupt or truncated")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_tensor(rgb: np.ndarray, height: int, width: int, channels: int = 3) -> np.ndarray:
    """Stretch-resize (bilinear) to width×height and return a 1×C×H×W float32 tensor of raw 0-255 values.

    A model trained on one channel (image_shape "1,H,W") gets the luma of the image.
    """
    if rgb.shape[0] != height or rgb.shape[1] != width:
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    if channels == 1:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[np.newaxis, np.newaxis].astype(np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def preprocess(body: bytes, content_type: Optional[str], height: int, width: int, channels: int = 3) -> np.ndarray:
    """Validate, decode and lay out one request image for the model."""
    normalised = check_content(content_type, body)
    return to_tensor(decode_rgb(body, normalised), height, width, channels)
