"""Request image → model input tensor.

The SageMaker image-classification algorithm serves raw 0-255 RGB pixels stretched to the training `image_shape`
(no crop, aspect ratio not kept); its first layer `bn_data` normalises. We decode with OpenCV exactly as
`mxnet.image.imdecode` does (`IMREAD_COLOR`: grey, palette, alpha and 16-bit become 3-channel 8-bit, EXIF
orientation applied), resize bilinearly, convert BGR to RGB and lay the result out as NCHW float32.

Before anything is decoded, the image header (PNG IHDR, JPEG SOFn and scans, `image_header.py`) is read and an image
that claims more than `max_pixels` pixels, no pixels at all, or more than `max_scans` scans is refused: a 100-byte
file can claim 60000x60000, and OpenCV would allocate the whole buffer before finding out the data is missing.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from connector.image_classification.errors import ImageDecodeError, ImageTooLargeError
from connector.image_classification.image_header import (  # the header checks, offered here beside the decode
    DECODE_PEAK_BYTES_PER_PIXEL,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_IMAGE_SCANS,
    JPEG,
    PNG,
    SUPPORTED_CONTENT_TYPES,
    ImageHeader,
    check_content,
    check_header,
    image_dimensions,
    read_header,
    sniff_format,
)

__all__ = ["DECODE_PEAK_BYTES_PER_PIXEL", "DEFAULT_MAX_IMAGE_PIXELS", "DEFAULT_MAX_IMAGE_SCANS", "JPEG", "PNG",
           "SUPPORTED_CONTENT_TYPES", "ImageHeader", "check_content", "check_header",
           "image_dimensions", "read_header", "sniff_format", "decode_rgb", "to_tensor", "preprocess"]

_JPEG_END = b"\xff\xd9"  # the EOI marker


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
               max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, max_scans: int = DEFAULT_MAX_IMAGE_SCANS) -> np.ndarray:
    """Validate, check the header's size claim, decode and lay out one request image for the model.

    The resize runs on the decoded BGR image and the colour conversion on the small result: bilinear resizing
    treats each channel alone, so this gives the very tensor decode → RGB → resize gives (tests prove it
    bit for bit) without a second full-size copy of the image.
    """
    normalised = check_content(content_type, body)
    check_header(body, normalised, max_pixels, max_scans)
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
