"""What the runtime counts, in the Prometheus text format (`GET /metrics`) and as a summary for `ggic status`.

Request counters and the latency histogram are updated as invocations are answered; queue depth, worker state,
restarts and RSS are read from the runtime when scraped, so they are never stale. Published messages are counted
as the router handles them (routed, dropped by a full target, matching no subscription); the MQTT bridge's
connection and queue are read when scraped.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from connector.contract.status import SupervisorStatus
from connector.core.invocations import Invocation

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

# Runtime-made error types, named for what happened.
_RUNTIME_REASONS = {"TimeoutError": "timeout", "Unhandled": "function-died"}

# Returns one entry per function: see `Runtime.snapshot`.
Snapshot = Callable[[], List[Dict[str, object]]]


def function_name(function_arn: str) -> str:
    return function_arn.split(":function:", 1)[-1]


def error_reason(invocation: Invocation) -> str:
    """A short reason for an error answer: the tag a hosted connector gave (its error's `reason`), the runtime's
    own for a timeout or a function that died, else the errorType."""
    error_type = invocation.error_type
    return invocation.error_reason or _RUNTIME_REASONS.get(error_type) or error_type or "error"


class RuntimeMetrics:
    def __init__(self, snapshot: Snapshot) -> None:
        self.registry = CollectorRegistry()
        self.answered = Counter("ggic_requests", "Invocations answered, by outcome (ok or error).",
                                ["function", "outcome"], registry=self.registry)
        self.errors = Counter("ggic_request_errors", "Invocations answered with an error, by reason.",
                              ["function", "reason"], registry=self.registry)
        self.refused = Counter("ggic_requests_refused", "Invocations refused before queueing (busy, too large).",
                               ["function", "reason"], registry=self.registry)
        self.latency = Histogram("ggic_request_duration_seconds", "From arrival to answer, queueing included.",
                                 ["function"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.messages_routed = Counter("ggic_messages_routed", "Published messages delivered to a subscription "
                                       "target (a function's queue, or the MQTT bridge).", ["source", "target"],
                                       registry=self.registry)
        self.messages_dropped = Counter("ggic_messages_dropped", "Published messages a matching target did not get, "
                                        "by reason (queue-full, refused by AllOrError, ...).",
                                        ["source", "target", "reason"], registry=self.registry)
        self.messages_unmatched = Counter("ggic_messages_unmatched", "Published messages that matched no "
                                          "subscription (dropped, as on a Greengrass core).", ["source"],
                                          registry=self.registry)
        self.registry.register(_StateCollector(snapshot))

    def observe(self, invocation: Invocation) -> None:
        name = function_name(invocation.function_arn)
        error_type = invocation.error_type
        self.answered.labels(name, "error" if error_type else "ok").inc()
        if error_type:
            self.errors.labels(name, error_reason(invocation)).inc()
        if invocation.finished is not None:
            self.latency.labels(name).observe(invocation.finished - invocation.received)

    def refuse(self, function_arn: str, reason: str) -> None:
        self.refused.labels(function_name(function_arn), reason).inc()

    def routed(self, source: str, target: str) -> None:
        self.messages_routed.labels(source, target).inc()

    def dropped(self, source: str, target: str, reason: str) -> None:
        self.messages_dropped.labels(source, target, reason).inc()

    def unmatched(self, source: str) -> None:
        self.messages_unmatched.labels(source).inc()

    def watch_mqtt(self, state: Callable[[], Dict[str, object]]) -> None:
        """Export the MQTT bridge's connection and queue (read at scrape time)."""
        self.registry.register(_MqttCollector(state))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def summary(self) -> Dict[str, Dict[str, object]]:
        """Per function: answered ok/error, errors by reason, refusals by reason, mean latency (for humans)."""
        result: Dict[str, Dict[str, object]] = {}

        def entry(name: str) -> Dict[str, object]:
            return result.setdefault(name, {"ok": 0, "errors": {}, "refused": {}, "mean_latency_s": None})

        sums: Dict[str, float] = {}
        counts: Dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                name = sample.labels.get("function")
                if name is None:
                    continue
                if sample.name == "ggic_requests_total" and sample.labels["outcome"] == "ok":
                    entry(name)["ok"] = int(sample.value)
                elif sample.name == "ggic_request_errors_total":
                    entry(name)["errors"][sample.labels["reason"]] = int(sample.value)
                elif sample.name == "ggic_requests_refused_total":
                    entry(name)["refused"][sample.labels["reason"]] = int(sample.value)
                elif sample.name == "ggic_request_duration_seconds_sum":
                    sums[name] = sample.value
                elif sample.name == "ggic_request_duration_seconds_count":
                    counts[name] = sample.value
        for name, count in counts.items():  # the histogram gives its _count before its _sum
            if count:
                entry(name)["mean_latency_s"] = sums.get(name, 0.0) / count
        return result


class _StateCollector:
    """Gauges and counters read from the runtime at scrape time."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable:
        queued = GaugeMetricFamily("ggic_queue_depth", "Invocations waiting in the function's queue.",
                                   labels=["function"])
        in_flight = GaugeMetricFamily("ggic_in_flight", "Invocations the function holds now.", labels=["function"])
        ready = GaugeMetricFamily("ggic_ready", "1 when the function (and its inference worker) can answer.",
                                  labels=["function"])
        function_restarts = CounterMetricFamily("ggic_function_restarts", "Restarts of the function's process.",
                                                labels=["function"])
        worker_restarts = CounterMetricFamily("ggic_worker_restarts", "Inference worker replacements, by reason.",
                                              labels=["function", "reason"])
        worker_rss = GaugeMetricFamily("ggic_worker_rss_bytes", "Resident memory of the inference workers.",
                                       labels=["function"])
        memory_limit = GaugeMetricFamily("ggic_worker_memory_limit_bytes", "LocalInferenceServiceMemoryLimitKB.",
                                         labels=["function"])
        for function in self.snapshot():
            name = function_name(str(function["function_arn"]))
            queued.add_metric([name], float(function["queued"]))
            in_flight.add_metric([name], float(function["in_flight"]))
            ready.add_metric([name], 1.0 if function["ready"] else 0.0)
            function_restarts.add_metric([name], float(function["restarts"]))
            supervisor = function.get("supervisor")
            if isinstance(supervisor, SupervisorStatus):
                for reason, count in supervisor.restart_reasons.items():
                    worker_restarts.add_metric([name, reason], float(count))
                worker_rss.add_metric([name], float(supervisor.rss_kb) * 1024)
                memory_limit.add_metric([name], float(supervisor.memory_limit_kb) * 1024)
        yield from (queued, in_flight, ready, function_restarts, worker_restarts, worker_rss, memory_limit)


class _MqttCollector:
    """The MQTT bridge's state (mqtt_bridge.MqttBridge.state) as gauges."""

    def __init__(self, state: Callable[[], Dict[str, object]]) -> None:
        self.state = state

    def collect(self) -> Iterable:
        state = self.state()
        connected = GaugeMetricFamily("ggic_mqtt_connected", "1 when the MQTT bridge is connected to its broker.",
                                      labels=["broker"])
        connected.add_metric([str(state["broker"])], 1.0 if state["connected"] else 0.0)
        queued = GaugeMetricFamily("ggic_mqtt_queued_messages", "Messages for the cloud not yet acknowledged by the "
                                   "broker (kept while it is away, up to the bridge's limit).", labels=["broker"])
        queued.add_metric([str(state["broker"])], float(state["queued"]))  # type: ignore[arg-type]
        yield from (connected, queued)
