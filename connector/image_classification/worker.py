"""The inference worker: the only process that loads the inference engine and runs model code.

Started by `supervisor.InferenceSupervisor` as `python -m connector.image_classification.worker` with the connector's
parameters in its environment. It loads the model, runs one warm-up forward (so the memory it reports is what serving
needs), says `ready`, then answers frames from its supervisor one at a time: `infer` (image bytes → probabilities or a
refused request, with the request's `seq` echoed) and `ping` (liveness and RSS). It exits when its supervisor goes away.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from typing import BinaryIO

from connector.contract import logformat as logs
from connector.contract.processes import rss_kb
from connector.image_classification.errors import ConnectorStartError, RequestError
from connector.image_classification.frames import FrameError, read_frame, write_frame

log = logging.getLogger("connector.image_classification.worker")

ORPHAN_CHECK_S = 1.0


def _exit_when_orphaned(parent: int) -> None:
    """A supervisor killed without closing our pipe must not leave a model-sized orphan behind."""
    while True:
        time.sleep(ORPHAN_CHECK_S)
        if os.getppid() != parent:
            os._exit(0)


def _load(output: BinaryIO):
    from connector.image_classification.parameters import ImageClassificationParameters
    from connector.image_classification.service import ImageClassificationService

    parameters = ImageClassificationParameters.from_environment(os.environ)
    logs.set_service_name(parameters.service_name)
    service = ImageClassificationService(parameters)
    try:
        service.initialize()
        began = time.monotonic()
        service.warm_up()
        log.info("warm-up inference took %.3f s", time.monotonic() - began)
    except ConnectorStartError as exc:
        write_frame(output, {"op": "failed", "type": type(exc).__name__, "message": str(exc)})
        raise SystemExit(3)
    except Exception as exc:
        log.critical("the model could not be loaded: %s", traceback.format_exc())
        write_frame(output, {"op": "failed", "type": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(3)
    shape = service.shape
    write_frame(output, {"op": "ready", "pid": os.getpid(), "rss_kb": rss_kb(),
                         "shape": [shape.channels, shape.height, shape.width],
                         "classes": service.model.num_classes})
    return service


def _serve(service, requests: int, output: BinaryIO) -> None:
    while True:
        try:
            header, body = read_frame(requests)
        except FrameError:
            return  # the supervisor closed the pipe: time to go
        op = header.get("op")
        if op == "ping":
            write_frame(output, {"op": "pong", "rss_kb": rss_kb()})
        elif op == "infer":
            sequence = header.get("seq")  # echoed, so the supervisor can tell this answer is the request's in hand
            try:
                answer = service.handle(body, header.get("content_type"))
            except RequestError as exc:
                write_frame(output, {"op": "refused", "seq": sequence, "type": type(exc).__name__,
                                     "message": str(exc)})
            except Exception as exc:  # a bug or an engine error: this request fails, the worker goes on
                log.error("inference failed: %s", traceback.format_exc())
                write_frame(output, {"op": "refused", "seq": sequence, "type": "InferenceError",
                                     "message": f"inference failed: {type(exc).__name__}: {exc}"})
            else:
                write_frame(output, {"op": "answer", "seq": sequence, "content_type": answer["ContentType"]},
                            answer["Body"].encode("utf-8"))
        else:
            write_frame(output, {"op": "refused", "type": "ProtocolError", "message": f"unknown op {op!r}"})


def main() -> int:
    logs.configure_lambda_logging()
    # Frames travel on the original stdout; anything else that writes to fd 1 (native libraries) goes to stderr.
    output = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), name="orphan-check", daemon=True).start()
    service = _load(output)
    _serve(service, sys.stdin.fileno(), output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
