"""zoo × {fp32, fp16} through the public API: parity floors, the I/O contract, fp16 structure."""

from __future__ import annotations

from pathlib import Path

import pytest

import bridge
import models
from bridge.contract import IOContract
from bridge.runtime import tflite_io, tolerances
from bridge.runtime.runners import LiteRTRunner
from tests.parity.conftest import check_floors, zoo_params

#: fp16 stores weights in half the bytes; graph structure and int32 constants stay as they are,
#: so the ratio is checked only where weights dominate the file.
FP16_MAX_SIZE_RATIO = 0.6
FP16_SIZE_CHECK_MIN_PARAMS = 100_000


def _convert(name: str, mode: str | None, out: Path) -> bridge.Conversion:
    model, inputs = models.get(name)
    return bridge.convert(model, inputs, out, quantize=mode, **models.convert_options(name))


def _check_contract(result: bridge.Conversion, name: str) -> None:
    entry = models.info(name)
    interp = LiteRTRunner(result.tflite_path, IOContract(entry.inputs, entry.outputs)).interpreter
    ins = interp.get_input_details()
    outs = interp.get_output_details()
    assert [d["name"] for d in ins] == entry.input_names
    assert [tuple(d["shape"]) for d in ins] == [s.shape for s in entry.inputs]
    assert [d["name"] for d in outs] == entry.output_names
    assert [tuple(d["shape"]) for d in outs] == [s.shape for s in entry.outputs]
    assert result.report["layout"] == "NCHW"


@pytest.mark.parametrize("name", zoo_params(pytest))
def test_fp32(name: str, tmp_path: Path) -> None:
    result = _convert(name, None, tmp_path / name)
    check_floors(result.report)
    _check_contract(result, name)
    assert result.onnx_path.name == "model.opt.onnx" and result.onnx_path.exists()
    assert (tmp_path / name / "report.json").exists()


@pytest.mark.parametrize("name", zoo_params(pytest))
def test_fp16(name: str, tmp_path: Path) -> None:
    fp32 = _convert(name, None, tmp_path / "fp32")
    result = _convert(name, "fp16", tmp_path / "fp16")
    check_floors(result.report)
    _check_contract(result, name)
    model = tflite_io.load(result.tflite_path.read_bytes())
    tensors = model.subgraphs[0].tensors
    float_consts = [
        t
        for t in tensors
        if t.type == 0
        and tflite_io.buffer_array(model, t) is not None
        and tflite_io.buffer_array(model, t).size > 16
    ]
    half_consts = [
        t for t in tensors if t.type == 1 and tflite_io.buffer_array(model, t) is not None
    ]
    assert not float_consts, [tflite_io.tensor_name(t) for t in float_consts]
    assert half_consts
    assert tflite_io.op_histogram(result.tflite_path.read_bytes())["DEQUANTIZE"] >= 1
    ratio = result.tflite_path.stat().st_size / fp32.tflite_path.stat().st_size
    assert ratio < 1.0, ratio
    params = sum(p.numel() for p in models.get(name)[0].parameters())
    if params >= FP16_SIZE_CHECK_MIN_PARAMS:
        assert ratio <= FP16_MAX_SIZE_RATIO, ratio


def test_sequence_input_is_never_transposed(tmp_path: Path) -> None:
    """[batch, time, features] keeps its shape, and a time-mixing model proves the data kept too."""
    result = _convert("transformer_encoder", None, tmp_path / "t")
    _check_contract(result, "transformer_encoder")
    assert result.report["contract"]["inputs"][0]["layout"] == "plain"
    for c in result.report["parity"]["torch_vs_tflite"].values():
        assert c["sqnr_db"] >= tolerances.FP32_MIN_SQNR_DB
