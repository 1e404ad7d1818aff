"""Run a .tflite in a child process before bridge loads it, so a native LiteRT crash (a
segfault, an abort, a glibc double free) is a RuntimeCrashError naming the op, not a dead process.

`probe` runs `litert_child.py` (load, allocate, invoke twice from the reset state, read the
outputs, release) in a child forked from a zygote process that has imported numpy and LiteRT
once (`zygote`): the first probe of a process costs about 0.15 s of CPU, later ones little more
than the model's own load and invoke. A model that ran cleanly is remembered for the process's
life by its SHA-256, interpreter options and input shapes, so each .tflite is probed once. When
the child dies, the crash site is found by bisection (`crash_site.locate`) in further children.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.errors import ModelLoadError, RuntimeCrashError
from bridge.runtime import crash_site, litert_child, zygote

#: A child that has not finished by then is taken as hung (int16x8 runs on slow reference
#: kernels, so this is generous).
PROBE_TIMEOUT_S = 600.0
STAGE_WORDS = {
    "load": "loading",
    "allocate": "allocating",
    "invoke": "running",
    "release": "releasing",
}
_PASSED: set[tuple] = set()


@dataclass(frozen=True)
class ChildResult:
    """How a child ended: `returncode` (negative: the signal; None: timed out), the last stage
    it entered, and the last line it wrote to stderr that is not LiteRT's own logging."""

    returncode: int | None
    stage: str | None
    detail: str

    @property
    def crashed(self) -> bool:
        return self.returncode not in (0, litert_child.EXIT_ERROR)

    @property
    def how(self) -> str:
        if self.returncode is None:
            return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
        if self.returncode < 0:
            try:
                return signal.Signals(-self.returncode).name
            except ValueError:
                return f"signal {-self.returncode}"
        return f"exit status {self.returncode}"


@dataclass(frozen=True)
class Options:
    """The interpreter options the child must share with the in-process interpreter."""

    num_threads: int = 1
    preserve_all_tensors: bool = False


def probe(
    model: bytes | Path,
    options: Options,
    *,
    feeds: Sequence[Mapping[int, np.ndarray]] | None = None,
) -> None:
    """Load, allocate and invoke `model` in a child process (once per model and shapes).

    Args:
        model: the .tflite bytes or path.
        options: the interpreter options.
        feeds: samples keyed by input tensor index, in the .tflite's layout and dtype; None for
            seeded random inputs of the declared shapes.

    Raises:
        RuntimeCrashError: the child died; names the signal, the stage and the op.
        ModelLoadError: `model` is a path that cannot be read.
    """
    try:
        data = bytes(model) if isinstance(model, bytes | bytearray) else Path(model).read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read the .tflite model {model}: {e}") from e
    shapes = None if feeds is None else tuple(tuple(sorted(_shapes(f))) for f in feeds)
    key = (hashlib.sha256(data).hexdigest(), options, shapes)
    if key in _PASSED:
        return
    with tempfile.TemporaryDirectory(prefix="bridge-litert-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        feeds_path = _write_feeds(Path(tmp) / "feeds.npz", feeds) if feeds is not None else None
        result = run_child(path, options, feeds=feeds_path)
        if result.crashed:
            raise _crash_error(data, result, options, feeds_path, Path(tmp))
    _PASSED.add(key)


def run_child(model: Path, options: Options, *, feeds: Path | None) -> ChildResult:
    """Run `litert_child.main` on `model` in a forked child of the zygote (a one-shot `python`
    child if the zygote cannot be used) and say how it ended."""
    argv = [
        str(model),
        str(feeds) if feeds is not None else "-",
        str(options.num_threads),
        "1" if options.preserve_all_tensors else "0",
    ]
    out, err = model.with_suffix(".out"), model.with_suffix(".err")
    try:
        code = zygote.run(argv, out, err, env=child_env(), timeout=PROBE_TIMEOUT_S)
        stdout, stderr = _read(out), _read(err)
    except zygote.ZygoteError:
        code, stdout, stderr = _one_shot(argv)
    return ChildResult(code, _last_stage(stdout), _detail(stderr) if code is not None else "")


def child_env() -> dict[str, str]:
    """The environment of the children: no Python fault handler (its dump would hide glibc's
    message), glibc's fatal messages on stderr, and one BLAS thread so the zygote can fork."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    return {**env, "LIBC_FATAL_STDERR_": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _one_shot(argv: list[str]) -> tuple[int | None, str, str]:
    try:
        done = subprocess.run(
            [sys.executable, litert_child.__file__, *argv],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env=child_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        return None, out or "", ""
    return done.returncode, done.stdout, done.stderr


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:  # the child died before redirecting its output
        return ""


def _crash_error(
    data: bytes, result: ChildResult, options: Options, feeds: Path | None, tmp: Path
) -> RuntimeCrashError:
    """The error for a crashed child, its op found by bisection (not for a hang: too slow)."""
    cut = tmp / "truncated.tflite"

    def crashes(copy: bytes) -> bool:
        cut.write_bytes(copy)
        return run_child(cut, options, feeds=feeds).crashed

    site = crash_site.locate(data, crashes) if result.returncode is not None else None
    return RuntimeCrashError(
        crash_message(result, site),
        signal=result.how,
        stage=result.stage,
        op_index=site.op_index if site else None,
        op_type=site.op_type if site else None,
        tensor=site.tensor if site else None,
    )


def crash_message(result: ChildResult, site: crash_site.CrashSite | None) -> str:
    """One line: what crashed, at which op, and what to do."""
    if site is None:
        where = (
            "(no single op could be blamed: the file does not parse, or every copy cut short runs)"
        )
    else:
        output = f" (output tensor '{site.tensor}')" if site.tensor else ""
        where = f"at op #{site.op_index} {site.op_type}{output}, the first op whose inclusion "
        where += "crashes it"
    detail = f" [{result.detail}]" if result.detail else ""
    stage = STAGE_WORDS.get(result.stage or "", "loading")
    return (
        f"LiteRT crashed ({result.how}){detail} while {stage} the .tflite {where}. The .tflite "
        "cannot run as lowered: convert with a different mode (e.g. fp32 or fp16 instead of "
        "an integer mode), and please file the model with this message"
    )


def _shapes(feed: Mapping[int, np.ndarray]) -> list[tuple[int, tuple[int, ...]]]:
    return [(int(i), tuple(np.shape(a))) for i, a in feed.items()]


def _write_feeds(path: Path, feeds: Sequence[Mapping[int, np.ndarray]]) -> Path:
    arrays = {f"{s}/{i}": np.asarray(a) for s, feed in enumerate(feeds) for i, a in feed.items()}
    np.savez(path, **arrays)
    return path


def _last_stage(stdout: str) -> str | None:
    stages = [line.split()[1] for line in stdout.splitlines() if line.startswith("stage ")]
    return stages[-1] if stages else None


def _detail(stderr: str) -> str:
    """The last stderr line that is not LiteRT's INFO/WARNING logging (glibc's "double free
    detected" and the like), shortened."""
    lines = [
        ln.strip()
        for ln in stderr.splitlines()
        if ln.strip() and not ln.startswith(("INFO:", "WARNING:", " ", "\t"))
    ]
    return lines[-1][:160] if lines else ""
