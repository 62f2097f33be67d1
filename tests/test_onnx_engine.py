"""The ONNX Runtime engine (connector/image_classification/onnx_model.py, `ggic run --engine onnxruntime`)
answers like MXNet on the committed, really trained digits model, in process and through the real runtime.

Skipped unless the `onnx` extra is installed (`make test` installs it). The reference is a direct MXNet forward
(bench/material.py `ReferenceModel`, no connector code) of the same tensor; the ONNX model comes from our own
converter (`connector.image_classification.onnx_export`, tested on its own in tests/test_onnx_converter.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bench.material import DIGITS_MODEL, ReferenceModel, photos, reference_tensor  # noqa: E402
from connector.image_classification.artifact import locate
from connector.image_classification.model import InputShape
from connector.image_classification.onnx_export import convert
from connector.image_classification.onnx_model import ONNX_OPSET, OnnxClassifierModel
from examples.models.digits import digit_png, split  # noqa: E402

SHAPE = (3, 28, 28)
MAX_ABS_DIFF = 1e-5
DIGITS = 30


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    artifact = locate(DIGITS_MODEL)
    return convert(artifact.symbol_path, artifact.params_path, SHAPE, tmp_path_factory.mktemp("onnx") / "digits.onnx")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def engines(cache):
    return ReferenceModel(DIGITS_MODEL, 6, SHAPE), OnnxClassifierModel(
        locate(DIGITS_MODEL), InputShape(*SHAPE, source="test"), threads=1, cache_dir=cache)


def _images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    _, heldout = split()
    images = {f"digit-{i}": digit_png(digits.images[i]) for i in heldout[:DIGITS]}
    images.update({name: body for name, (_, body) in photos().items()})
    return images


def test_onnx_runtime_answers_like_mxnet_on_heldout_digits_and_photos(engines):
    reference, ort_engine = engines
    worst = 0.0
    for name, body in _images().items():
        expected = reference.probabilities(body)
        got = ort_engine.predict(reference_tensor(body, SHAPE[1], SHAPE[2]))
        assert got.shape == expected.shape == (10,)
        assert got.argmax() == expected.argmax(), f"{name}: top-1 {got.argmax()} != MXNet's {expected.argmax()}"
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        assert diff <= MAX_ABS_DIFF, f"{name}: max |dp| {diff:.2e}"
        worst = max(worst, diff)
    print(f"max |dp| over {DIGITS} digits and {len(photos())} photos: {worst:.2e}")


def test_exported_graph_takes_only_data_and_declares_the_opset_it_was_translated_for(converted):
    model = onnx.load(converted.onnx_path)
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["softmax"]
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {ONNX_OPSET}
    assert "SoftmaxOutput" not in {n.op_type for n in model.graph.node}
    onnx.checker.check_model(model)


def test_a_second_start_loads_the_cached_conversion(engines, cache):
    _, first = engines
    assert first.onnx_path.parent == cache / "onnx" and first.num_classes == 10
    written = first.onnx_path.stat().st_mtime_ns
    second = OnnxClassifierModel(locate(DIGITS_MODEL), InputShape(*SHAPE, source="test"), threads=1,
                                 cache_dir=cache)
    assert second.onnx_path == first.onnx_path and second.onnx_path.stat().st_mtime_ns == written
    assert sorted(p.name for p in (cache / "onnx").iterdir()) == sorted(
        first.onnx_path.with_suffix(suffix).name for suffix in (".json", ".lock", ".onnx"))


def test_the_runtime_serves_with_onnx_runtime_when_asked(tmp_path, sdk_env, engines):
    from bench.harness import GGICRuntime, connector_entry

    reference, _ = engines
    import greengrass_machine_learning_sdk as ml

    with GGICRuntime(tmp_path / "state", [connector_entry(DIGITS_MODEL)],
                     run_args=["--engine", "onnxruntime"]) as runtime:
        sdk_env(runtime)
        client = ml.client("inference")
        for name, body in list(_images().items())[:8]:
            response = client.invoke_inference_service(AlgoType="image-classification",
                                                       ServiceName="imageClassification",
                                                       ContentType="image/png" if body[:4] == b"\x89PNG"
                                                       else "image/jpeg", Body=body)
            got = np.array(json.loads(response["Body"].read()), dtype=np.float64)
            expected = reference.probabilities(body)
            assert got.argmax() == expected.argmax() and np.max(np.abs(got - expected)) <= MAX_ABS_DIFF, name
        log = runtime.log_of("GG-ML-INF-image-classification-imageClassification")
    assert "inference engine: onnxruntime (asked for)" in log and "on ONNX Runtime 1." in log and "(CPU)" in log
