"""The anchors we compare against: onnx2tf 2.6.9's own outputs, run in this same process.

Each function converts an ONNX file with onnx2tf in a private temporary folder, under bridge's
network guard, and returns {variant: .tflite bytes or an error string} plus the seconds taken.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bridge.contract import IOContract
from bridge.lower.floating.offline import no_network


def onnx2tf_direct(onnx_path: Path) -> tuple[dict[str, bytes | str], float]:
    """onnx2tf's default flatbuffer_direct backend: its float32 and float16 files."""
    import onnx2tf

    tmp = Path(tempfile.mkdtemp(prefix="anchor-direct-"))
    try:
        t0 = time.perf_counter()
        with no_network(), _quiet():
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path), output_folder_path=str(tmp), non_verbose=True
            )
        seconds = time.perf_counter() - t0
        return {
            "fp32": _read(tmp, "_float32.tflite"),
            "fp16": _read(tmp, "_float16.tflite"),
        }, seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def onnx2tf_int8(
    onnx_path: Path, contract: IOContract, calibration: Sequence[Mapping[str, np.ndarray]]
) -> tuple[dict[str, bytes | str], float]:
    """onnx2tf's own per-channel int8 (`-oiqt -qt per-channel`, tf_converter backend), calibrated
    on the same arrays as bridge (given as -cind data, so no sample images are downloaded)."""
    import onnx2tf

    tmp = Path(tempfile.mkdtemp(prefix="anchor-int8-"))
    try:
        cind = []
        for spec in contract.inputs:
            data = np.concatenate([np.asarray(c[spec.name]) for c in calibration])
            if data.ndim == 4:  # onnx2tf wants calibration data in its own NHWC order
                data = np.moveaxis(data, 1, -1)
            path = tmp / f"calib_{spec.name}.npy"
            np.save(path, data.astype(np.float32))
            shape = (1,) * (data.ndim - 1) + (data.shape[-1],)
            cind.append(
                [spec.name, str(path), np.zeros(shape, np.float32), np.ones(shape, np.float32)]
            )
        t0 = time.perf_counter()
        try:
            with no_network(), _quiet():
                onnx2tf.convert(
                    input_onnx_file_path=str(onnx_path),
                    output_folder_path=str(tmp / "out"),
                    tflite_backend="tf_converter",
                    output_integer_quantized_tflite=True,
                    quant_type="per-channel",
                    custom_input_op_name_np_data_path=cind,
                    non_verbose=True,
                )
        except (Exception, SystemExit) as e:  # the anchor's own failure is a result to report
            return {"int8": f"onnx2tf failed: {type(e).__name__}: {str(e)[:200]}"}, 0.0
        seconds = time.perf_counter() - t0
        return {"int8": _read(tmp / "out", "_integer_quant.tflite")}, seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read(folder: Path, suffix: str) -> bytes | str:
    hits = [
        p
        for p in folder.glob(f"*{suffix}")
        if not p.name.endswith("_full" + suffix) and p.name.endswith(suffix)
    ]
    hits = [p for p in hits if "full_integer" not in p.name]
    return hits[0].read_bytes() if hits else f"onnx2tf wrote no *{suffix}"


@contextlib.contextmanager
def _quiet():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield
