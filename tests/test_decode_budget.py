"""Tests of the image limits derived from the memory limit and the model's measured need
(connector.image_classification.decode_budget); the end-to-end proof is tests/test_abuse_inputs.py."""

from __future__ import annotations

import re

import pytest

from connector.image_classification.decode_budget import BODY_COPIES, RESERVE_BYTES, DecodeBudget
from connector.image_classification.errors import ConfigurationError, ImageTooLargeError, TooManyScansError
from bench.hostile_images import claimed_size_jpeg, progressive_jpeg

MODEL_KB = 251_900  # what the digits model measures in its worker


def test_the_default_pixel_limit_is_what_the_memory_limit_leaves_beside_the_model():
    budget = DecodeBudget(share_kb=500_000, model_kb=MODEL_KB)
    expected = ((500_000 - MODEL_KB) * 1024 - RESERVE_BYTES) // 6
    assert budget.max_pixels == expected and 39_000_000 < expected < 8192 * 8192
    assert DecodeBudget(share_kb=4_000_000, model_kb=MODEL_KB).max_pixels == 8192 * 8192  # the ceiling stays
    assert DecodeBudget(share_kb=500_000, model_kb=0).max_pixels == 8192 * 8192  # nothing measured yet
    assert "images of up to" in budget.describe() and "LocalInferenceServiceMemoryLimitKB (500000 KB)" in \
        budget.describe()


def test_an_image_that_would_not_fit_is_refused_with_values_that_work():
    budget = DecodeBudget(share_kb=500_000, model_kb=MODEL_KB)
    bomb = claimed_size_jpeg(8192, 8192)
    with pytest.raises(ImageTooLargeError) as info:
        budget.check(bomb, "image/jpeg")
    message = str(info.value)
    assert "8192x8192 = 67,108,864 pixels, and decoding it needs about 384 MiB" in message, message
    fits = int(re.search(r"at most ([0-9,]+) pixels", message).group(1).replace(",", ""))
    width, height = map(int, re.search(r"about (\d+)x(\d+)\)", message).groups())
    limit = int(re.search(r"at least (\d+)$", message).group(1))
    assert fits == (budget.headroom_bytes - BODY_COPIES * len(bomb)) // 6
    assert width * height <= fits < (width + 1) * (height + 1)
    # Each value the message gives works, and one pixel more (or one KB less) does not.
    assert budget.check(claimed_size_jpeg(width, height), "image/jpeg").pixels == width * height
    DecodeBudget(share_kb=limit, model_kb=MODEL_KB).check(bomb, "image/jpeg")
    with pytest.raises(ImageTooLargeError):
        DecodeBudget(share_kb=limit - 1, model_kb=MODEL_KB).check(bomb, "image/jpeg")


def test_a_progressive_444_jpeg_is_budgeted_at_its_coefficient_buffer():
    budget = DecodeBudget(share_kb=500_000, model_kb=MODEL_KB)
    side = int((budget.headroom_bytes // 8) ** 0.5)  # fits at 6 bytes a pixel, not at 9
    grey = progressive_jpeg(side, side, 10)  # one component: 2 bytes of coefficients a pixel, so 6 in all
    assert budget.check(grey, "image/jpeg").decode_peak_bytes_per_pixel == 6
    colour = bytearray(claimed_size_jpeg(side, side))  # cv2 writes three components, Y sampled 2x2 (4:2:0)
    sof = colour.index(b"\xff\xc0")
    assert colour[sof + 11] == 0x22
    colour[sof + 1] = 0xC2                                 # the same frame, progressive (SOF2) ...
    colour[sof + 11:sof + 18:3] = b"\x11\x11\x11"           # ... and 4:4:4: 6 bytes of coefficients a pixel
    with pytest.raises(ImageTooLargeError, match="send a progressive JPEG of at most"):
        budget.check(bytes(colour), "image/jpeg")


def test_workers_share_the_limit_in_the_message():
    budget = DecodeBudget(share_kb=250_000, model_kb=MODEL_KB // 2, workers=2)
    with pytest.raises(ImageTooLargeError) as info:
        budget.check(claimed_size_jpeg(8192, 8192), "image/jpeg")
    assert "LocalInferenceServiceMemoryLimitKB (500000 KB shared by 2 workers, 250000 KB each)" in str(info.value)


def test_an_explicit_max_image_pixels_is_honoured_and_warned_about_when_it_cannot_fit():
    environ = {"GGIC_MAX_IMAGE_PIXELS": str(8192 * 8192)}
    budget = DecodeBudget.from_environment(500_000, MODEL_KB, 1, environ)
    assert budget.max_pixels == 8192 * 8192
    assert budget.check(claimed_size_jpeg(8192, 8192), "image/jpeg").pixels == 8192 * 8192  # the user's choice
    warning = budget.startup_warning()
    assert warning.startswith("--max-image-pixels 67108864 (GGIC_MAX_IMAGE_PIXELS) cannot fit in "
                              "LocalInferenceServiceMemoryLimitKB (500000 KB)"), warning
    assert f"{budget.fitting_pixels():,} pixels fit" in warning
    small = DecodeBudget.from_environment(500_000, MODEL_KB, 1, {"GGIC_MAX_IMAGE_PIXELS": "1000000"})
    assert small.startup_warning() is None
    with pytest.raises(ImageTooLargeError, match="more than the limit of 1,000,000 pixels"):
        small.check(claimed_size_jpeg(1001, 1000), "image/jpeg")
    assert DecodeBudget(500_000, MODEL_KB).startup_warning() is None


def test_the_scan_limit_comes_from_the_environment():
    body = progressive_jpeg(64, 64, 150)
    with pytest.raises(TooManyScansError, match="150 scans, more than the limit of 100"):
        DecodeBudget(500_000, MODEL_KB).check(body, "image/jpeg")
    assert DecodeBudget.from_environment(500_000, MODEL_KB, 1, {"GGIC_MAX_IMAGE_SCANS": "150"}).check(
        body, "image/jpeg").scans == 150
    for bad in ("0", "many", "-3"):
        with pytest.raises(ConfigurationError, match=f"GGIC_MAX_IMAGE_SCANS='{bad}' is not a positive whole"):
            DecodeBudget.from_environment(500_000, MODEL_KB, 1, {"GGIC_MAX_IMAGE_SCANS": bad})


def test_ggic_run_flags_reach_the_connectors_environment(tmp_path):
    """`ggic run --max-image-scans/--max-image-pixels` become the variables every hosted connector reads."""
    from connector.control.cli import build_parser
    from connector.control.cli.running import runtime_config

    args = build_parser().parse_args(["run", "--state-dir", str(tmp_path), "--max-image-scans", "150",
                                      "--max-image-pixels", "1000000"])
    environment = runtime_config(args, "us-west-2").connector_settings.environment()
    assert (environment["GGIC_MAX_IMAGE_SCANS"], environment["GGIC_MAX_IMAGE_PIXELS"]) == ("150", "1000000")
    budget = DecodeBudget.from_environment(500_000, MODEL_KB, 1, environment)
    assert (budget.max_scans, budget.max_pixels) == (150, 1_000_000)
    defaults = runtime_config(build_parser().parse_args(["run", "--state-dir", str(tmp_path)]), "us-west-2")
    assert "GGIC_MAX_IMAGE_SCANS" not in defaults.connector_settings.environment()
