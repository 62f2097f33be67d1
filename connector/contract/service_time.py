"""A measured service time, and what it says about a request's chance to be answered before its deadline.

Load shedding needs to know, when a request arrives, whether it can still be answered in time: the work ahead of it
divided among the servers, plus its own service. The service time is measured, not configured: an exponentially
weighted mean of the durations seen and of their mean deviation, the estimator TCP uses for its retransmission
timer (RFC 6298: gains 1/8 and 1/4), so it follows a change of load or layout within a few requests and a lone slow
request moves it little. A request's own service is counted as `mean + DEVIATIONS x deviation` (2: most services
are shorter), so the one admitted last still finishes in time when its service runs slower than the mean. TCP's
timer uses 4, to avoid a needless retransmission at almost any cost; here a refusal is not free either (a worker
may idle), and on a busy 2-core machine the deviation is half the mean. `bench/overload.py` measures the goodput
this gives (docs/overload.md). Only a request that has to wait is ever refused on these grounds: one that a free
server takes at once gets its chance, however slow the service has been. Used by the core's queues
(`connector.core.invocations`: whole invocations) and by the image classification connector's supervisor
(inferences on its workers).
"""

from __future__ import annotations

import threading
from typing import Optional, Sequence

MEAN_GAIN = 1 / 8
DEVIATION_GAIN = 1 / 4
DEVIATIONS = 2.0
OUTLIER_DEVIATIONS = 4.0
SETTLED = 4  # measurements before outliers are bounded


class ServiceTime:
    """Thread-safe running estimate of how long one request takes to serve, in seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.mean: Optional[float] = None
        self.deviation = 0.0
        self.samples = 0

    def observe(self, seconds: float) -> None:
        """A request was served in `seconds`; once a few are measured, one far above the others (a request that
        waited out a worker's restart) counts as OUTLIER_DEVIATIONS deviations above the mean (at least twice
        the mean), so one fault does not make the service look slow for the next dozens of requests, while a
        service that really slows down still moves the estimate at each request."""
        seconds = max(0.0, float(seconds))
        with self._lock:
            if self.mean is not None and self.samples >= SETTLED:
                seconds = min(seconds, max(self.mean + OUTLIER_DEVIATIONS * self.deviation, 2 * self.mean))
            if self.mean is None:
                self.mean, self.deviation = seconds, seconds / 2
            else:
                self.deviation += DEVIATION_GAIN * (abs(seconds - self.mean) - self.deviation)
                self.mean += MEAN_GAIN * (seconds - self.mean)
            self.samples += 1

    @property
    def known(self) -> bool:
        return self.mean is not None

    def bound(self) -> float:
        """What one request's own service is allowed for: mean + DEVIATIONS x deviation (0 before a measurement)."""
        with self._lock:
            return 0.0 if self.mean is None else self.mean + DEVIATIONS * self.deviation

    def wait_s(self, queued: int, in_service: Sequence[float], servers: int) -> float:
        """How long a request arriving now should wait for a server: none while one is free, else the work ahead
        (`queued` requests waiting, and the rest of each one `in_service` for the given seconds so far) shared by
        `servers`."""
        with self._lock:
            mean = self.mean
        if mean is None or (not queued and len(in_service) < servers):
            return 0.0
        ahead = queued * mean + sum(max(0.0, mean - elapsed) for elapsed in in_service)
        return ahead / max(1, servers)

    def reset(self) -> None:
        """Forget what was measured (what is served has changed, e.g. the workers' layout)."""
        with self._lock:
            self.mean, self.deviation, self.samples = None, 0.0, 0

    def describe(self) -> str:
        with self._lock:
            if self.mean is None:
                return "not measured yet"
            return f"{self.mean:.3f} s (deviation {self.deviation:.3f} s, {self.samples} measured)"
