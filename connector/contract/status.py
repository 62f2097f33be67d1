"""The typed status of a connector's inference workers: what its supervisor reports, what the runtime's `/health`
and `/metrics` and `ggic status` show. One shape, written by `to_json` and read back by `from_json`."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

SERVING_STATES = ("ready", "busy")


@dataclass(frozen=True)
class WorkerStatus:
    pid: int
    state: str                 # a supervision.State value
    rss_kb: int = 0
    peak_rss_kb: int = 0
    model_rss_kb: int = 0
    threads: int = 0
    requests: int = 0
    uptime_s: float = 0.0


@dataclass(frozen=True)
class SupervisorStatus:
    service: str
    pid: int
    heartbeat_interval_s: float
    timeout_s: float
    memory_limit_kb: int
    workers: List[WorkerStatus] = field(default_factory=list)
    layout: Dict[str, Any] = field(default_factory=dict)
    last_answer_at: float = 0.0          # wall clock of the last answer or heartbeat pong
    restarts: int = 0
    restart_reasons: Dict[str, int] = field(default_factory=dict)
    consecutive_failures: int = 0
    last_failure: str = ""
    next_start_at: Optional[float] = None  # wall clock of the next start while a worker backs off
    model: Dict[str, Any] = field(default_factory=dict)
    service_time_s: Optional[float] = None  # one inference, measured (mean; docs/overload.md), None before one
    shed: int = 0                        # requests refused (busy) or timed out before they reached a worker
    abandoned: int = 0                   # requests whose caller's deadline passed while a worker ran them

    @property
    def rss_kb(self) -> int:
        return sum(worker.rss_kb for worker in self.workers)

    def problem(self, now: Optional[float] = None) -> Optional[str]:
        """Why the service cannot answer now, or None when it can. With several workers, one restarting leaves
        the service degraded, not down; a worker silent for a few heartbeats while idle is not serving."""
        now = time.time() if now is None else now
        states = [worker.state for worker in self.workers]
        serving = [state for state in states if state in SERVING_STATES]
        if not serving:
            state = next((state for state in states if state not in SERVING_STATES), "missing")
            problem = f"inference worker {state}"
            if self.consecutive_failures:
                problem += f" after {self.consecutive_failures} failure(s) in a row"
            if self.last_failure:
                problem += f"; last: {self.last_failure}"
            if self.next_start_at:
                problem += f"; next start in {max(0.0, self.next_start_at - now):.1f} s"
            return problem
        silent_s = now - self.last_answer_at
        if "busy" not in serving and silent_s > 3 * self.heartbeat_interval_s + 5:
            return f"inference worker has not answered for {silent_s:.0f} s"
        return None

    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["worker"] = data["workers"][0] if data["workers"] else None  # the first (often the only) one
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SupervisorStatus":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        worker_names = {f.name for f in dataclasses.fields(WorkerStatus)}
        values["workers"] = [WorkerStatus(**{k: v for k, v in worker.items() if k in worker_names})
                             for worker in data.get("workers") or []]
        return cls(**values)
