"""Write the generated part of the bad-input corpus (`generated/`) from the copied files in `go/` and `cpython/`.

Run from anywhere: `python tests/data/bad-input/make_generated.py`. Byte surgery is done with the standard library
(struct, zlib) so the files say exactly what their names say; Pillow is used only for the small valid images
(1x1, EXIF orientation). The output is committed; the tests read the files, they do not run this script.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent
OUT = HERE / "generated"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- PNG helpers ------------------------------------------------------------------------------------------------

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_chunks(body: bytes) -> List[Tuple[int, bytes, bytes]]:
    """(offset, type, data) of every chunk of a well-formed PNG."""
    chunks, pos = [], 8
    while pos < len(body):
        length = struct.unpack(">I", body[pos:pos + 4])[0]
        chunks.append((pos, body[pos + 4:pos + 8], body[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def ihdr(width: int, height: int, depth: int = 8, colour: int = 2, interlace: int = 0) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims width x height RGB pixels; its IDAT holds only one row's worth of data."""
    row = b"\x00" + b"\x00" * 3 * min(width, 64)
    return (PNG_SIGNATURE + ihdr(width, height) + png_chunk(b"IDAT", zlib.compress(row))
            + png_chunk(b"IEND", b""))


def plain_png(rows: List[bytes], width: int, height: int, depth: int, colour: int,
              extra: List[bytes] = ()) -> bytes:
    raw = b"".join(b"\x00" + row for row in rows)
    return (PNG_SIGNATURE + ihdr(width, height, depth, colour) + b"".join(extra)
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


# --- JPEG helpers -----------------------------------------------------------------------------------------------

def jpeg_segments(body: bytes) -> List[Tuple[int, int, int]]:
    """(offset of the 0xFF, marker, total length incl. marker) of each segment up to and including SOS."""
    segments, pos = [], 2
    while True:
        assert body[pos] == 0xFF, pos
        marker = body[pos + 1]
        length = struct.unpack(">H", body[pos + 2:pos + 4])[0]
        segments.append((pos, marker, length + 2))
        if marker == 0xDA:
            return segments
        pos += length + 2


def first(segments: List[Tuple[int, int, int]], markers: set) -> Tuple[int, int, int]:
    return next(s for s in segments if s[1] in markers)


def jpeg_with_size(body: bytes, width: int, height: int) -> bytes:
    sof, _, _ = first(jpeg_segments(body), {0xC0, 0xC2})
    patched = bytearray(body)
    patched[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(patched)


def pil_bytes(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --- the corpus -------------------------------------------------------------------------------------------------

def generate() -> Dict[str, bytes]:
    from PIL import Image

    jpeg = (HERE / "go" / "video-001.q50.420.progressive.jpeg").read_bytes()   # 150x103, 3.3 kB
    baseline = (HERE / "go" / "video-001.q50.444.jpeg").read_bytes()          # 150x103, baseline
    png = (HERE / "go" / "video-005.gray.png").read_bytes()                   # 150x103 grey, 15 kB
    icon_jpeg = (HERE / "cpython" / "python.jpg").read_bytes()                # 16x16 JFIF
    segments = jpeg_segments(baseline)
    sof, _, sof_len = first(segments, {0xC0})
    sos, _, _ = first(segments, {0xDA})
    chunks = png_chunks(png)
    idat_offset, _, idat = next(c for c in chunks if c[1] == b"IDAT")

    files: Dict[str, bytes] = {
        # not images at all
        "text.txt": b"hello, this is not an image\n",
        "empty.bin": b"",
        "page.html": b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                     b"<body><h1>Not Found</h1></body></html>\n",
        "data.json": b'{"image": "/test_img/test.jpg"}',
        "document.pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n",
        "random-1k.bin": bytes((i * 7919 + 13) % 251 for i in range(1024)),

        # truncated JPEGs: inside the header, before the scan, inside the scan
        "jpeg-trunc-signature.jpg": baseline[:3],
        "jpeg-trunc-app0.jpg": baseline[:10],
        "jpeg-trunc-in-sof.jpg": baseline[:sof + 6],
        "jpeg-trunc-before-scan.jpg": baseline[:sos],
        "jpeg-trunc-scan-10pct.jpg": baseline[:sos + (len(baseline) - sos) // 10],
        "jpeg-trunc-scan-50pct.jpg": baseline[:sos + (len(baseline) - sos) // 2],
        "jpeg-trunc-no-eoi.jpg": baseline[:-2],

        # truncated PNGs
        "png-trunc-signature.png": png[:8],
        "png-trunc-in-ihdr.png": png[:20],
        "png-trunc-after-ihdr.png": png[:33],
        "png-trunc-idat-25pct.png": png[:idat_offset + 8 + len(idat) // 4],
        "png-trunc-idat-75pct.png": png[:idat_offset + 8 + 3 * len(idat) // 4],
        "png-trunc-no-iend.png": png[:-12],

        # corrupted PNGs
        "png-bad-ihdr-crc.png": png[:29] + bytes([png[29] ^ 0xFF]) + png[30:],
        "png-bad-idat-crc.png": (png[:idat_offset + 8 + len(idat)]
                                 + bytes(b ^ 0x55 for b in png[idat_offset + 8 + len(idat):
                                                               idat_offset + 12 + len(idat)])
                                 + png[idat_offset + 12 + len(idat):]),
        "png-bad-zlib.png": (png[:idat_offset] + png_chunk(b"IDAT", idat[:2] + bytes(b ^ 0xA5 for b in idat[2:40])
                                                           + idat[40:])
                             + png[idat_offset + 12 + len(idat):]),
        "png-bad-zlib-header.png": (png[:idat_offset] + png_chunk(b"IDAT", b"\x00\x00" + idat[2:])
                                    + png[idat_offset + 12 + len(idat):]),
        "png-text-before-ihdr.png": PNG_SIGNATURE + png_chunk(b"tEXt", b"Comment\x00first") + png[8:],
        "png-signature-then-garbage.png": PNG_SIGNATURE + bytes(range(256)),

        # header claims: too large, zero, impossible
        "png-60000x60000.png": png_claiming(60000, 60000),
        "png-20000x20000.png": png_claiming(20000, 20000),   # under OpenCV's own 2^30-pixel limit
        "png-8193x8192.png": png_claiming(8193, 8192),       # one column over 64 MP
        "png-1x100000000.png": png_claiming(1, 100_000_000),
        "png-0x0.png": png_claiming(0, 0),
        "png-0x16.png": png_claiming(0, 16),
        "png-width-2pow31.png": png_claiming(2 ** 31, 1),
        "jpeg-60000x60000.jpg": jpeg_with_size(jpeg, 60000, 60000),
        "jpeg-20000x20000.jpg": jpeg_with_size(baseline, 20000, 20000),
        "jpeg-65535x65535.jpg": jpeg_with_size(baseline, 65535, 65535),
        "jpeg-150x0.jpg": jpeg_with_size(baseline, 150, 0),   # height 0 means "see DNL", which libjpeg refuses
        "jpeg-0x103.jpg": jpeg_with_size(baseline, 0, 103),

        # wrong or missing frame header (SOF)
        "jpeg-sof-too-short.jpg": baseline[:sof + 2] + b"\x00\x06" + baseline[sof + 4:],
        "jpeg-sof-zero-components.jpg": (baseline[:sof + 2] + b"\x00\x08" + baseline[sof + 4:sof + 9] + b"\x00"
                                         + baseline[sof + sof_len:]),
        "jpeg-sof3-lossless-marker.jpg": baseline[:sof + 1] + b"\xc3" + baseline[sof + 2:],
        "jpeg-sof-precision-12.jpg": baseline[:sof + 4] + b"\x0c" + baseline[sof + 5:],
        "jpeg-sof-5-components.jpg": baseline[:sof + 9] + b"\x05" + baseline[sof + 10:],
        "jpeg-no-sof.jpg": baseline[:sof] + baseline[sof + sof_len:],
        "jpeg-soi-eoi.jpg": b"\xff\xd8\xff\xd9",
        "jpeg-double-soi.jpg": b"\xff\xd8" + baseline,
        "jpeg-zero-length-dqt.jpg": b"\xff\xd8\xff\xdb\x00\x00" + baseline[2:],
        "jpeg-app1-runs-past-end.jpg": b"\xff\xd8\xff\xe1\xff\xff" + baseline[2:200],
        "jpeg-sof5-hierarchical-marker.jpg": baseline[:sof + 1] + b"\xc5" + baseline[sof + 2:],
        "jpeg-signature-then-garbage.jpg": b"\xff\xd8\xff" + b"\x00garbage" * 50,

        # odd but valid JPEG structure: the header walk must skip segments by length, as libjpeg does
        "jpeg-app1-holds-60000x60000-sof.jpg": (
            b"\xff\xd8" + b"\xff\xe1" + struct.pack(">H", 2 + 6 + 15) + b"Exif\x00\x00"
            + b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", 60000, 60000)[:4] + b"\x01\x01\x11\x00"
            + baseline[2:]),
        "jpeg-com-holds-sof-bytes.jpg": (b"\xff\xd8\xff\xfe\x00\x0a\xff\xc0\x00\x11\x08\xea\x60\xea"
                                         + baseline[2:]),
        "jpeg-fill-bytes.jpg": b"\xff\xd8" + b"\xff" * 9 + baseline[2:sof] + b"\xff" * 5 + baseline[sof:],
        "jpeg-zero-length-app0.jpg": b"\xff\xd8\xff\xe0\x00\x00" + baseline[2:],   # libjpeg skips nothing
        "jpeg-junk-before-sof.jpg": baseline[:sof] + b"junk" + baseline[sof:],   # libjpeg warns and goes on
        "jpeg-rst-marker-before-sof.jpg": b"\xff\xd8\xff\xd0" + baseline[2:],

        # valid odd images
        "png-1x1-rgb.png": plain_png([b"\x10\x80\xf0"], 1, 1, 8, 2),
        "png-1x1-grey.png": plain_png([b"\x7f"], 1, 1, 8, 0),
        "png-1x1-rgba16.png": plain_png([b"\xff\xff\x00\x00\x80\x00\x80\x00"], 1, 1, 16, 6),
        "png-1x1-palette.png": plain_png([b"\x00"], 1, 1, 8, 3, [png_chunk(b"PLTE", b"\x20\x40\x60")]),
        "png-1x1-grey-1bit.png": plain_png([b"\x80"], 1, 1, 1, 0),
        "png-4096x1-grey.png": plain_png([bytes(i % 256 for i in range(4096))], 4096, 1, 8, 0),
        "jpeg-1x1.jpg": pil_bytes(Image.new("RGB", (1, 1), (200, 30, 60)), "JPEG", quality=90),
        "jpeg-1x1-grey.jpg": pil_bytes(Image.new("L", (1, 1), 77), "JPEG", quality=90),
        "jpeg-exif-orientation-6.jpg": _with_orientation(icon_jpeg, 6),
        "png-exif-orientation-6.png": _png_with_orientation((HERE / "go" / "pngsuite" / "basn2c08.png").read_bytes(), 6),
    }
    return files


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG re-encoded by Pillow with an EXIF Orientation tag (6: rotate 90 degrees clockwise to view)."""
    from PIL import Image

    image = Image.open(io.BytesIO(jpeg)).convert("RGB").crop((0, 0, 16, 12))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return pil_bytes(image, "JPEG", quality=95, exif=exif.tobytes())


def _png_with_orientation(png: bytes, orientation: int) -> bytes:
    """A 12x16 crop of the PNG written by Pillow with an eXIf chunk holding an Orientation tag."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").crop((0, 0, 12, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return pil_bytes(image, "PNG", exif=exif.tobytes())


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for stale in OUT.iterdir():
        stale.unlink()
    files = generate()
    for name, data in sorted(files.items()):
        (OUT / name).write_bytes(data)
    print(f"wrote {len(files)} files, {sum(map(len, files.values())):,} bytes, to {OUT}")


if __name__ == "__main__":
    main()
