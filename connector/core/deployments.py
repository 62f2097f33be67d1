"""`ggic run --group`: a runtime that serves a group's deployed version and takes new deployments without a gap.

A deployment replaces connector functions while callers keep calling them. Each connector process of a group
runtime runs under its function ARN qualified with the deployment id (`...:function:GG-ML-INF-...-name:<id>`, its
`MY_FUNCTION_ARN`), and each such generation has its own work queue. Callers address the unqualified ARN; the
dispatcher sends their invocations to the generation that is *routed*. A new deployment:

1. starts the new generation's processes next to the old ones, with empty queues of their own; each loads and
   warms up its model before it reports initialized (the connector's handler does that at import);
2. when every one of them is initialized, routes the functions to the new generation in one step, and publishes
   by the new group version's subscriptions from then on (nothing is routed if any failed, or if a subscription
   cannot be routed here: the old generation keeps serving, the deployment fails with the reasons);
3. lets each old generation finish what its queue still holds (its processes poll and answer through their own
   qualified ARN, so their answers still land), then stops it.

No invocation is refused, moved or lost on the way, so a client calling continuously sees no failure. Both models
are in memory during the overlap (a few seconds).

A group's user Lambdas (`GroupFunction`s) are swapped the same way, each generation under its version
(`...:function:NAME:VERSION`, its MY_FUNCTION_ARN): a function whose version or configuration changed (an alias
moved to a new version, a new MemorySize, ...) gets a new generation, one that did not change keeps running as it
is. A pinned Lambda handles its queue in order, so at the switch what the old generation still has queued moves, in
order, to the head of the new one's queue; the old one only finishes what it holds (within its Timeout).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence

from connector.contract.supervision import State
from connector.core.invocations import (
    DEFAULT_MAX_WORK_ITEMS,
    Dispatcher,
    FunctionNotFoundError,
    FunctionQueue,
    Invocation,
    unqualified_arn,
)
from connector.core.group_functions import GroupFunction
from connector.core.router import CLOUD_ENDPOINT
from connector.core.runtime import (
    HostedFunction,
    INITIALIZATION_TIMEOUT_S,
    ConnectorDeployment,
    Runtime,
    RuntimeConfig,
    RuntimeStartError,
    connector_function_spec,
    function_kind,
    group_function_spec,
)

log = logging.getLogger("ggic.runtime")

WATCH_INTERVAL_S = 0.5
DRAIN_GRACE_S = 2.0  # beyond the function's timeout: by then the sweeper has answered whatever was left
DRAIN_WITHOUT_TIMEOUT_S = 60.0  # how long a replaced Lambda without a Timeout may finish what it holds


class DeploymentError(RuntimeError):
    """A deployment's functions could not be started; the previous generation keeps serving."""


class DeploymentSource(Protocol):
    """Where a group runtime learns of deployments and reports their outcome (groups.LocalDeployments)."""

    def current(self) -> Optional[dict]: ...

    def pending(self, after: dict) -> Optional[dict]: ...

    def connectors(self, deployment: dict) -> List[ConnectorDeployment]: ...

    def subscriptions(self, deployment: dict) -> List[dict]: ...

    def functions(self, deployment: dict) -> List[GroupFunction]: ...

    def report(self, deployment: dict, status: str, message: str = "") -> None: ...


class GenerationDispatcher(Dispatcher):
    """A Dispatcher whose qualified function ARNs are generations with their own queues.

    `queue(arn)`: a generation's exact qualified ARN → its queue (its process polls and answers there); any other
    ARN of the function → the routed generation's queue (callers). Unqualified ARNs of functions without
    generations (user Lambdas) behave as in the base class.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._generations: Dict[str, FunctionQueue] = {}  # qualified ARN → queue
        self._routes: Dict[str, FunctionQueue] = {}       # unqualified ARN → the routed generation's queue
        self._route_lock = threading.Lock()

    def stage(self, function_arn: str, max_items: int = DEFAULT_MAX_WORK_ITEMS,
              timeout_s: Optional[float] = None, shed_load: bool = False) -> FunctionQueue:
        """A queue for a new generation, not routed yet."""
        queue = FunctionQueue(unqualified_arn(function_arn), max_items, timeout_s, shed_load)
        with self._route_lock:
            self._generations[function_arn] = queue
        return queue

    def add_function(self, function_arn: str, max_items: int = DEFAULT_MAX_WORK_ITEMS,
                     timeout_s: Optional[float] = None, shed_load: bool = False) -> FunctionQueue:
        if unqualified_arn(function_arn) == function_arn:
            return super().add_function(function_arn, max_items, timeout_s, shed_load)
        queue = self.stage(function_arn, max_items, timeout_s, shed_load)  # the first generation: routed at once
        self.route(function_arn)
        return queue

    def route(self, function_arn: str, carry_over: bool = False) -> None:
        """From now on, callers' invocations of the function go to this generation. `carry_over`: what the
        previous generation still has queued moves to the head of this one's queue (a Lambda's queue is in order)."""
        with self._route_lock:
            queue = self._generations[function_arn]
            previous = self._routes.get(queue.function_arn)
            self._routes[queue.function_arn] = queue
            if carry_over and previous is not None and previous is not queue:
                moved = previous.move_pending_to(queue)
                if moved:
                    log.info("%s: %d queued invocation(s) moved to the new generation", function_arn, moved)

    def unroute(self, unqualified: str) -> None:
        """The function is no longer deployed: callers get "not deployed"."""
        with self._route_lock:
            self._routes.pop(unqualified, None)

    def retire(self, function_arn: str) -> None:
        with self._route_lock:
            self._generations.pop(function_arn, None)

    def queue(self, function_arn: str) -> FunctionQueue:
        queue = self._generations.get(function_arn)
        if queue is None:
            queue = self._routes.get(unqualified_arn(function_arn))
        if queue is not None:
            return queue
        try:
            return super().queue(function_arn)
        except FunctionNotFoundError:
            deployed = sorted(set(self._routes) | {q.function_arn for q in self.queues})
            raise FunctionNotFoundError(
                f"function {function_arn} is not deployed in this Greengrass runtime "
                f"(deployed: {', '.join(deployed) or 'none'})") from None

    def submit(self, function_arn: str, payload: bytes, client_context: str, invocation_type: str,
               owner: str = "") -> Invocation:
        # Choosing the queue and appending to it are one step with respect to `route`: once a generation is
        # routed away from, nothing new reaches its queue, so "its queue is empty" means it is drained.
        with self._route_lock:
            return super().submit(function_arn, payload, client_context, invocation_type, owner)

    def sweep(self, now: float) -> Dict[str, List[Invocation]]:
        stuck = super().sweep(now)
        for function_arn, queue in list(self._generations.items()):
            _, overdue = queue.expire(now)
            if overdue:  # keyed by the qualified ARN: the runtime stops that generation's process, not another
                stuck[function_arn] = overdue
        return stuck


class GroupRuntime(Runtime):
    """A Runtime that serves a group's deployment and applies the group's later deployments as they come."""

    dispatcher_class = GenerationDispatcher

    def __init__(self, config: RuntimeConfig, source: DeploymentSource, deployment: dict,
                 lambdas: List[str]) -> None:
        super().__init__(config, source.connectors(deployment), lambdas, source.subscriptions(deployment),
                         source.functions(deployment))
        self.source = source
        self.deployment = deployment  # the one serving
        self._last_seen = deployment  # the newest one applied or tried
        self._processes: Dict[str, HostedFunction] = {}  # every connector process by its qualified ARN
        self._draining: List[threading.Thread] = []
        self._stopping = threading.Event()
        self._watcher: Optional[threading.Thread] = None

    @property
    def generations(self) -> GenerationDispatcher:
        assert isinstance(self.dispatcher, GenerationDispatcher)
        return self.dispatcher

    def start(self) -> None:
        super().start()
        self._processes.update({f.spec.arn: f for f in self.functions.values()
                                if f.spec.is_connector or f.spec.group_function})
        self._watcher = threading.Thread(target=self._watch, name="deployments", daemon=True)
        self._watcher.start()

    def extra_state(self) -> Dict[str, object]:
        return {"group": {"Id": self.deployment["GroupId"], "GroupVersionId": self.deployment["GroupVersionId"],
                          "DeploymentId": self.deployment["DeploymentId"]}}

    def _function_for(self, function_arn: str) -> Optional[HostedFunction]:
        return self._processes.get(function_arn) or super()._function_for(function_arn)

    # --- deployments -----------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL_S):
            try:
                deployment = self.source.pending(self._last_seen)
            except Exception:  # a half-written or unreadable record: look again next time
                log.exception("cannot read the group's deployments")
                continue
            if deployment is None:
                continue
            log.info("deployment %s: group version %s", deployment["DeploymentId"], deployment["GroupVersionId"])
            self._last_seen = deployment
            try:
                self.apply(deployment, self.source.connectors(deployment), self.source.subscriptions(deployment),
                           self.source.functions(deployment))
            except Exception as exc:  # the old generation keeps serving
                log.error("deployment %s failed: %s", deployment["DeploymentId"], exc)
                self.source.report(deployment, "Failure", str(exc))
                continue
            self.source.report(deployment, "Success")
            log.info("deployment %s succeeded", deployment["DeploymentId"])

    def apply(self, deployment: dict, connectors: List[ConnectorDeployment],
              subscriptions: Sequence[Mapping[str, str]] = (), functions: Sequence[GroupFunction] = ()) -> None:
        """Start the new generation, route to it (and by its subscriptions) when all of it is ready, drain and stop
        the old one."""
        try:  # a Lambda or subscriptions this runtime cannot run fail the deployment before anything starts
            specs = [group_function_spec(function, self.config) for function in functions]
            others = [spec for spec in self.specs if not (spec.is_connector or spec.group_function)]
            table = self.subscription_table(connectors, subscriptions, others + specs)
        except RuntimeStartError as exc:
            raise DeploymentError(str(exc)) from None
        staged: List[HostedFunction] = []
        kept = set()
        for spec in specs:
            current = self.functions.get(unqualified_arn(spec.arn))
            if current is not None and current.spec == spec:  # unchanged: it keeps running
                kept.add(unqualified_arn(spec.arn))
                continue
            if spec.arn in self._processes:  # the same version with another configuration, beside the old one
                spec = dataclasses.replace(spec, arn=f"{spec.arn}-{deployment['DeploymentId'][:8]}")
            queue = self.generations.stage(spec.arn, self.config.max_work_items, spec.timeout_s)
            process = self.host(spec, queue)
            self._processes[spec.arn] = process
            staged.append(process)
            process.start()
        for connector in connectors:
            spec = connector_function_spec(connector, self.config)
            queue = self.generations.stage(spec.arn, self.config.max_work_items, spec.timeout_s, spec.is_connector)
            self.connectors[spec.arn] = connector
            process = self.host(spec, queue)
            self._processes[spec.arn] = process
            staged.append(process)
            process.start()
        problems = []
        for process in staged:
            state = self._wait_settled(process)
            if state != State.READY:
                reason = process.init_error or f"not initialized after {INITIALIZATION_TIMEOUT_S:.0f} s"
                problems.append(f"{function_kind(process.spec)} {process.spec.arn} failed to start: {reason} "
                                f"(log: {process.spec.log_path})")
        if problems:
            for process in staged:
                self._retire(process)
            raise DeploymentError("; ".join(problems))

        old: List[HostedFunction] = []
        routed = set(kept)
        for process in staged:  # the switch: each function's next invocation goes to the new generation
            self.generations.route(process.spec.arn, carry_over=process.spec.group_function)
            routed.add(process.queue.function_arn)
            previous = self.functions.get(process.queue.function_arn)
            self.functions[process.queue.function_arn] = process
            if previous is not None:
                old.append(previous)
        for function_arn, process in list(self.functions.items()):
            if (process.spec.is_connector or process.spec.group_function) and function_arn not in routed:
                # not in the new group version
                self.generations.unroute(function_arn)
                del self.functions[function_arn]
                old.append(process)
        self.router.replace(table, {c.connector_arn: c.function_arn for c in connectors})
        if self.bridge is not None:
            self.bridge.set_filters(table.filters_from(CLOUD_ENDPOINT))
        self.deployment = deployment
        self._write_state()
        for process in old:
            thread = threading.Thread(target=self._drain, args=(process,), name=f"drain-{process.spec.name}",
                                      daemon=True)
            thread.start()
            self._draining.append(thread)

    def _wait_settled(self, process: HostedFunction) -> State:
        """Wait for the process to load its model (or fail to), giving up when the runtime stops."""
        deadline = time.monotonic() + INITIALIZATION_TIMEOUT_S
        state = process.state
        while time.monotonic() < deadline and not self._stopping.is_set():
            state = process.wait_settled(0.2)
            if state != State.STARTING:
                break
        if state == State.STARTING and self._stopping.is_set():
            process.init_error = "the runtime stopped before the function was initialized"
        return state

    def _drain(self, process: HostedFunction) -> None:
        """Let an old generation answer what it still holds, then stop it."""
        queue = process.queue
        allowance = process.spec.timeout_s or (DRAIN_WITHOUT_TIMEOUT_S if process.spec.group_function else 0)
        deadline = time.monotonic() + allowance + DRAIN_GRACE_S
        while (len(queue) or queue.in_flight) and time.monotonic() < deadline:
            time.sleep(0.02)
        left = len(queue) + queue.in_flight
        if left:
            log.warning("%s still held %d invocation(s) at the end of its drain", process.spec.arn, left)
        self._retire(process)
        log.info("stopped the previous generation %s", process.spec.arn)

    def _retire(self, process: HostedFunction) -> None:
        process.stop()
        process.close_log()
        process.queue.fail_pending(f"function {process.spec.arn} was replaced by a new deployment")
        process.queue.fail_in_flight(f"function {process.spec.arn} was replaced while handling this request")
        self.generations.retire(process.spec.arn)
        self.credentials.revoke_function(process.spec.arn)  # its token (a native connector's too) stops working
        self._processes.pop(process.spec.arn, None)
        self.connectors.pop(process.spec.arn, None)

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(INITIALIZATION_TIMEOUT_S)
        for thread in self._draining:
            thread.join()
        for process in list(self._processes.values()):
            if process not in self.functions.values():
                self._retire(process)
        super().stop()


def start_group_runtime(config: RuntimeConfig, source: DeploymentSource, lambdas: List[str]) -> GroupRuntime:
    """Start serving the group's current deployment, reporting its outcome."""
    deployment = source.current()
    if deployment is None:
        raise RuntimeStartError("the group has no deployment to run yet: run `ggic create-deployment` first")
    try:
        runtime = GroupRuntime(config, source, deployment, lambdas)
    except RuntimeStartError as exc:  # a Lambda of the group that cannot run here
        source.report(deployment, "Failure", str(exc))
        raise
    try:
        runtime.start()
    except RuntimeStartError as exc:
        source.report(deployment, "Failure", str(exc))
        raise
    except BaseException:  # interrupted (Ctrl-C): stop what had started; the deployment stays as it was
        runtime.stop()
        raise
    if deployment["DeploymentStatus"] != "Success":
        source.report(deployment, "Success")
    return runtime
