"""Per-layer localization: faults planted in one layer must be named, and blamed on the right
stage (export, quantization or conversion)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import bridge
import models
from bridge.cli import main
from bridge.export import ExportConfig, export
from bridge.lower.integer import lower_int8
from bridge.passes import run_passes
from bridge.quantize import OBSERVERS, QuantConfig, quantize
from bridge.quantize.observers import MinMaxObserver
from bridge.runtime import tflite_io, tolerances
from bridge.runtime.capture import dequantize, float_tensors, to_channel_first
from bridge.runtime.feeds import random_feeds
from bridge.runtime.module_map import scope_path
from bridge.verify.divergence import short_name
from bridge.verify.localize import localize_conversion, localize_dir, report_correspondence
from bridge.verify.modes_table import float_op_count

MODEL = "digits_cnn"
#: The planted range is this many times wider than what the observer saw: most values then
#: round to zero, far below any quantization floor.
WIDEN = 1000.0
WIDE_OBSERVER = "test_wide_range"


class _WideRange(MinMaxObserver):
    name = WIDE_OBSERVER

    def _range(self, dtype: str, symmetric: bool) -> tuple[float, float]:
        lo, hi = super()._range(dtype, symmetric)
        return lo * WIDEN, hi * WIDEN


# ---- pure helpers ---------------------------------------------------------------------------


def test_scope_path_follows_the_exporter_naming() -> None:
    assert scope_path("features.0.0") == "/features/features.0/features.0.0"
    assert scope_path("features.1.block.0.0") == "/features/features.1/block/block.0/block.0.0"
    assert scope_path("fc") == "/fc"
    assert short_name("/features/features.1/block/block.0/block.0.0/Conv") == (
        "features.1/block.0.0/Conv"
    )


def test_to_channel_first_uses_shape_then_flag() -> None:
    x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)  # NHWC
    np.testing.assert_array_equal(to_channel_first(x, (2, 3, 4, 5), None), x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(to_channel_first(x, (2, 4, 5, 3), None), x)
    assert to_channel_first(x, (2, 5, 4, 3), True) is None
    conv1d = np.arange(2 * 1 * 7 * 3, dtype=np.float32).reshape(2, 1, 7, 3)  # [N, 1, W, C]
    np.testing.assert_array_equal(
        to_channel_first(conv1d, (2, 3, 7), None), conv1d[:, 0].transpose(0, 2, 1)
    )
    cube = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3)  # ambiguous shape
    np.testing.assert_array_equal(to_channel_first(cube, cube.shape, False), cube)
    np.testing.assert_array_equal(
        to_channel_first(cube, cube.shape, True), cube.transpose(0, 3, 1, 2)
    )


def test_dequantize_per_tensor_only() -> None:
    q = np.array([-128, 0, 5], np.int8)
    detail = {"quantization_parameters": {"scales": [0.5], "zero_points": [-128]}}
    value, scale = dequantize(q, detail)
    np.testing.assert_allclose(value, [0.0, 64.0, 66.5])
    assert scale == 0.5
    per_channel = {"quantization_parameters": {"scales": [0.5, 1.0], "zero_points": [0, 0]}}
    assert dequantize(q, per_channel) == (None, None)


# ---- fp32: a conversion folder --------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    return models.get(MODEL)


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory, digits) -> Path:
    out = tmp_path_factory.mktemp("localize") / "fp32"
    model, inputs = digits
    bridge.convert(model, inputs, out, **models.convert_options(MODEL))
    return out


def _conv_outputs(folder: Path) -> list[str]:
    opt = onnx.load(folder / "model.opt.onnx")
    return [n.output[0] for n in opt.graph.node if n.op_type == "Conv"]


def _node_of(model: onnx.ModelProto, tensor: str) -> str:
    return next(n.name for n in model.graph.node if tensor in n.output)


def plant_weight_fault(data: bytes, tflite_tensor: str) -> bytes:
    """Negate the weights of the .tflite operator that writes `tflite_tensor`."""
    model = tflite_io.load(data)
    sg = model.subgraphs[0]
    index = next(i for i, t in enumerate(sg.tensors) if tflite_io.tensor_name(t) == tflite_tensor)
    op = next(op for op in sg.operators if index in list(op.outputs))
    weight = sg.tensors[op.inputs[1]]
    values = tflite_io.buffer_array(model, weight)
    model.buffers[weight.buffer].data = np.frombuffer((-values).tobytes(), np.uint8)
    return tflite_io.save(model)


def test_clean_fp32_folder_has_no_divergence(fp32_dir: Path, digits) -> None:
    layers = localize_dir(fp32_dir, module=digits[0])
    assert layers["first_divergence"] is None, layers["first_divergence"]
    opt = onnx.load(fp32_dir / "model.opt.onnx")
    assert [r["tensor"] for r in layers["rows"]] == [t for t, _ in float_tensors(opt)]
    floor = tolerances.floor("fp32", "ort_vs_tflite")
    tfl = [
        r["metrics"]["ort_vs_tflite"]["sqnr_db"]
        for r in layers["rows"]
        if "ort_vs_tflite" in r["metrics"]
    ]
    # every ONNX tensor the lowering kept is compared: 8 of the 10 here (the two Conv outputs
    # are fused with their ReLU in the .tflite)
    assert len(tfl) == 8 and min(tfl) >= floor, tfl
    torch_sqnr = [r["metrics"]["torch_vs_ort"]["sqnr_db"] for r in layers["rows"]]
    assert len(torch_sqnr) == len(layers["rows"]) and min(torch_sqnr) >= floor, torch_sqnr
    report = json.loads((fp32_dir / "report.json").read_text())
    assert report_correspondence(report), "report.json must carry the tensor correspondence"
    assert report["layers"]["first_divergence"] is None
    assert float_op_count((fp32_dir / "model.tflite").read_bytes()) == sum(
        report["lowering"]["op_counts"].values()
    )


def test_planted_tflite_weight_fault_is_a_conversion_error(fp32_dir: Path, tmp_path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(fp32_dir, bad)
    report = json.loads((bad / "report.json").read_text())
    conv = _conv_outputs(bad)[1]
    tflite_name = report_correspondence(report)[conv]["tflite"]
    path = bad / "model.tflite"
    path.write_bytes(plant_weight_fault(path.read_bytes(), tflite_name))

    found = localize_dir(bad)["first_divergence"]
    assert found is not None
    assert found["layer"] == _node_of(onnx.load(bad / "model.opt.onnx"), conv), found
    assert found["kind"] == "conversion" and found["pair"] == "ort_vs_tflite"
    assert found["sqnr_db"] < tolerances.floor("fp32", "ort_vs_tflite")
    assert "Conversion error" in found["explanation"]


def test_debug_cli_names_the_planted_layer(fp32_dir: Path, tmp_path, capsys) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(fp32_dir, bad)
    report = json.loads((bad / "report.json").read_text())
    conv = _conv_outputs(bad)[0]
    path = bad / "model.tflite"
    path.write_bytes(
        plant_weight_fault(path.read_bytes(), report_correspondence(report)[conv]["tflite"])
    )
    assert main(["-q", "debug", str(bad)]) == 3
    out = capsys.readouterr().out
    assert "◀ first divergence" in out
    layer = short_name(_node_of(onnx.load(bad / "model.opt.onnx"), conv))
    assert f"first diverging layer {layer} (Conv)" in out, out


def test_bridge_verify_with_layers(fp32_dir: Path) -> None:
    report = bridge.verify(fp32_dir, layers=True)
    assert report["passed"] and report["layers"]["first_divergence"] is None
    opt = onnx.load(fp32_dir / "model.opt.onnx")
    assert len(report["layers"]["rows"]) == len(float_tensors(opt)) == 10


# ---- int8: in memory ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_parts(digits):
    model, inputs = digits
    exported = export(model, inputs, ExportConfig())
    optimised = run_passes(exported, None)
    rng = np.random.default_rng(0)
    calib = [
        tuple(rng.standard_normal(tuple(t.shape)).astype(np.float32) for t in inputs)
        for _ in range(8)
    ]
    qdq = quantize(optimised, QuantConfig(mode="int8"), calib)
    feeds = [random_feeds(optimised.contract, seed=s) for s in range(3)]
    return exported, optimised, qdq, lower_int8(qdq), calib, feeds


#: One quantization step, with float slack for the division by the scale.
ONE_LSB = 1.0 + 1e-3


def test_clean_int8_matches_qdq_layer_by_layer(int8_parts, digits) -> None:
    exported, optimised, qdq, low, _, feeds = int8_parts
    layers = localize_conversion(digits[0], exported, optimised, qdq, low, feeds)
    assert layers["first_divergence"] is None, layers["first_divergence"]
    link = [
        r["metrics"]["qdq_vs_tflite"] for r in layers["rows"] if "qdq_vs_tflite" in r["metrics"]
    ]
    assert len(link) >= 5
    assert min(m["sqnr_db"] for m in link) >= tolerances.floor("int8", "qdq_vs_tflite")
    # both compute the same integer model: at most one step apart (requantization rounding),
    # plus float slack from dividing the difference by the scale.
    assert max(m["lsb_max"] for m in link) <= ONE_LSB, link


def test_planted_int8_weight_fault_is_a_conversion_error(int8_parts, digits) -> None:
    exported, optimised, qdq, low, _, feeds = int8_parts
    conv = next(n.output[0] for n in optimised.model.graph.node if n.op_type == "Conv")
    name = report_correspondence({"lowering": low.facts})[conv]["tflite"]
    bad = low.evolve(data=plant_weight_fault(low.data, name))
    found = localize_conversion(digits[0], exported, optimised, qdq, bad, feeds)["first_divergence"]
    assert found is not None
    assert found["layer"] == _node_of(optimised.model, conv), found
    assert (found["kind"], found["pair"]) == ("conversion", "qdq_vs_tflite")
    assert found["lsb_max"] > 10, found


def test_bad_range_is_a_quantization_error_with_its_range(int8_parts, digits) -> None:
    exported, optimised, qdq, _, calib, feeds = int8_parts
    if WIDE_OBSERVER not in OBSERVERS:
        OBSERVERS.register(WIDE_OBSERVER)(_WideRange)
    facts = qdq.facts["quantization"]["tensors"]
    graph_io = set(optimised.contract.input_names) | set(optimised.contract.output_names)
    target = next(
        t
        for t, _ in float_tensors(optimised.model)
        if facts.get(t, {}).get("kind") == "activation"
        and not facts[t].get("shares_scale_with")
        and t not in graph_io
    )
    config = QuantConfig(mode="int8", per_tensor_overrides={target: WIDE_OBSERVER})
    bad_qdq = quantize(optimised, config, calib)
    bad_low = lower_int8(bad_qdq)
    layers = localize_conversion(digits[0], exported, optimised, bad_qdq, bad_low, feeds)
    found = layers["first_divergence"]
    assert found is not None
    assert found["tensor"] == target, found
    assert (found["kind"], found["pair"]) == ("quantization", "ort_vs_qdq")
    planted = bad_qdq.facts["quantization"]["tensors"][target]["range"]
    assert found["quantization"]["range"] == planted
    assert planted[1] > 100 * found["value_range"][1], (planted, found["value_range"])
    assert "Quantization error" in found["explanation"] and "range" in found["explanation"]


def test_torch_fault_is_an_export_error(int8_parts, digits) -> None:
    exported, optimised, qdq, low, _, feeds = int8_parts
    broken = copy.deepcopy(digits[0])
    convs = [m for m in broken.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        convs[1].weight.mul_(-1.0)
    found = localize_conversion(broken, exported, optimised, qdq, low, feeds)["first_divergence"]
    assert found is not None
    conv = [n for n in optimised.model.graph.node if n.op_type == "Conv"][1]
    assert (found["layer"], found["kind"]) == (conv.name, "export"), found
