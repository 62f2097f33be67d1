"""The Python Lambda runtime loop that runs inside each function's process.

What a Greengrass core's `lambda_runtime.py` does for a long-lived function: import the handler module (its
module-level code runs now, as in the connector usage example), report initialization, then forever: take the next
invocation, build the event and a Greengrass-like `context`, call `function_handler(event, context)` and post the
result or the error. Started by `functions.FunctionProcess` as `python -m connector.runtime.lambda_runtime` with the
core's environment (`MY_FUNCTION_ARN`, `AWS_CONTAINER_AUTHORIZATION_TOKEN`, `GG_DAEMON_PORT`, ...) plus
`GGIC_HANDLER` (`package.module.function` or `/path/to/file.py:function`).
"""

from __future__ import annotations

import base64
import binascii
import importlib
import importlib.util
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from connector import logs

log = logging.getLogger("lambda_runtime")

Handler = Callable[[Any, "Context"], Any]


class ClientContext:
    """`context.client_context`: what the caller put in `X-Amz-Client-Context` (base64 JSON)."""

    def __init__(self, raw: Optional[str]) -> None:
        decoded = {}
        if raw:
            try:
                decoded = json.loads(base64.b64decode(raw, validate=False) or b"{}")
            except (binascii.Error, ValueError):
                log.warning("ignoring a client context that is not base64 JSON")
        if not isinstance(decoded, dict):
            decoded = {}
        self.client = decoded.get("client")
        self.custom = decoded.get("custom") or {}
        self.env = decoded.get("env")

    def __repr__(self) -> str:
        return f"ClientContext(custom={self.custom!r})"


class Context:
    """The `context` argument Greengrass gives a Python handler."""

    def __init__(self, function_arn: str, invocation_id: str, client_context: Optional[str],
                 deadline_ms: Optional[int] = None) -> None:
        self.invoked_function_arn = function_arn
        name_and_qualifier = function_arn.split(":function:", 1)[-1].split(":")
        self.function_name = name_and_qualifier[0]
        self.function_version = name_and_qualifier[1] if len(name_and_qualifier) > 1 else "$LATEST"
        self.aws_request_id = invocation_id
        self.client_context = ClientContext(client_context)
        self.identity = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> Optional[int]:
        """As in AWS Lambda: what is left of the function's timeout (None when the function has no timeout)."""
        if self._deadline_ms is None:
            return None
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self) -> str:
        return f"Context(function_name={self.function_name!r}, aws_request_id={self.aws_request_id!r})"


def load_handler(spec: str) -> Handler:
    """Import `package.module.function` or `/path/to/file.py:function` (module code runs now)."""
    if ".py:" in spec or spec.endswith(".py"):
        path_text, _, function_name = spec.partition(".py")
        path = Path(path_text + ".py").resolve()
        function_name = function_name.lstrip(":") or "function_handler"
        sys.path.insert(0, str(path.parent))
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load a Python module from {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        module_name, _, function_name = spec.rpartition(".")
        module = importlib.import_module(module_name)
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise AttributeError(f"handler {function_name!r} not found in {spec}")
    return handler


def decode_event(payload: bytes, encoding: str) -> Any:
    if encoding == "binary":
        return payload
    if not payload:
        return {}
    return json.loads(payload)


def encode_result(result: Any) -> bytes:
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    return json.dumps(result).encode("utf-8")


def serve(handler: Handler, function_arn: str, encoding: str, client) -> None:
    """Take invocations one at a time, forever (a long-lived function handles its queue in order)."""
    from greengrass_ipc_python_sdk.ipc_client import IPCException, WorkItem

    while True:
        item = client.get_work(function_arn)
        context = Context(function_arn, item.invocation_id, item.client_context, item.deadline_ms)
        error = None
        try:
            event = decode_event(item.payload, encoding)
            result = encode_result(handler(event, context))
        except Exception as exc:  # a Handled error: the caller gets it, the function goes on
            if getattr(exc, "expected", False):  # a refused request the handler has logged already
                log.debug("[%s] %s: %s", item.invocation_id, type(exc).__name__, exc)
            else:
                log.error("[%s] %s: %s", item.invocation_id, type(exc).__name__, exc, exc_info=True)
            error = (str(exc) or type(exc).__name__, type(exc).__name__)
        try:
            if error is None:
                client.post_work_result(function_arn, WorkItem(item.invocation_id, result, None))
            else:
                client.post_handler_err(function_arn, item.invocation_id, *error)
        except IPCException as exc:
            if exc.status != 404:
                raise
            log.warning("[%s] the answer came too late, the runtime had answered already: %s",
                        item.invocation_id, exc.error_message or exc)


def main() -> int:
    logs.configure_lambda_logging()
    function_arn = os.environ["MY_FUNCTION_ARN"]
    handler_spec = os.environ["GGIC_HANDLER"]
    encoding = os.environ.get("ENCODING_TYPE", "json")

    from greengrass_ipc_python_sdk.ipc_client import IPCClient

    client = IPCClient()
    try:
        handler = load_handler(handler_spec)
    except BaseException as exc:  # report why, then stop: the runtime decides whether to retry
        log.critical("function %s failed to initialize: %s: %s", function_arn, type(exc).__name__, exc,
                     exc_info=True)
        client.put_initialization_result(function_arn, exc)
        return 1
    client.put_initialization_result(function_arn)
    log.info("function %s initialized, handler %s", function_arn, handler_spec)
    # A connector with several inference workers takes as many invocations at once: GGIC_CONCURRENCY, read only
    # now, after the handler's import, because the connector's supervisor sets it there to the worker count it
    # started (with `--workers auto` that count is decided on the first worker's measured memory).
    for number in range(1, int(os.environ.get("GGIC_CONCURRENCY") or 1)):
        threading.Thread(target=serve, args=(handler, function_arn, encoding, client), name=f"serve-{number}",
                         daemon=True).start()
    serve(handler, function_arn, encoding, client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
