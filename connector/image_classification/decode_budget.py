"""How large an image a request may send: derived from LocalInferenceServiceMemoryLimitKB and the model's measured
need, so that a legal request never breaches the limit, and checked in the connector's own process before an
inference worker sees the request.

An inference worker holds the loaded model (its resident memory measured after loading and a warm-up inference, the
supervisor's `need_kb`); a request adds the image body (read from the pipe, and copied once when a JPEG gets its
end marker: two copies at most) and the decode's peak (`ImageHeader.decode_peak_bytes`: 6 bytes a pixel, 9 for a
4:4:4 progressive JPEG, measured). Whatever the limit leaves beside the model, less a reserve for the rest of a
request, is what a decode may use. A request that needs more is refused from its header, with the size that would
fit and the limit that would take it, and the worker is never put at risk.

`ggic run --max-image-pixels N` (`GGIC_MAX_IMAGE_PIXELS`) replaces the derived limit by the user's own: requests up
to N pixels are decoded even when that may not fit, and the start-up log warns when it cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

from connector.contract.environment import MAX_IMAGE_PIXELS_ENV, MAX_IMAGE_SCANS_ENV
from connector.image_classification.errors import ImageTooLargeError
from connector.image_classification.image_header import (
    DECODE_PEAK_BYTES_PER_PIXEL,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_IMAGE_SCANS,
    ImageHeader,
    check_content,
    check_header,
)
from connector.image_classification.parameters import positive_setting

KIB = 1024
MIB = 1 << 20
# A request's body is in the worker twice at most: as read from the pipe, and copied once when a JPEG without its
# end marker gets one appended.
BODY_COPIES = 2
# Beside the decode: the tensor, the resized image, the answer and the allocator's slack. Measured with the digits
# model at 500000 KB (tests/test_abuse_inputs.py): a 38 MP JPEG at 97 % of the derived limit peaked at 475,460 KB,
# within the estimate (model + decode + body copies) without touching this reserve.
RESERVE_BYTES = 16 * MIB


@dataclass(frozen=True)
class DecodeBudget:
    """The limits one request's image is checked against, for one inference worker's share of the memory."""

    share_kb: int                       # the worker's part of LocalInferenceServiceMemoryLimitKB
    model_kb: int                       # the loaded worker's measured RSS; 0 before one has loaded
    workers: int = 1
    explicit_max_pixels: Optional[int] = None
    max_scans: int = DEFAULT_MAX_IMAGE_SCANS

    @classmethod
    def from_environment(cls, share_kb: int, model_kb: int, workers: int,
                         environ: Mapping[str, str]) -> "DecodeBudget":
        scans = positive_setting(environ, MAX_IMAGE_SCANS_ENV)
        return cls(share_kb, model_kb, workers, positive_setting(environ, MAX_IMAGE_PIXELS_ENV),
                   scans or DEFAULT_MAX_IMAGE_SCANS)

    @property
    def headroom_bytes(self) -> int:
        """What a decode (and the request's body) may use beside the model."""
        return max(0, (self.share_kb - self.model_kb) * KIB - RESERVE_BYTES)

    def fitting_pixels(self, bytes_per_pixel: float = DECODE_PEAK_BYTES_PER_PIXEL, body_bytes: int = 0) -> int:
        """The most pixels of this kind of image that decode within the memory limit."""
        return max(0, int((self.headroom_bytes - BODY_COPIES * body_bytes) // bytes_per_pixel))

    @property
    def max_pixels(self) -> int:
        """The pixel limit: the user's, or what fits (a PNG or baseline JPEG, 6 bytes a pixel) up to 8192x8192."""
        if self.explicit_max_pixels is not None:
            return self.explicit_max_pixels
        if self.model_kb <= 0:  # no worker has loaded yet: nothing measured to derive from
            return DEFAULT_MAX_IMAGE_PIXELS
        return min(DEFAULT_MAX_IMAGE_PIXELS, self.fitting_pixels())

    def describe(self) -> str:
        side = math.isqrt(self.max_pixels)
        if self.explicit_max_pixels is not None:
            return (f"images of up to {self.max_pixels:,} pixels (about {side}x{side}), as --max-image-pixels "
                    f"says; JPEGs of up to {self.max_scans} scans")
        return (f"images of up to {self.max_pixels:,} pixels (about {side}x{side}: what "
                f"{self._limit_text()} leaves beside the model's {self.model_kb} KB, at "
                f"{DECODE_PEAK_BYTES_PER_PIXEL} bytes a pixel, at most 8192x8192); JPEGs of up to {self.max_scans} "
                f"scans")

    def startup_warning(self) -> Optional[str]:
        """Said once at start when the user's --max-image-pixels cannot be decoded within the memory limit."""
        if self.explicit_max_pixels is None or self.model_kb <= 0:
            return None
        fits = self.fitting_pixels()
        if self.explicit_max_pixels <= fits:
            return None
        need_kb = self._required_kb(self.explicit_max_pixels * DECODE_PEAK_BYTES_PER_PIXEL)
        return (f"--max-image-pixels {self.explicit_max_pixels} ({MAX_IMAGE_PIXELS_ENV}) cannot fit in "
                f"{self._limit_text()}: decoding that many pixels needs "
                f"{self.explicit_max_pixels * DECODE_PEAK_BYTES_PER_PIXEL / MIB:.0f} MiB beside the model's "
                f"{self.model_kb / KIB:.0f} MiB, and an image that large will get the worker killed for memory; "
                f"{fits:,} pixels fit, or set LocalInferenceServiceMemoryLimitKB to at least {need_kb}")

    def check(self, body: bytes, content_type: Optional[str]) -> ImageHeader:
        """Refuse, from its header, an image over the pixel or scan limit or whose decode would not fit in the
        memory limit (RequestError subclasses, the caller's GreengrassInferenceException); return its header."""
        normalised = check_content(content_type, body)
        if self.explicit_max_pixels is not None or self.model_kb <= 0:
            return check_header(body, normalised, self.max_pixels, self.max_scans)
        # The derived limit is checked for this very image (its kind and body), below the 8192x8192 ceiling.
        header = check_header(body, normalised, DEFAULT_MAX_IMAGE_PIXELS, self.max_scans)
        need = header.decode_peak_bytes + BODY_COPIES * len(body)
        if need > self.headroom_bytes:
            fits = self.fitting_pixels(header.decode_peak_bytes_per_pixel, len(body))
            scale = math.sqrt(fits / header.pixels) if header.pixels else 0.0
            kind = ("progressive " if header.progressive else "") + ("JPEG" if normalised.endswith("jpeg") else "PNG")
            raise ImageTooLargeError(
                f"the {normalised} image is too large to decode within {self._limit_text()}: its header says "
                f"{header.width}x{header.height} = {header.pixels:,} pixels, and decoding it needs about "
                f"{need / MIB:.0f} MiB beside the model's {self.model_kb / KIB:.0f} MiB (measured), where the limit "
                f"leaves {self.headroom_bytes / MIB:.0f} MiB; send a {kind} of at most {fits:,} pixels (about "
                f"{int(header.width * scale)}x{int(header.height * scale)}), or set "
                f"LocalInferenceServiceMemoryLimitKB to at least {self._required_kb(need)}")
        return header

    def _required_kb(self, need_bytes: float) -> int:
        per_worker = self.model_kb + math.ceil((RESERVE_BYTES + need_bytes) / KIB)
        return per_worker * self.workers

    def _limit_text(self) -> str:
        if self.workers == 1:
            return f"LocalInferenceServiceMemoryLimitKB ({self.share_kb} KB)"
        return (f"LocalInferenceServiceMemoryLimitKB ({self.share_kb * self.workers} KB shared by {self.workers} "
                f"workers, {self.share_kb} KB each)")
