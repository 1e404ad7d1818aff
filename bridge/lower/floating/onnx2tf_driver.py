"""Run onnx2tf (flatbuffer_direct backend) on one ONNX model, quietly, offline, in a private folder.

How it is called, and why:
- `keep_shape_absolutely_input_names` gets every input, so the .tflite inputs keep their ONNX
  shapes. Without it onnx2tf transposes 4-D inputs to NHWC and also 3-D inputs to "NWC" when the
  graph has convolutions, which silently turns a [batch, time, features] sequence into
  [batch, features, time]. Channel-last I/O is added afterwards by `layout.py`, under our control.
- `not_use_onnxsim=True`: onnx2tf otherwise runs the `onnxsim` executable three times in
  subprocesses, but only if it happens to be on PATH, so the graph (and 3× the time) would depend
  on the shell. Constant folding is the job of bridge's own passes.
- Nothing is fetched: the TFLite schema is bundled and no calibration images are needed for the
  float path. `no_network()` makes any attempt fail loudly anyway.
- Everything onnx2tf prints (logs, tqdm bars) and warns goes into a buffer, logged at DEBUG and
  quoted in error messages. Its `sys.exit(1)` calls become `LoweringError`, never a process exit.
- The global random states that onnx2tf reseeds are restored afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bridge.errors import BridgeError, LoweringError
from bridge.lower.floating import unsupported
from bridge.lower.floating.offline import no_network

log = logging.getLogger(__name__)

#: onnx2tf keeps module-level state (shape hints, progress settings): one conversion at a time
#: per process. Separate processes are independent (each uses its own temporary folder).
_LOCK = threading.Lock()

#: Above this many bytes an ONNX model is written with external data (protobuf's 2 GiB limit).
_EXTERNAL_DATA_BYTES = 1_800_000_000

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UNSUPPORTED = re.compile(r"not supported|unsupported|not implemented|NotImplemented", re.I)


@dataclass(frozen=True)
class Onnx2TfResult:
    """What one onnx2tf run produced.

    Attributes:
        tflite: the float32 .tflite bytes.
        records: the tensor correspondence report's records (one per ONNX node output, with
            `onnx_output_name`, `resolved_tflite_tensor_name`, `assume_channel_last_layout`,
            `exists_in_final_model`, ...).
        log: everything onnx2tf printed.
        seconds: wall time of the conversion.
    """

    tflite: bytes
    records: tuple[dict[str, Any], ...]
    log: str
    seconds: float


def backend_name() -> str:
    """The backend and version string recorded in the artifact's facts."""
    return f"onnx2tf flatbuffer_direct {version('onnx2tf')}"


def run_onnx2tf(model: onnx.ModelProto, *, keep_shape_inputs: Sequence[str]) -> Onnx2TfResult:
    """Convert `model` to a float32 .tflite with onnx2tf's flatbuffer_direct backend.

    Args:
        model: a float ONNX model.
        keep_shape_inputs: inputs whose shape (and so layout) onnx2tf must not change.

    Raises:
        UnsupportedOpError: onnx2tf named a node or op it cannot lower.
        LoweringError: any other onnx2tf failure (its last error lines are in the message).
    """
    workdir = Path(tempfile.mkdtemp(prefix="bridge_onnx2tf_"))
    buffer = io.StringIO()
    try:
        onnx_path = workdir / "model.onnx"
        _save(model, onnx_path)
        out_dir = workdir / "out"
        start = time.perf_counter()
        try:
            with (
                _LOCK,
                _keep_rng_state(),
                no_network() as blocked,
                contextlib.redirect_stdout(buffer),
                contextlib.redirect_stderr(buffer),
                warnings.catch_warnings(record=True) as caught,
            ):
                warnings.simplefilter("always")
                import onnx2tf

                onnx2tf.convert(
                    input_onnx_file_path=str(onnx_path),
                    output_folder_path=str(out_dir),
                    tflite_backend="flatbuffer_direct",
                    keep_shape_absolutely_input_names=list(keep_shape_inputs) or None,
                    not_use_onnxsim=True,
                    non_verbose=True,
                    verbosity="error",
                )
        except BridgeError:
            raise
        except (Exception, SystemExit) as e:  # onnx2tf raises anything, and exits on errors
            raise _wrap(e, buffer.getvalue(), model) from e
        seconds = time.perf_counter() - start
        text = buffer.getvalue()
        log.debug("onnx2tf log:\n%s", text)
        for w in caught:
            log.debug("onnx2tf warning: %s: %s", w.category.__name__, w.message)
        if blocked.targets:
            log.warning("onnx2tf tried to reach the network: %s", blocked.targets)
        tflite = out_dir / "model_float32.tflite"
        if not tflite.is_file():
            raise LoweringError(
                f"onnx2tf finished but wrote no float32 .tflite in {out_dir}; "
                f"its last messages: {_tail(text)}"
            )
        return Onnx2TfResult(tflite.read_bytes(), _records(out_dir), text, seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _keep_rng_state() -> Iterator[None]:
    """Restore Python's, numpy's and (if loaded) torch's global RNGs afterwards: onnx2tf seeds
    them (`set_random_seed(0)`), which would silently change the caller's random streams."""
    torch = sys.modules.get("torch")
    saved = (
        random.getstate(),
        np.random.get_state(),
        torch.random.get_rng_state() if torch else None,
    )
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        if torch is not None and saved[2] is not None:
            torch.random.set_rng_state(saved[2])


def _save(model: onnx.ModelProto, path: Path) -> None:
    if model.ByteSize() > _EXTERNAL_DATA_BYTES:
        onnx.save(model, str(path), save_as_external_data=True, location="model.onnx.data")
    else:
        onnx.save(model, str(path))


def _records(out_dir: Path) -> tuple[dict[str, Any], ...]:
    reports = sorted(out_dir.glob("*_tensor_correspondence_report.json"))
    if not reports:
        log.debug("onnx2tf wrote no tensor correspondence report")
        return ()
    try:
        data = json.loads(reports[0].read_text())
    except (OSError, ValueError) as e:
        log.warning("unreadable onnx2tf correspondence report %s: %s", reports[0], e)
        return ()
    return tuple(data.get("records", ()))


def _tail(text: str, lines: int = 5) -> str:
    """The last error lines of onnx2tf's output (else its last lines), without colour codes."""
    clean = [_ANSI.sub("", ln).strip() for ln in text.splitlines()]
    clean = [ln for ln in clean if ln and "it/s" not in ln and "%|" not in ln]
    errors = [ln for ln in clean if "ERROR" in ln or "Error" in ln]
    return " | ".join((errors or clean)[-lines:]) or "(no output)"


def _wrap(e: BaseException, text: str, model: onnx.ModelProto) -> BridgeError:
    """The typed error for an onnx2tf failure."""
    log.debug("onnx2tf log before the failure:\n%s", text)
    if isinstance(e, SystemExit):
        message = _tail(text)
    else:
        message = f"{type(e).__name__}: {e}"
        if "ERROR" in text:
            message += f" (onnx2tf: {_tail(text, 2)})"
    node = unsupported.node_in_message(model, message)
    if node is None and isinstance(e, NotImplementedError):
        node = unsupported.op_type_in_message(model, message)
    if node is not None and (isinstance(e, NotImplementedError) or _UNSUPPORTED.search(message)):
        return unsupported.error_for_node(node, message)
    where = f" at ONNX node {node.name!r} ({node.op_type})" if node is not None else ""
    return LoweringError(
        f"onnx2tf could not lower the model{where}: {message}. Run with logging at DEBUG "
        "level for onnx2tf's full output; simplifying the graph (bridge passes) may help."
    )
