"""Who is calling the IPC server: one token per hosted function, per client, and one for the runtime's control.

On a Greengrass core each Lambda has credentials of its own. Here every hosted function (a Lambda process, or a
connector hosted natively, whose child processes inherit it) gets its own random token in
`AWS_CONTAINER_AUTHORIZATION_TOKEN`, and so does every process made a Lambda of the runtime by `ggic env` or
`ggic invoke` (a *client*, issued on request with the control token, which only the state directory holds). A
token names its principal; the IPC server decides what that principal may do (`ipc_server.py`). Tokens are
compared by their SHA-256 digest, never logged, and the map holds at most `MAX_CLIENTS` client tokens (the
oldest is revoked beyond that).
"""

from __future__ import annotations

import collections
import hashlib
import secrets
import threading
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

FUNCTION, CLIENT, CONTROL = "function", "client", "control"
MAX_CLIENTS = 4096
_TOKEN_BYTES = 32


@dataclass(frozen=True)
class Principal:
    """The holder of a token: a function (`name` is its ARN, as in its MY_FUNCTION_ARN), a client (`name` is
    `client-<n>`) or the runtime's control."""

    kind: str
    name: str
    function_arn: str = ""  # the ARN it invokes as (MY_FUNCTION_ARN): a client's is the shared client ARN
    worker: str = ""        # a function's process, where one function has several (on-demand): its worker id

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


class Credentials:
    """The runtime's tokens and their principals (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._principals: Dict[bytes, Principal] = {}
        self._clients: "collections.OrderedDict[bytes, Principal]" = collections.OrderedDict()
        self._client_count = 0
        self._by_function: Dict[Tuple[str, str], bytes] = {}
        self.control_token = self._issue(Principal(CONTROL, "control"))

    def _issue(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        with self._lock:
            self._principals[_digest(token)] = principal
        return token

    def issue_function(self, function_arn: str, worker: str = "") -> str:
        """A fresh token for a function's process (or a restart of it); its previous token stops working. `worker`
        tells apart the processes of a function that has several at once (each its own token)."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        digest = _digest(token)
        with self._lock:
            previous = self._by_function.pop((function_arn, worker), None)
            if previous is not None:
                self._principals.pop(previous, None)
            self._principals[digest] = Principal(FUNCTION, function_arn, function_arn, worker)
            self._by_function[(function_arn, worker)] = digest
        return token

    def revoke_function(self, function_arn: str, worker: str = "") -> None:
        with self._lock:
            digest = self._by_function.pop((function_arn, worker), None)
            if digest is not None:
                self._principals.pop(digest, None)

    def issue_client(self, client_arn: str) -> str:
        """A token for one outside process acting as a Lambda of the runtime (`ggic env`)."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        digest = _digest(token)
        with self._lock:
            self._client_count += 1
            principal = Principal(CLIENT, f"client-{self._client_count}", client_arn)
            self._principals[digest] = principal
            self._clients[digest] = principal
            while len(self._clients) > MAX_CLIENTS:
                oldest, _ = self._clients.popitem(last=False)
                self._principals.pop(oldest, None)
        return token

    def principal(self, token: str) -> Optional[Principal]:
        if not token:
            return None
        with self._lock:
            return self._principals.get(_digest(token))
