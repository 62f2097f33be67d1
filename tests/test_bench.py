"""The benchmark runs (small counts, one model) and reports what it promises; its numbers are not judged here."""

from __future__ import annotations

import json
import subprocess
import sys

from material import REPO


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
    if report["host"]["cpus"] > 1:
        assert entry["service_workers"]["clients"]["4"]["rps"] > 0
    assert all(isinstance(target["met"], bool) for target in entry["targets"].values())
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
