"""TorchRunner, OrtRunner and LiteRTRunner behind one interface: the same outputs on a tiny
converted model, the contract's input checks, and integer .tflite I/O quantized and dequantized
at the runner's boundary with the interpreter's own parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import bridge
from bridge.contract import IOContract
from bridge.errors import ModelLoadError, ShapeError
from bridge.modes import MODES
from bridge.outdir import FILES
from bridge.qparams import QParams
from bridge.runtime.feeds import random_feeds
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import LiteRTRunner, OrtRunner, TorchRunner, expose_outputs


def _convert(tmp: Path, **kwargs) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    model = model.eval()
    result = bridge.convert(model, (torch.randn(1, 8),), tmp, verify_samples=1, **kwargs)
    return model, result.report


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("fp32") / "out"
    model, report = _convert(out)
    return out, model, IOContract.from_dict(report["contract"])


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("int8") / "out"
    torch.manual_seed(1)
    calibration = [(torch.randn(1, 8),) for _ in range(16)]
    model, report = _convert(out, quantize="int8", calibration=calibration, io_dtype="int8")
    user = IOContract.from_dict(report["contract"])
    return out, model, user, IOContract.from_dict(report["tflite_contract"])


def _runners(fp32) -> dict:
    out, model, contract = fp32
    return {
        "torch": TorchRunner(model, contract),
        "ort": OrtRunner(onnx.load(out / FILES["opt"]), contract),
        "litert": LiteRTRunner(out / FILES["tflite"], contract),
    }


def test_three_runners_agree_on_fp32(fp32) -> None:
    contract = fp32[2]
    feeds = random_feeds(contract, seed=3)
    outs = {name: r.run(feeds) for name, r in _runners(fp32).items()}
    mode = MODES.get("fp32")
    for name, out in outs.items():
        assert list(out) == contract.output_names, name
        assert out["output_0"].shape == (1, 4) and out["output_0"].dtype == np.float32
    ref = outs["torch"]["output_0"]
    assert sqnr_db(ref, outs["ort"]["output_0"]) >= mode.floor("torch_vs_ort")
    assert sqnr_db(ref, outs["litert"]["output_0"]) >= mode.floor("torch_vs_tflite")
    other = _runners(fp32)["litert"].run(random_feeds(contract, seed=4))["output_0"]
    assert sqnr_db(ref, other) < mode.floor("torch_vs_tflite")  # inputs do matter


@pytest.mark.parametrize("runner", ["torch", "ort", "litert"])
@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"input_0": np.zeros((1, 7), np.float32)}, "expected shape"),
        ({"input_0": np.zeros((8,), np.float32)}, "expected rank 2"),
        ({"input_0": np.zeros((1, 8), np.float64)}, "expected dtype float32"),
        ({"x": np.zeros((1, 8), np.float32)}, r"missing \['input_0'\], unexpected \['x'\]"),
    ],
)
def test_bad_feeds_are_shape_errors(fp32, runner: str, feeds: dict, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        _runners(fp32)[runner].run(feeds)


def test_torch_runner_counts_outputs(fp32) -> None:
    _, model, contract = fp32
    twice = TorchRunner(lambda x: (model(x), model(x)), contract)
    with pytest.raises(ShapeError, match="returned 2 outputs, the contract has 1"):
        twice.run(random_feeds(contract, seed=0))


def test_ort_runner_exposes_intermediates(fp32) -> None:
    out, _, contract = fp32
    model = onnx.load(out / FILES["opt"])
    hidden = model.graph.node[0].output[0]
    runner = OrtRunner(model, contract, extra_outputs=[hidden])
    got = runner.run(random_feeds(contract, seed=0))
    assert list(got) == ["output_0", hidden]
    assert len(expose_outputs(model, [hidden, hidden]).graph.output) == 2
    assert len(model.graph.output) == 1  # the copy was extended, not the model


def test_unloadable_models_are_model_load_errors(fp32, tmp_path: Path) -> None:
    contract = fp32[2]
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load"):
        OrtRunner(onnx.ModelProto(ir_version=8, graph=onnx.GraphProto(name="g")), contract)
    with pytest.raises(ModelLoadError):
        LiteRTRunner(b"TFL3" + bytes(60), contract)


def test_integer_io_is_quantized_and_dequantized(int8) -> None:
    from ai_edge_litert.interpreter import Interpreter

    out, model, user, tflite = int8
    assert tflite.inputs[0].dtype == "int8" and user.inputs[0].dtype == "float32"
    feeds = random_feeds(user, seed=5)
    y = LiteRTRunner(out / FILES["tflite"], tflite, user_contract=user).run(feeds)["output_0"]

    interp = Interpreter(model_path=str(out / FILES["tflite"]))
    interp.allocate_tensors()
    (din,), (dout,) = interp.get_input_details(), interp.get_output_details()
    q_in = QParams(*din["quantization"], "int8")
    q_out = QParams(*dout["quantization"], "int8")
    interp.set_tensor(din["index"], q_in.quantize(feeds["input_0"]))
    interp.invoke()
    raw = interp.get_tensor(dout["index"])
    assert raw.dtype == np.int8 and y.dtype.kind == "f"
    np.testing.assert_array_equal(y, q_out.dequantize(raw))
    levels = y / q_out.scale + q_out.zero_point
    np.testing.assert_array_equal(levels, np.round(levels))  # on the output grid

    # already-quantized feeds through the integer contract give the same result
    int_feeds = {"input_0": q_in.quantize(feeds["input_0"])}
    same = LiteRTRunner(out / FILES["tflite"], tflite).run(int_feeds)["output_0"]
    np.testing.assert_array_equal(same, y)

    with torch.inference_mode():
        ref = model(torch.from_numpy(feeds["input_0"])).numpy()
    assert sqnr_db(ref, y) >= MODES.get("int8").floor("torch_vs_tflite")
