"""A guard that makes network connections fail while a stage runs.

No stage may touch the network (DESIGN.md). onnx2tf's flatbuffer_direct backend ships its TFLite
schema and needs no sample data, but it is a large third-party library; lowering runs inside
`no_network()` so that a hidden download fails at once instead of hanging or silently fetching.
Local (AF_UNIX) sockets stay allowed. Subprocesses are not covered, which is one reason the
driver turns off onnx2tf's onnxsim subprocess.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class NetworkBlockedError(ConnectionRefusedError):
    """Raised in place of a network connection inside `no_network()`."""


@dataclass
class BlockedAttempts:
    """What `no_network()` refused: one "host:port" (or host name) per attempt."""

    targets: list[str] = field(default_factory=list)


@contextmanager
def no_network() -> Iterator[BlockedAttempts]:
    """Within the block, IP socket connections and name lookups raise `NetworkBlockedError`.

    Yields:
        A record of the refused attempts (useful because libraries often swallow the error).
    """
    attempts = BlockedAttempts()
    saved = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.create_connection,
        socket.getaddrinfo,
    )
    orig_connect, orig_connect_ex = saved[0], saved[1]

    def refuse(target: Any) -> NetworkBlockedError:
        text = ":".join(str(p) for p in target) if isinstance(target, tuple) else str(target)
        attempts.targets.append(text)
        log.warning("blocked a network connection to %s during lowering", text)
        return NetworkBlockedError(f"network access is disabled during lowering ({text})")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family == socket.AF_UNIX:
            return orig_connect(self, address)
        raise refuse(address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family == socket.AF_UNIX:
            return orig_connect_ex(self, address)
        raise refuse(address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        raise refuse(address)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list:
        raise refuse((host, port))

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.create_connection = create_connection  # type: ignore[assignment]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    try:
        yield attempts
    finally:
        (
            socket.socket.connect,
            socket.socket.connect_ex,
            socket.create_connection,
            socket.getaddrinfo,
        ) = saved  # type: ignore[method-assign,assignment]
