"""A ResNet-20 trained on real digits (scikit-learn), served in every artifact layout the connector accepts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bench.harness import GGICRuntime, connector_entry
from bench.material import DIGITS_ARCHIVE
from examples.models.digits import digit_png, split


def classify(ml, service: str, png: bytes) -> int:
    response = ml.client("inference").invoke_inference_service(
        AlgoType="image-classification", ServiceName=service, ContentType="image/png", Body=png)
    text = response["Body"].read().decode()
    return int(np.fromstring(text[1:-1], sep=",").argmax())


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, digits_model):
    """The same model: flat, one directory down, and only the training job's model.tar.gz."""
    root = tmp_path_factory.mktemp("layouts")
    nested = root / "nested"
    shutil.copytree(digits_model, nested / "model")
    archive = root / "archive"
    archive.mkdir()
    shutil.copy(DIGITS_ARCHIVE, archive / "model.tar.gz")
    return {"flat": digits_model, "nested": nested, "archive": archive}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, layouts):
    connectors = [connector_entry(path, service_name=f"digits-{name}", connector_id=f"digits-{name}",
                                  platform=platform)
                  for (name, path), platform in zip(layouts.items(), ("x86-64", "ARMv7", "Aarch64JTX2"))]
    connectors[2]["Parameters"]["GPUAcceleration"] = "CPU"
    # The ARMv7 and JTX2 connectors serve here only because the platform check is overridden (test_platform.py).
    with GGICRuntime(tmp_path_factory.mktemp("state"), connectors, run_args=["--allow-platform-mismatch"]) as rt:
        yield rt


def test_heldout_digits_are_classified_through_invoke_inference_service(runtime, sdk_env):
    sdk_env(runtime)
    import greengrass_machine_learning_sdk as ml

    digits = load_digits()
    _, heldout = split()
    correct = sum(classify(ml, "digits-flat", digit_png(digits.images[i])) == digits.target[i] for i in heldout)
    accuracy = correct / len(heldout)
    print(f"held-out accuracy through invoke_inference_service: {accuracy:.4f} ({correct}/{len(heldout)})")
    assert len(heldout) == 450
    assert accuracy >= 0.97


def test_nested_and_archived_layouts_answer_like_the_flat_one(runtime, sdk_env):
    sdk_env(runtime)
    import greengrass_machine_learning_sdk as ml

    digits = load_digits()
    _, heldout = split()
    for index in heldout[:25]:
        png = digit_png(digits.images[index])
        answers = {ml.client("inference").invoke_inference_service(
            AlgoType="image-classification", ServiceName=f"digits-{name}", ContentType="image/png",
            Body=png)["Body"].read() for name in ("flat", "nested", "archive")}
        assert len(answers) == 1, f"layouts disagree on digit {index}"


def test_archive_is_extracted_into_the_state_directory_not_the_model_path(runtime, layouts):
    assert sorted(p.name for p in layouts["archive"].iterdir()) == ["model.tar.gz"]
    extracted = list((runtime.state_dir / "model-cache").glob("*/image-classification-symbol.json"))
    assert len(extracted) == 1
    log = runtime.log_of("GG-ML-INF-image-classification-digits-archive")
    assert "digits-archive: model artifact: image-classification-symbol.json + image-classification-0006.params" in log
