"""Run jobs in one long-lived child process, so a native crash (abort, segfault) or a hang is
reported instead of killing the caller.

    with Isolated("tools.fuzz:run_job", timeout_s=600) as child:
        result = child.run(job)      # the function's return value, or a `Died`

The child is started with `spawn` (forking a process whose torch threads are running can
deadlock), imports `module:function` once and serves jobs until closed; after a death the next
job starts a fresh child. Jobs and results must pickle.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Died:
    """The child ended without answering: `reason` is e.g. "killed by SIGABRT"."""

    reason: str


class Isolated:
    """A child process that runs `function(job, *args)` for each `run(job)`."""

    def __init__(self, target: str, *args: Any, timeout_s: float) -> None:
        self.target, self.args, self.timeout_s = target, args, timeout_s
        self.proc: Any = None
        self.conn: Connection | None = None

    def run(self, job: Any) -> Any:
        """The function's result for `job`, or `Died` if the child crashed or timed out."""
        if self.proc is None:
            self._start()
        assert self.conn is not None
        try:
            self.conn.send(job)
            if not self.conn.poll(self.timeout_s):
                self._kill()
                return Died(f"timed out after {self.timeout_s:.0f} s")
            return self.conn.recv()
        except (EOFError, ConnectionError):
            return Died(self._reap())

    def close(self) -> None:
        """Ask the child to exit and wait for it (killing it if it does not)."""
        if self.proc is None or self.conn is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionError):
            self.conn.send(None)
        self.proc.join(timeout=30)
        self._kill()

    def __enter__(self) -> Isolated:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, self.target, self.args), daemon=True)
        self.proc.start()
        child.close()  # only the child holds its end, so its death reads as EOF here

    def _reap(self) -> str:
        self.proc.join(timeout=30)
        code = self.proc.exitcode
        self._kill()
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def _kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        if self.conn is not None:
            self.conn.close()
        self.proc, self.conn = None, None


def _serve(conn: Connection, target: str, args: tuple[Any, ...]) -> None:
    module, name = target.split(":")
    function = getattr(importlib.import_module(module), name)
    while (job := conn.recv()) is not None:
        conn.send(function(job, *args))
