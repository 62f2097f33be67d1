"""Every file of the bad-input corpus (`tests/data/bad-input/`), sent through the real `ggic run` and the ML SDK.

Each refused file must come back as a `GreengrassInferenceException` that names what was wrong, each odd but
valid image must be classified, and after the whole corpus the same connector process (and inference worker)
must still answer correctly: bad input fails one request, never the service. The same manifest is also checked
in-process, where the exact `reason` tag and the decoded tensor can be compared.
"""

from __future__ import annotations

import http.client
import json
from typing import Dict, List, Optional

import numpy as np
import pytest

from bench.harness import GGICRuntime, connector_entry
from bench.material import REPO, ReferenceModel, photos, reference_tensor
from connector.image_classification import imaging
from connector.image_classification.errors import RequestError

CORPUS = REPO / "tests" / "data" / "bad-input"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())["cases"]
SERVICE = "badInput"
CONNECTOR_ARN = f"arn:aws:lambda:us-west-2:aws:function:GG-ML-INF-image-classification-{SERVICE}"
DIGITS_CLASSES = 10
DIGITS_EPOCH = 6
REASONS = {"ok", "content-mismatch", "undecodable-image", "invalid-image-header", "image-too-large", "empty-body",
           "unsupported-content-type"}


def case_id(case: dict) -> str:
    content_type = case["content_type"]
    return f"{case['file']}@{'no-content-type' if content_type is None else content_type or 'empty'}"


CASES = [pytest.param(case, id=case_id(case)) for case in MANIFEST]


def body_of(case: dict) -> bytes:
    return (CORPUS / case["file"]).read_bytes()


# --- the corpus itself --------------------------------------------------------------------------------------

def test_manifest_is_well_formed_and_covers_the_corpus():
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file()
             and p.name not in ("README.md", "README", "README.original", "LICENSE", "manifest.json",
                                "make_generated.py")}
    listed = {case["file"] for case in MANIFEST}
    assert listed == files, f"unlisted: {sorted(files - listed)}; missing: {sorted(listed - files)}"
    assert len(files) >= 60
    assert len({case_id(case) for case in MANIFEST}) == len(MANIFEST), "duplicate (file, ContentType) cases"
    for case in MANIFEST:
        assert case["expect"] in REASONS, case
        assert case["expect"] == "ok" or case.get("message"), f"{case_id(case)}: an error case needs a message"
    size = sum((CORPUS / name).stat().st_size for name in files)
    assert size < 2 * 1024 * 1024, f"the corpus is {size:,} bytes"
    outcomes = {case["expect"] for case in MANIFEST}
    assert outcomes == REASONS, f"no case for {REASONS - outcomes}"


@pytest.mark.parametrize("case", CASES)
def test_corpus_file_in_process(case):
    """The exact reason tag, and for valid images the documented tensor (decode → RGB → resize) bit for bit
    (of the stream ended by its EOI marker, which the connector adds to a truncated JPEG)."""
    body = body_of(case)
    if case["expect"] == "ok":
        tensor = imaging.preprocess(body, case["content_type"], 28, 28)
        assert tensor.shape == (1, 3, 28, 28) and tensor.dtype == np.float32
        if body.startswith(b"\xff\xd8") and not body.endswith(b"\xff\xd9"):
            body += b"\xff\xd9"
        assert np.array_equal(tensor, reference_tensor(body, 28, 28))
        return
    with pytest.raises(RequestError) as refused:
        imaging.preprocess(body, case["content_type"], 28, 28)
    assert refused.value.reason == case["expect"], f"{type(refused.value).__name__}: {refused.value}"
    assert case["message"] in str(refused.value)


# --- through the real runtime -------------------------------------------------------------------------------

def _get_json(port: int, path: str) -> Optional[object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return json.loads(body) if response.status in (200, 503) else None
    finally:
        connection.close()


def _identities(report: object, path: str = "") -> Dict[str, object]:
    """Every process id and restart count in a health report, by where it sits (format-agnostic)."""
    found: Dict[str, object] = {}
    if isinstance(report, dict):
        for key, value in report.items():
            if key in ("pid", "ProcessId", "WorkerId", "restarts") and not isinstance(value, (dict, list)):
                found[f"{path}/{key}"] = value
            else:
                found.update(_identities(value, f"{path}/{key}"))
    elif isinstance(report, list):
        for index, value in enumerate(report):
            found.update(_identities(value, f"{path}[{index}]"))
    return found


def connector_processes(runtime: GGICRuntime) -> Dict[str, object]:
    """The connector's function process (health check API) and whatever the readiness report says of its
    inference worker: ids that change when either is restarted."""
    workers = _get_json(runtime.port, "/2016-11-01/health/workers")
    connector = [w for w in workers if w["FuncArn"] == CONNECTOR_ARN]
    assert len(connector) == 1 and connector[0]["ProcessId"] > 0, workers
    identities = _identities(connector[0], "function")
    identities.update(_identities(_get_json(runtime.port, "/health"), "readiness"))
    return identities


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, digits_model):
    connector = connector_entry(digits_model, service_name=SERVICE, connector_id=SERVICE)
    with GGICRuntime(tmp_path_factory.mktemp("state"), [connector]) as rt:
        yield rt


@pytest.fixture(scope="module")
def processes_at_start(runtime) -> Dict[str, object]:
    return connector_processes(runtime)


@pytest.fixture(scope="module")
def client_env(runtime) -> Dict[str, str]:
    return runtime.client_env  # `ggic env` once, not once per file


@pytest.fixture
def ml(client_env, processes_at_start, monkeypatch):
    """This test process as a Lambda of the runtime (what the `sdk_env` fixture does, with the env cached)."""
    for name, value in client_env.items():
        monkeypatch.setenv(name, value)
    import greengrass_machine_learning_sdk

    return greengrass_machine_learning_sdk


def infer(ml, body: bytes, content_type: Optional[str]) -> np.ndarray:
    arguments = {"AlgoType": "image-classification", "ServiceName": SERVICE, "Body": body}
    if content_type is not None:
        arguments["ContentType"] = content_type
    response = ml.client("inference").invoke_inference_service(**arguments)
    assert response["ContentType"] == "application/json"
    text = response["Body"].read().decode("utf-8")
    assert text.startswith("[") and text.endswith("]"), text[:200]
    return np.array([np.float32(value) for value in text[1:-1].split(",")], dtype=np.float32)


SENT: set = set()  # ids of the cases sent through the runtime so far


@pytest.mark.parametrize("case", CASES)
def test_corpus_file_through_the_runtime(ml, case):
    SENT.add(case_id(case))
    body = body_of(case)
    if case["expect"] == "ok":
        probabilities = infer(ml, body, case["content_type"])
        assert probabilities.shape == (DIGITS_CLASSES,)
        assert (probabilities >= 0).all() and (probabilities <= 1).all()
        assert abs(float(probabilities.sum()) - 1.0) < 1e-4
        return
    with pytest.raises(ml.GreengrassInferenceException) as refused:
        infer(ml, body, case["content_type"])
    assert case["message"] in str(refused.value), f"{case['expect']} expected, got: {refused.value}"


def test_service_survives_the_whole_corpus(ml, runtime, digits_model, processes_at_start):
    """Run last (file order): the corpus must have left the same processes answering exactly as before."""
    from sklearn.datasets import load_digits

    from examples.models.digits import digit_png, split

    for case in (case for case in MANIFEST if case_id(case) not in SENT):  # e.g. when this test runs alone
        try:
            infer(ml, body_of(case), case["content_type"])
        except ml.GreengrassInferenceException:
            pass
    reference = ReferenceModel(digits_model, DIGITS_EPOCH, (3, 28, 28))
    digits = load_digits()
    _, heldout = split()
    goods: List[bytes] = [digit_png(digits.images[index]) for index in heldout[:5]]
    goods.append(photos()["coffee"][1])
    for body in goods:
        served = infer(ml, body, "image/png")
        direct = reference.probabilities(body).astype(np.float32)
        assert float(np.abs(served - direct).max()) <= 1e-6
    assert connector_processes(runtime) == processes_at_start, "the connector or its worker was restarted"
    log = runtime.log_of(f"GG-ML-INF-image-classification-{SERVICE}")
    assert "Traceback" not in log, log[-4000:]
