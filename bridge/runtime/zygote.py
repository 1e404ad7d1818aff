"""One long-lived `litert_child.py --serve` process per bridge process, which forks each probe.

A fresh `python` child spends about 0.13 s of CPU importing numpy and LiteRT before it loads a
model; the zygote imports them once, so every probe after the first costs only the fork and the
model's own load, allocate and invoke. The zygote itself never creates an interpreter, so a
crash kills only the forked child. It ends when bridge does (its input closes).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bridge.runtime import litert_child

_LOCK = threading.Lock()
_ZYGOTE: Zygote | None = None


class ZygoteError(Exception):
    """The zygote stopped answering; callers fall back to a one-shot child."""


class Zygote:
    """The `--serve` process and its answer stream."""

    def __init__(self, env: dict[str, str]) -> None:
        self.owner = os.getpid()  # a forked copy of bridge must not share the pipe
        self.proc = subprocess.Popen(
            [sys.executable, litert_child.__file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        self._buffer = b""

    def run(self, argv: list[str], out: Path, err: Path, timeout: float) -> int | None:
        """Fork a child running `litert_child.main(argv)`; its exit code (negative: the
        signal), or None if it ran past `timeout` seconds (it is then killed)."""
        request = {"argv": argv, "out": str(out), "err": str(err)}
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")  # type: ignore[union-attr]
            pid = self._answer(timeout)["pid"]
            try:
                return int(self._answer(timeout)["status"])
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._answer(timeout)
                return None
        except (OSError, ValueError, KeyError, TimeoutError) as e:
            raise ZygoteError(str(e)) from e

    def _answer(self, timeout: float) -> dict:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no answer within {timeout:.0f} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise OSError("the zygote ended")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def run(argv: list[str], out: Path, err: Path, *, env: dict[str, str], timeout: float):
    """Run one probe through this process's zygote (started on first use).

    Raises:
        ZygoteError: the zygote cannot be used; run a one-shot child instead.
    """
    global _ZYGOTE
    with _LOCK:
        if _ZYGOTE is None or _ZYGOTE.owner != os.getpid() or _ZYGOTE.proc.poll() is not None:
            try:
                _ZYGOTE = Zygote(env)
            except OSError as e:
                raise ZygoteError(str(e)) from e
            atexit.register(_ZYGOTE.close)
        try:
            return _ZYGOTE.run(argv, out, err, timeout)
        except ZygoteError:
            _ZYGOTE.close()
            _ZYGOTE = None
            raise
