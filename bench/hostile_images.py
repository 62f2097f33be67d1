"""Hostile images built byte by byte, as an attacker would: small on the wire, expensive to decode.

Both decode with OpenCV's libjpeg (the tests check that), so what they cost is what the connector would pay.
"""

from __future__ import annotations

import struct
from typing import List

import cv2
import numpy as np


def claimed_size_jpeg(width: int, height: int) -> bytes:
    """A real 8x8 JPEG (about 630 bytes) whose frame header claims width x height: libjpeg allocates the claimed
    image before it finds the data missing."""
    ok, encoded = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
    assert ok
    body = bytearray(encoded.tobytes())
    sof = body.index(b"\xff\xc0")
    body[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(body)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


class _Bits:
    """MSB-first bit writer with JPEG byte stuffing (0xFF is followed by 0x00 in entropy-coded data)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.count = 0

    def put(self, value: int, length: int) -> None:
        for shift in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> shift) & 1)
            self.count += 1
            if self.count == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0x00)
                self.acc, self.count = 0, 0

    def flush(self) -> bytes:
        if self.count:
            self.put((1 << (8 - self.count)) - 1, 8 - self.count)  # pad with one bits, as T.81 says
        return bytes(self.out)


def progressive_jpeg(width: int, height: int, scans: int) -> bytes:
    """A greyscale progressive JPEG of one DC scan and `scans - 1` identical AC scans, each an end-of-band run over
    every block: a few bytes per scan, yet libjpeg walks every block of the image in every scan."""
    blocks = -(-width // 8) * -(-height // 8)
    parts: List[bytes] = [b"\xff\xd8"]
    parts.append(_segment(0xDB, b"\x00" + b"\x01" * 64))                      # DQT: table 0, all ones
    parts.append(_segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"))  # SOF2, 1 component
    counts = b"\x01" + b"\x00" * 15                                            # one code of length 1: '0'
    parts.append(_segment(0xC4, b"\x00" + counts + b"\x00"))                  # DC table 0: category 0
    parts.append(_segment(0xC4, b"\x10" + counts + b"\xe0"))                  # AC table 0: EOBRUN, 14 extra bits
    dc = _Bits()
    for _ in range(blocks):
        dc.put(0, 1)
    parts.append(_segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + dc.flush())   # DC first scan
    ac = _Bits()
    for _ in range(-(-blocks // 32767)):
        ac.put(0, 1)
        ac.put(0x3FFF, 14)                                                      # a run of 2^14 + 16383 = 32767 blocks
    ac_scan = _segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + ac.flush()        # AC first scan, Ss=1..Se=63
    parts.extend([ac_scan] * (scans - 1))
    parts.append(b"\xff\xd9")
    return b"".join(parts)
