"""The benchmark runs (small counts, one model) and reports what it promises; its numbers are not judged here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.material import REPO
from bench.profile import format_summary, parse_collapsed, stage_of, summarize


def test_bench_serving_runs_and_writes_the_table_json_and_plot(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.serving", "--quick", "--models", "resnet18",
                             "--json", str(tmp_path / "bench.json")],
                            cwd=REPO, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    table = result.stdout.decode()
    assert "p50 latency, 1 client (ms)" in table and "requests/s, 4 clients" in table and "cold start" in table
    report = json.loads((tmp_path / "bench.json").read_text())
    entry = report["models"]["resnet18"]
    assert entry["bare"]["latency"]["p50_ms"] > 0 and entry["bare"]["best_rps"] > 0
    assert set(entry["bare"]["layouts_rps"]) >= {"1x2", "2x1"} or report["host"]["cpus"] != 2
    service = entry["service"]
    assert service["latency_1_client"]["n"] == 20 and service["cold_start_s"] > 0
    assert set(service["clients"]) == {"4", "8"} and all(run["rps"] > 0 for run in service["clients"].values())
    assert service["peak_rss_mb"] > service["worker_rss_mb"] > 0
    assert set(entry["targets"]) == {"p50_delta_ms", "throughput_4_clients_ratio", "peak_rss_mb", "cold_start_s"}
    if report["host"]["cpus"] > 1:  # --workers auto, measured with its layout in place
        auto = entry["service_auto"]
        assert auto["clients"]["4"]["rps"] > 0 and auto["layout"]["mode"] == "auto"
        assert 1 <= auto["layout"]["workers"] * auto["layout"]["threads"] <= report["host"]["cpus"]
        assert "--workers auto" in table
    # The seam, side by side: the connector as a Lambda process, and the three 1-client latencies in turns.
    assert entry["service_lambda"]["clients"]["4"]["rps"] > 0 and "--connector-hosting lambda" in table
    assert {name: turns["n"] for name, turns in entry["interleaved"].items()} == {"bare": 20, "native": 20,
                                                                                  "lambda": 20}
    assert entry["targets"]["p50_delta_ms"]["value"] == round(
        entry["interleaved"]["native"]["p50_ms"] - entry["interleaved"]["bare"]["p50_ms"], 3)
    assert "interleaved 1-client p50" in table
    assert all(isinstance(target["met"], bool) for target in entry["targets"].values())
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- bench/profile.py ------------------------------------------------------------------------------------------

COLLAPSED = """\
process 10:"python -m connector.control.cli run";Thread.run (threading.py:971);_Handler._send (connector/core/ipc_server.py:192) 30
process 10:"python -m connector.control.cli run";process 11:"python -m connector.core.lambda_runtime";serve (connector/core/lambda_runtime.py:113);InferenceSupervisor.infer (connector/image_classification/supervisor.py:300);write_frame (connector/image_classification/frames.py:25) 10
process 10:"python -m connector.control.cli run";process 11:"python -m connector.core.lambda_runtime";process 12:"python -m connector.image_classification.worker";_serve (connector/image_classification/worker.py:63);ImageClassificationService.handle (connector/image_classification/service.py:95);ClassifierModel.predict (connector/image_classification/model.py:140);Executor.forward (mxnet/executor.py:115) 50
process 10:"python -m connector.control.cli run";process 11:"python -m connector.core.lambda_runtime";process 12:"python -m connector.image_classification.worker";_serve (connector/image_classification/worker.py:63);ImageClassificationService.postprocess (connector/image_classification/service.py:92);format_probabilities (connector/image_classification/service.py:40) 10
"""


def test_profile_summary_attributes_samples_to_processes_and_stages():
    samples = parse_collapsed(COLLAPSED.splitlines(), "ggic run")
    samples += parse_collapsed(["invoke (bench/serving.py:200);HTTPConnection.send (http/client.py:990) 20"],
                               "client (ML SDK)")
    summary = summarize(samples, rate_hz=100, requests=10)
    assert summary["samples"] == 120
    assert summary["processes"]["connector.image_classification.worker"] == {"samples": 60, "share": 0.5, "ms_per_request": 60.0}
    assert set(summary["processes"]) == {"connector.control.cli", "connector.core.lambda_runtime", "connector.image_classification.worker",
                                         "client (ML SDK)"}
    stages = {name: value["samples"] for name, value in summary["stages"].items()}
    assert stages == {"engine (MXNet forward, ClassifierModel.predict)": 50,
                      "runtime HTTP server (ipc_server, http.server)": 30,
                      "HTTP clients (IPC SDK, http.client)": 20, "worker pipe frames (frames.py)": 10,
                      "answer formatting (format_probabilities)": 10}
    assert summary["top_self"][0] == {"process": "connector.image_classification.worker", "frame": "Executor.forward (executor.py)",
                                      "samples": 50, "share": round(50 / 120, 4), "ms_per_request": 50.0}
    assert stage_of(["something (elsewhere.py:1)"]) == "other"
    text = format_summary(summary, {"p50_ms": 12.5})
    assert "connector.image_classification.worker" in text and "answer formatting" in text and "p50 12.50 ms" in text


PY_SPY = shutil.which("py-spy") or next((p for p in ["/tmp/prof/bin/py-spy"] if Path(p).is_file()), None)


@pytest.mark.skipif(PY_SPY is None, reason="py-spy is not installed (it is not a dependency of the project)")
def test_bench_profile_runs_and_writes_the_stacks_and_summary(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.profile", "--model", "digits", "--seconds", "4",
                             "--py-spy", PY_SPY, "--out-dir", str(tmp_path)], cwd=REPO, capture_output=True,
                            timeout=300)
    output = result.stdout.decode() + result.stderr.decode()
    if result.returncode and ("ptrace" in output.lower() or "permission" in output.lower()):
        pytest.skip("py-spy may not attach to processes here (ptrace)")
    assert result.returncode == 0, output[-3000:]
    report = json.loads(next(tmp_path.glob("profile-*.json")).read_text())
    assert report["latency"]["n"] > 0 and report["summary"]["samples"] > 0
    assert "connector.image_classification.worker" in report["summary"]["processes"]
    assert Path(report["raw"]["service"]).stat().st_size > 0
    assert "stage" in result.stdout.decode()


# --- bench/http_parsing.py -------------------------------------------------------------------------------------

def test_bench_http_parsing_runs_side_by_side_and_writes_the_table_and_json(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.http_parsing", "--requests", "40", "--rounds", "2",
                             "--json", str(tmp_path / "parsing.json")], cwd=REPO, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    report = json.loads((tmp_path / "parsing.json").read_text())
    measured = set(report["results"])
    assert "stdlib" in measured and measured | set(report["not_installed"]) == {"stdlib", "h11", "httptools"}
    for name, entry in report["results"].items():
        assert entry["parse_us"] > 0 and entry["round_trip_us"] > 0
        assert f"{name:<12}" in result.stdout.decode()
    assert report["results"]["stdlib"]["parse_vs_stdlib"] == 1.0


def test_bench_engines_runs_the_three_engines_side_by_side_and_writes_the_table_and_json(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    result = subprocess.run([sys.executable, "-m", "bench.engines", "--models", "resnet18", "--runs", "5",
                             "--warmup", "1", "--no-service", "--json", str(tmp_path / "engines.json")],
                            cwd=REPO, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    table = result.stdout.decode()
    assert all(f"resnet18           {engine}" in table for engine in ("mxnet", "onnxruntime", "opencv")), table
    (model,) = json.loads((tmp_path / "engines.json").read_text())["results"]
    assert set(model["engines"]) == {"mxnet", "onnxruntime", "opencv"} and model["conversion_s"] > 0
    for name, engine in model["engines"].items():
        assert engine["ms"]["n"] == 5 and engine["top1_agree"] == engine["photos"] == 10, name
        assert engine["max_abs_diff"] <= 1e-5, name
