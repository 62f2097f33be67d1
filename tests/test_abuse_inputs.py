"""Hostile inputs against the real runtime at the connector documentation's settings (10 s, 500000 KB): issue 16's
findings 3 and 4, each reproduced with an input built here, small on the wire.

- a 629-byte JPEG claiming 8192x8192 used to get the worker killed for memory: it is refused from its header, the
  worker is not restarted, and an image just inside the limit it names is answered within the memory limit;
- a progressive JPEG with 30,000 scans used to hold the worker for the whole timeout: it is refused at once;
- a gzip-bomb model.tar.gz used to fill the model cache: the start fails naming the limit, the cache stays empty.
"""

from __future__ import annotations

import io
import json
import math
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from bench.harness import GGICRuntime, connector_entry
from bench.hostile_archives import bomb_tar_gz
from bench.hostile_images import claimed_size_jpeg, progressive_jpeg

SERVICE = "imageClassification"


def invoke(body: bytes, content_type: str = "image/jpeg"):
    """(probabilities, None) or (None, the SDK's exception)."""
    import greengrass_machine_learning_sdk as ml

    try:
        response = ml.client("inference").invoke_inference_service(
            AlgoType="image-classification", ServiceName=SERVICE, ContentType=content_type, Body=body)
        return json.loads(response["Body"].read()), None
    except Exception as exc:  # asserted by the caller
        return None, exc


def refused(body: bytes, *phrases: str) -> str:
    from greengrass_machine_learning_sdk.exception import GreengrassInferenceException

    answer, error = invoke(body)
    assert isinstance(error, GreengrassInferenceException), f"expected a refusal, got {answer or error!r}"
    message = str(error)
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    return message


def answered(body: bytes) -> list:
    probabilities, error = invoke(body)
    assert error is None, f"expected probabilities, got {error!r}"
    assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-3
    return probabilities


def smooth_jpeg(width: int, height: int, **pil_options) -> bytes:
    """A photo-like gradient: small on the wire, width*height*3 bytes once decoded."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    image = np.dstack([np.add.outer(y, x) / 2, np.tile(x, (height, 1)), np.tile(y[:, None], (1, width))])
    if pil_options:
        buffer = io.BytesIO()
        Image.fromarray(image.astype(np.uint8)).save(buffer, "JPEG", quality=50, **pil_options)
        return buffer.getvalue()
    ok, encoded = cv2.imencode(".jpg", image.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="module")
def documented(tmp_path_factory, digits_model):
    """The runtime at the documented LocalInferenceServiceTimeoutSeconds 10 and MemoryLimitKB 500000."""
    entry = connector_entry(digits_model, service_name=SERVICE)
    assert entry["Parameters"]["LocalInferenceServiceMemoryLimitKB"] == "500000"
    assert entry["Parameters"]["LocalInferenceServiceTimeoutSeconds"] == "10"
    with GGICRuntime(tmp_path_factory.mktemp("abuse"), [entry]) as runtime:
        yield runtime


@pytest.fixture
def serving(documented, sdk_env):
    sdk_env(documented)
    answered(smooth_jpeg(28, 28))
    return documented


def supervisor(runtime: GGICRuntime) -> dict:
    return runtime.connector_status()["supervisor"]


def test_a_small_jpeg_claiming_8192x8192_is_refused_without_a_restart_and_an_image_inside_the_limit_is_served(
        serving):
    before = supervisor(serving)
    bomb = claimed_size_jpeg(8192, 8192)
    assert len(bomb) == 629
    message = refused(bomb, "too large to decode within LocalInferenceServiceMemoryLimitKB (500000 KB)",
                      "8192x8192 = 67,108,864 pixels", "set LocalInferenceServiceMemoryLimitKB to at least")
    after = supervisor(serving)
    assert after["restarts"] == before["restarts"] == 0, after
    assert after["worker"]["pid"] == before["worker"]["pid"]
    answered(smooth_jpeg(64, 48))
    log = serving.log_of(f"GG-ML-INF-image-classification-{SERVICE}")
    assert re.search(r"decoding images of up to [0-9,]+ pixels \(about \d+x\d+: what "
                     r"LocalInferenceServiceMemoryLimitKB \(500000 KB\) leaves beside the model's \d+ KB, at 6 "
                     r"bytes a pixel, at most 8192x8192\); JPEGs of up to 100 scans", log), log[-2000:]

    # The value the refusal names works: an image just inside it is decoded within the memory limit.
    fits = int(re.search(r"at most ([0-9,]+) pixels", message).group(1).replace(",", ""))
    assert 1_000_000 < fits < 8192 * 8192
    side = math.isqrt(int(fits * 0.97))  # a real JPEG's body is larger than the 629 bytes the figure was for
    answered(smooth_jpeg(side, side))
    after = supervisor(serving)
    assert after["restarts"] == 0 and after["worker"]["pid"] == before["worker"]["pid"]
    assert after["worker"]["peak_rss_kb"] <= 500000
    print(f"refused: {message}\nserved {side}x{side}; worker peak RSS {after['worker']['peak_rss_kb']} KB of 500000")


def test_a_progressive_jpeg_with_30000_scans_is_refused_at_once_without_a_restart(serving):
    before = supervisor(serving)
    many = progressive_jpeg(4096, 4096, 30_000)
    assert len(many) < 1_200_000  # 36 bytes a scan
    refused(many, "has 30,000 scans, more than the limit of 100")
    after = supervisor(serving)
    assert after["restarts"] == 0 and after["worker"]["pid"] == before["worker"]["pid"]
    assert after["worker"]["state"] == "ready"
    # A real progressive photo (libjpeg's 10 scans) of the same size is served.
    photo = smooth_jpeg(4096, 4096, progressive=True)
    assert photo.count(b"\xff\xda") == 10
    answered(photo)
    assert supervisor(serving)["restarts"] == 0


def test_a_gzip_bomb_model_archive_fails_the_start_naming_the_limit_and_leaves_the_cache_empty(
        tmp_path_factory, digits_model):
    destination = tmp_path_factory.mktemp("bomb-model")
    members = {name: (digits_model / name).read_bytes()
               for name in ("image-classification-symbol.json", "model-shapes.json")}
    members["image-classification-0006.params"] = 1536  # MiB of zeros: 1.6 MB on disk
    bomb_tar_gz(destination / "model.tar.gz", members)
    runtime = GGICRuntime(tmp_path_factory.mktemp("abuse-bomb"), [connector_entry(destination,
                                                                                  service_name=SERVICE)])
    runtime.start(expect_ready=False)
    try:
        assert runtime.wait_exit() == 1
    finally:
        runtime.stop()
    output = runtime.output()
    assert "archive member 'image-classification-0006.params'" in output, output
    assert "over the limit of 100:1 (GGIC_ARCHIVE_MAX_RATIO)" in output, output
    cache = runtime.state_dir / "model-cache"
    assert not cache.exists() or list(cache.iterdir()) == [], list(cache.rglob("*"))
