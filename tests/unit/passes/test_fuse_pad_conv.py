"""fuse_pad_conv: a zero Pad on the spatial axes read only by Conv becomes the Conv's pads.

The graph tests check the pads written (summed, or SAME_UPPER when they are TF "same"), the op
types and ONNX Runtime numbers before and after, and every Pad that must stay. GPTQ's rows of a
SAME_UPPER Conv are those of the explicit pads. The torch tests convert F.pad → Conv models with
NHWC inputs, fp32 and int8, and check the .tflite has no PAD and no TRANSPOSE.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper
from torch import nn
from torch.nn import functional as F

import bridge
from bridge.passes import run_passes
from bridge.passes.fuse_pad_conv import fuse_pad_conv
from bridge.quantize import gptq
from bridge.runtime.tflite_io import op_histogram
from bridge.runtime.tolerances import floor

#: Conv over explicit zeros against Conv with pads: ONNX Runtime's im2col reads the same zeros
#: and sums the same products in the same order, so the outputs are bit-identical.
EXACT = 0.0
C = 4
M = 8  # output channels, a multiple of C for the depthwise case


def _attrs(model, op_type="Conv"):
    node = next(n for n in model.graph.node if n.op_type == op_type)
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pad_conv(g, pads, *, hw=(8, 8), k=3, stride=1, group=1, conv_pads=None, value=None, **pad):
    """x → Pad(pads) → Conv(k, stride, group, conv_pads) → y, with Pad attributes `pad`."""
    inits = {"p": np.array(pads, np.int64), "w": g.rand(M, C // group, k, k, seed=1)}
    pad_inputs = ["x", "p"]
    if value is not None:
        inits["v"] = np.array(value, np.float32)
        pad_inputs.append("v")
    conv = {"kernel_shape": [k, k], "strides": [stride, stride], "group": group}
    if conv_pads is not None:
        conv["pads"] = conv_pads
    h = hw[0] + pads[2] + pads[6] + (conv_pads or [0] * 4)[0] + (conv_pads or [0] * 4)[2]
    w = hw[1] + pads[3] + pads[7] + (conv_pads or [0] * 4)[1] + (conv_pads or [0] * 4)[3]
    out = [1, M, (h - k) // stride + 1, (w - k) // stride + 1]
    nodes = [
        g.node("Pad", pad_inputs, ["xp"], name="pad", **pad),
        g.node("Conv", ["xp", "w"], ["y"], name="conv", **conv),
    ]
    return g.model(nodes, {"x": [1, C, *hw]}, {"y": out}, inits)


def _folds(g, model):
    before = g.ort(model)
    result = fuse_pad_conv(model)
    assert (result.count, result.hints) == (1, {"fused_pad_conv": 1})
    assert "Pad" not in g.ops(result.model)
    assert g.io(result.model) == g.io(model)
    assert not {"p", "v"} & {t.name for t in result.model.graph.initializer}
    assert g.diff(before, g.ort(result.model)) <= EXACT
    assert fuse_pad_conv(result.model).modified is False
    return result.model


@pytest.mark.parametrize(
    ("pads", "kwargs", "conv_pads"),
    [
        ([0, 0, 0, 0, 0, 0, 1, 1], {"k": 3, "stride": 2, "hw": (9, 8)}, [0, 0, 1, 1]),
        ([0, 0, 1, 2, 0, 0, 2, 0], {"k": 3, "stride": 1, "group": C}, [1, 2, 2, 0]),
        ([0, 0, 1, 1, 0, 0, 1, 1], {"k": 3, "stride": 2, "conv_pads": [1, 0, 0, 2]}, [2, 1, 1, 3]),
        ([0, 0, 1, 1, 0, 0, 1, 1], {"k": 3, "stride": 1, "value": 0.0}, [1, 1, 1, 1]),
    ],
    ids=["bottom-right-odd-height", "depthwise", "summed", "explicit-zero-value"],
)
def test_pad_folds_into_conv_pads(g, pads, kwargs, conv_pads):
    folded = _folds(g, _pad_conv(g, pads, **kwargs))
    assert g.ops(folded) == ["Conv"]
    attrs = _attrs(folded)
    assert attrs["pads"] == conv_pads
    assert attrs.get("auto_pad", b"NOTSET") == b"NOTSET"


@pytest.mark.parametrize(
    ("pads", "k", "stride", "group"),
    [
        ([0, 0, 0, 0, 0, 0, 1, 1], 3, 2, 1),  # EfficientNet's stem on an even input
        ([0, 0, 1, 1, 0, 0, 2, 2], 5, 2, C),  # its 5x5 stride-2 depthwise
    ],
)
def test_tf_same_pads_become_same_upper(g, pads, k, stride, group):
    folded = _folds(g, _pad_conv(g, pads, k=k, stride=stride, group=group))
    attrs = _attrs(folded)
    assert attrs["auto_pad"] == b"SAME_UPPER"
    assert "pads" not in attrs


def test_pad_read_by_two_convs_folds_into_both(g):
    nodes = [
        g.node("Pad", ["x", "p"], ["xp"], name="pad"),
        g.node("Conv", ["xp", "w"], ["y1"], name="conv1", kernel_shape=[3, 3]),
        g.node("Conv", ["xp", "w"], ["y2"], name="conv2", kernel_shape=[3, 3], pads=[0, 1, 0, 1]),
    ]
    inits = {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "w": g.rand(6, C, 3, 3)}
    out = {"y1": [1, 6, 8, 8], "y2": [1, 6, 8, 10]}
    folded = _folds(g, g.model(nodes, {"x": [1, C, 8, 8]}, out, inits))
    assert [_attrs_of(n)["pads"] for n in folded.graph.node] == [[1, 1, 1, 1], [1, 2, 1, 2]]


def _attrs_of(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_conv1d_and_axes_input_fold(g):
    nodes = [
        g.node("Pad", ["x", "p", "", "axes"], ["xp"], name="pad"),
        g.node("Conv", ["xp", "w"], ["y"], name="conv", kernel_shape=[3], strides=[2]),
    ]
    inits = {"p": np.array([2, 1], np.int64), "axes": np.array([-1], np.int64)}
    inits["w"] = g.rand(6, C, 3)
    model = g.model(nodes, {"x": [1, C, 10]}, {"y": [1, 6, 6]}, inits, opset=18)
    folded = _folds(g, model)
    assert _attrs(folded)["pads"] == [2, 1]  # rank-3: explicit pads, never SAME_UPPER


def _relu_reader(g):
    model = _pad_conv(g, [0, 0, 1, 1, 0, 0, 1, 1])
    model.graph.node.append(g.node("Relu", ["xp"], ["r"], name="relu"))
    model.graph.output.append(helper.make_tensor_value_info("r", 1, [1, C, 10, 10]))
    return model


def _maxpool_reader(g):
    model = _pad_conv(g, [0, 0, 1, 1, 0, 0, 1, 1])
    model.graph.node[1].CopyFrom(g.node("MaxPool", ["xp"], ["y"], kernel_shape=[3, 3]))
    return model


def _auto_pad_conv(g):
    model = _pad_conv(g, [0, 0, 1, 1, 0, 0, 1, 1])
    conv = model.graph.node[1]
    conv.CopyFrom(g.node("Conv", ["xp", "w"], ["y"], kernel_shape=[3, 3], auto_pad="VALID"))
    return model


def _pad_is_output(g):
    model = _pad_conv(g, [0, 0, 1, 1, 0, 0, 1, 1])
    model.graph.output.append(helper.make_tensor_value_info("xp", 1, [1, C, 10, 10]))
    return model


def _computed_pads(g):
    nodes = [
        g.node("Pad", ["x", "p"], ["xp"], name="pad"),
        g.node("Conv", ["xp", "w"], ["y"], name="conv", kernel_shape=[3, 3]),
    ]
    model = g.model(
        nodes, {"x": [1, C, 8, 8], "p": [8]}, {"y": [1, 6, 8, 8]}, {"w": g.rand(6, C, 3, 3)}
    )
    model.graph.input[1].type.tensor_type.elem_type = 7  # int64
    return model


@pytest.mark.parametrize(
    "build",
    [
        lambda g: _pad_conv(g, [0, 0, 1, 1, 0, 0, 1, 1], value=0.5),
        lambda g: _pad_conv(g, [0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),
        lambda g: _pad_conv(g, [0, 0, 1, 1, 0, 0, 1, 1], mode="edge"),
        lambda g: _pad_conv(g, [0, 1, 1, 1, 0, 1, 1, 1]),  # channels
        lambda g: _pad_conv(g, [1, 0, 1, 1, 0, 0, 1, 1]),  # batch
        lambda g: _pad_conv(g, [0, 0, -1, 0, 0, 0, 1, 1]),  # a crop
        _relu_reader,
        _maxpool_reader,
        _auto_pad_conv,
        _pad_is_output,
        _computed_pads,
    ],
    ids=[
        "value-0.5",
        "reflect",
        "edge",
        "channel-axis",
        "batch-axis",
        "negative",
        "also-read-by-relu",
        "maxpool",
        "conv-auto-pad",
        "pad-is-graph-output",
        "computed-pads",
    ],
)
def test_pad_that_cannot_fold_is_left_alone(g, build):
    model = build(g)
    result = fuse_pad_conv(model)
    assert (result.modified, result.count) == (False, 0)
    assert result.model is model


def test_run_passes_folds_pad(g):
    model = _pad_conv(g, [0, 0, 0, 0, 0, 0, 1, 1], k=3, stride=2)
    out = run_passes(g.artifact(model))
    entry = next(e for e in out.facts["passes"] if e["name"] == "fuse_pad_conv")
    assert entry["count"] == 1
    assert entry["max_abs_change"] <= EXACT
    assert g.ops(out.model) == ["Conv"]


@pytest.mark.parametrize(("k", "stride", "hw"), [(3, 2, (8, 8)), (5, 2, (9, 8)), (3, 1, (7, 6))])
def test_gptq_rows_of_same_upper_are_those_of_explicit_pads(monkeypatch, k, stride, hw):
    monkeypatch.setattr(gptq, "ROWS_PER_SAMPLE", 10**6)  # every row, in order
    total = [max((-(-n // stride) - 1) * stride + k - n, 0) for n in hw]
    pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    x = np.random.default_rng(0).standard_normal((1, C, *hw)).astype(np.float32)
    rows = []
    for pad_attrs in ({"pads": pads}, {"auto_pad": "SAME_UPPER"}):
        node = helper.make_node(
            "Conv", ["x", "w"], ["y"], kernel_shape=[k, k], strides=[stride] * 2, **pad_attrs
        )
        layer = gptq._layer(node, "w", (6, C, k, k))
        rows.append(gptq._rows(x, layer, np.random.default_rng(0)))
    assert rows[0] is not None and rows[1] is not None
    np.testing.assert_array_equal(rows[0], rows[1])


class _TfSame(nn.Module):
    """TF "same" padding as EfficientNet-Lite writes it: F.pad, then an unpadded conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2)
        self.dw = nn.Conv2d(8, 8, 3, groups=8)
        self.dw5 = nn.Conv2d(8, 8, 5, stride=2, groups=8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem(F.pad(x, (0, 1, 0, 1))))  # on the image input itself
        x = F.relu6(self.dw(F.pad(x, (1, 1, 1, 1))))
        x = F.relu6(self.dw5(F.pad(x, (1, 2, 1, 2))))
        return self.head(x)


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_tf_same_model_converts_without_pad_or_transpose(tmp_path, mode):
    torch.manual_seed(0)
    model = _TfSame().eval()
    shape = (1, 3, 16, 16)
    calibration = [(torch.randn(*shape),) for _ in range(16)] if mode == "int8" else None
    result = bridge.convert(
        model,
        (torch.randn(*shape),),
        tmp_path / "out",
        quantize=None if mode == "fp32" else mode,
        calibration=calibration,
        nhwc_inputs=True,
    )
    report = result.report
    passes = {e["name"]: e["count"] for e in report["passes"]}
    assert passes["fuse_pad_conv"] == 3
    ops = op_histogram(result.tflite_path.read_bytes())
    assert "PAD" not in ops and "PADV2" not in ops and "TRANSPOSE" not in ops, ops
    for pair, outputs in report["parity"].items():
        for out in outputs.values():
            assert out["sqnr_db"] >= floor(mode, pair), (pair, out)
