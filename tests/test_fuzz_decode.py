"""A hypothesis fuzz of the request decode path (`connector.image_classification.imaging.preprocess`) with mutated
real JPEGs and PNGs.

Every input must either give a float32 tensor of the model's shape or raise a `RequestError`: any other exception,
or a native crash in OpenCV/libjpeg/libpng, is a bug that would take the inference worker down. The fuzz loop runs
in child processes, so a segfault becomes a clean test failure (with the input that caused it) instead of killing
pytest. Two children run the same derandomized examples with glibc's MALLOC_PERTURB_ set to different bytes: their
digests of every outcome must match, or some tensor was computed from uninitialised memory.

Run the loop by hand with `python tests/test_fuzz_decode.py [examples]`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "bad-input"
EXAMPLES = 4000
MAX_PIXELS = 2 ** 22  # 4 MP: the same code paths as the default limit, without slow decodes of claimed-huge frames
HEIGHT, WIDTH = 24, 32
SEEDS = [  # small real files, each a different decoder path
    ("image/jpeg", "cpython/python.jpg"),                               # JFIF baseline
    ("image/jpeg", "go/video-001.q50.422.jpeg"),                        # 4:2:2 baseline
    ("image/jpeg", "go/video-001.q50.420.progressive.jpeg"),            # progressive
    ("image/jpeg", "go/video-005.gray.q50.2x2.progressive.jpeg"),       # greyscale progressive
    ("image/jpeg", "go/video-001.rgb.jpeg"),                            # Adobe APP14, no colour transform
    ("image/jpeg", "generated/jpeg-exif-orientation-6.jpg"),            # EXIF (OpenCV parses it)
    ("image/png", "cpython/python.png"),                                # palette
    ("image/png", "go/pngsuite/basn3p04-31i.png"),                      # Adam7-interlaced 4-bit palette
    ("image/png", "go/pngsuite/basn0g16.png"),                          # 16-bit grey
    ("image/png", "go/pngsuite/basn6a16.png"),                          # 16-bit RGBA
    ("image/png", "go/pngsuite/basn3p08-trns.png"),                     # palette with tRNS
    ("image/png", "generated/png-exif-orientation-6.png"),              # eXIf chunk
]


# --- the fuzz loop (runs in the child process) --------------------------------------------------------------

def _png_with_fixed_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC that lies within the data, so a mutation reaches libpng's parser and zlib
    instead of being stopped by the CRC check."""
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        length = struct.unpack(">I", out[pos:pos + 4])[0]
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        out[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4:end])))
        pos = end + 4
    return bytes(out)


def _jpeg_segment_offsets(data: bytes) -> List[int]:
    """Offsets of the 0xFF of each marker segment before the scan data."""
    offsets, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        offsets.append(pos)
        if data[pos + 1] == 0xDA:
            break
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return offsets


def _inputs():
    from hypothesis import strategies as st

    seeds = [(content_type, (CORPUS / name).read_bytes()) for content_type, name in SEEDS]

    @st.composite
    def mutated(draw) -> Tuple[bytes, str]:
        content_type, seed = draw(st.sampled_from(seeds))
        data = bytearray(seed)
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "header", "arbitrary"]))
        # mostly after the signature (a broken signature is only a content mismatch), sometimes anywhere
        signature = 3 if content_type == "image/jpeg" else 8
        position = st.integers(signature, len(data) - 1) | st.integers(0, len(data) - 1)
        if kind == "flip":
            for _ in range(draw(st.integers(1, 8))):
                data[draw(position)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            data = data[:draw(st.integers(0, len(data)))]
        elif kind == "insert":
            at = draw(position)
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            at = draw(position)
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "overwrite":
            at = draw(position)
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(chunk)] = chunk
        elif kind == "header" and content_type == "image/png":
            # IHDR: width, height, bit depth, colour type, compression, filter, interlace
            data[16:20] = struct.pack(">I", draw(st.integers(0, 2 ** 32 - 1) | st.integers(0, 4096)))
            data[20:24] = struct.pack(">I", draw(st.integers(0, 2 ** 32 - 1) | st.integers(0, 4096)))
            data[24] = draw(st.sampled_from([0, 1, 2, 3, 4, 8, 16, 255]))
            data[25] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7]))
            data[26:29] = bytes(draw(st.integers(0, 2)) for _ in range(3))
        elif kind == "header":
            # any field near the start of any segment: lengths, SOF size and sampling, DHT counts, SOS spectral...
            segment = draw(st.sampled_from(_jpeg_segment_offsets(bytes(data))))
            at = segment + 2 + draw(st.integers(0, 16))
            value = draw(st.integers(0, 65535))
            data[at:at + 2] = struct.pack(">H", value)[:max(0, min(2, len(data) - at))]
        else:
            data = bytearray(draw(st.sampled_from([b"", seed[:3], seed[:8], seed[:40]]))
                             + draw(st.binary(max_size=512)))
        if content_type == "image/png" and draw(st.booleans()):
            data = bytearray(_png_with_fixed_crcs(bytes(data)))
        other = "image/png" if content_type == "image/jpeg" else "image/jpeg"
        return bytes(data), draw(st.sampled_from([content_type] * 6 + [other]))

    return mutated()


def fuzz(examples: int, last_input: Path) -> Dict[str, object]:
    """Run the property over `examples` derandomized inputs; return counts and a digest of every outcome."""
    import numpy as np
    from hypothesis import HealthCheck, given, settings

    from connector.image_classification import imaging
    from connector.image_classification.errors import ImageTooLargeError, RequestError

    outcomes: Counter = Counter()
    digest = hashlib.sha256()
    crash_after = int(os.environ.get("FUZZ_SELF_TEST_CRASH_AFTER", "-1"))

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_inputs())
    def decode_never_fails_unexpectedly(case: Tuple[bytes, str]) -> None:
        body, content_type = case
        last_input.write_bytes(content_type.encode() + b"\n" + body)
        if sum(outcomes.values()) == crash_after:  # the harness's own test: a native crash, mid-run
            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            tensor = imaging.preprocess(body, content_type, HEIGHT, WIDTH, max_pixels=MAX_PIXELS)
        except ImageTooLargeError as refused:
            assert "decoded to" not in str(refused), f"the header walk missed the real frame size: {refused}"
            outcome = refused.reason
        except RequestError as refused:
            outcome = refused.reason
        else:
            assert type(tensor) is np.ndarray and tensor.dtype == np.float32, (type(tensor), tensor.dtype)
            assert tensor.shape == (1, 3, HEIGHT, WIDTH), tensor.shape
            assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 255.0
            digest.update(tensor.tobytes())
            outcome = "ok"
        outcomes[outcome] += 1
        digest.update(outcome.encode())

    decode_never_fails_unexpectedly()
    return {"examples": sum(outcomes.values()), "outcomes": dict(outcomes), "digest": digest.hexdigest()}


# --- the test ------------------------------------------------------------------------------------------------

def run_children(tmp_path: Path, examples: int, perturbs: Tuple[int, ...], extra_env: Dict[str, str] = {}
                 ) -> List[Dict[str, object]]:
    """Run the fuzz loop in one child per MALLOC_PERTURB_ value, in parallel; return their reports, or fail with
    the exit status (a negative one is the signal of a native crash), the output and the input that was last
    being decoded."""
    children = []
    for perturb in perturbs:
        last_input, log = tmp_path / f"last-input-{perturb}", tmp_path / f"fuzz-{perturb}.log"
        env = dict(os.environ, MALLOC_PERTURB_=str(perturb), OMP_NUM_THREADS="1",
                   HYPOTHESIS_STORAGE_DIRECTORY=str(tmp_path / f"hypothesis-{perturb}"), **extra_env)
        with open(log, "wb") as out:
            children.append((subprocess.Popen([sys.executable, __file__, str(examples), str(last_input)], cwd=REPO,
                                              env=env, stdout=out, stderr=subprocess.STDOUT), log, last_input))
    reports = []
    for process, log, last_input in children:
        try:
            code: object = process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = "a timeout (180 s)"
        output = log.read_text(errors="replace")
        if code != 0:
            culprit = last_input.read_bytes() if last_input.exists() else b""
            raise AssertionError(
                f"the fuzz child ended with {code} (negative: killed by that signal, a native crash); the input it "
                f"was decoding, as ContentType line + body, base64: {base64.b64encode(culprit).decode()}\n"
                f"{output[-6000:]}")
        reports.append(json.loads(output.strip().splitlines()[-1]))
    return reports


def test_fuzzed_images_give_a_tensor_or_a_request_error(tmp_path):
    started = time.monotonic()
    first, second = run_children(tmp_path, EXAMPLES, (0x11, 0xA5))
    print(f"fuzz: {first['examples']} examples per child in {time.monotonic() - started:.1f} s: {first['outcomes']}")
    assert first["examples"] >= EXAMPLES * 0.9, first
    outcomes = first["outcomes"]
    for expected in ("ok", "undecodable-image", "invalid-image-header", "image-too-large", "content-mismatch"):
        assert outcomes.get(expected, 0) > 0, f"the fuzz never produced {expected}: {outcomes}"
    assert set(outcomes) <= {"ok", "undecodable-image", "invalid-image-header", "image-too-large",
                             "content-mismatch", "empty-body"}, outcomes
    assert first == second, "the same inputs gave different tensors under different heap contents: " \
                            "uninitialised memory reaches the model input"


def test_a_native_crash_in_the_child_is_a_clean_failure_naming_the_input(tmp_path):
    """The harness itself: a child killed by SIGSEGV mid-decode must fail the test with the culprit input."""
    with pytest.raises(AssertionError) as failed:
        run_children(tmp_path, 50, (0,), {"FUZZ_SELF_TEST_CRASH_AFTER": "7"})
    message = str(failed.value)
    assert f"ended with -{signal.SIGSEGV}" in message
    culprit = base64.b64decode(message.split("base64: ", 1)[1].split("\n", 1)[0])
    assert culprit.split(b"\n", 1)[0] in (b"image/jpeg", b"image/png")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    count = int(sys.argv[1]) if len(sys.argv) > 1 else EXAMPLES
    last = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(os.devnull)
    print(json.dumps(fuzz(count, last)), flush=True)
