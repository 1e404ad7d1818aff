"""decompose_prelu: PRelu that onnx2tf cannot lower becomes Relu + α·Min(x, 0); the rest stays.

The graph tests check the rewrite count, op types and ONNX Runtime numbers; the torch tests
convert Linear → PReLU and Conv1d → PReLU end to end (fp32 and int8) and check the .tflite has
no CUSTOM op and meets the mode's SQNR floors.
"""

from __future__ import annotations

import numpy as np
import pytest

from bridge.passes import run_passes
from bridge.passes.decompose_prelu import decompose_prelu
from bridge.runtime.tolerances import floor

#: Relu(x) + α·Min(x, 0) has one non-zero term per element, each computed as PRelu computes it.
EXACT = 0.0
DECOMPOSED = ["Relu", "Min", "Mul", "Add"]


def _prelu(g, x_shape, slope, *, slope_input: bool = False):
    inputs = {"x": x_shape}
    inits = {}
    if slope_input:
        inputs["s"] = list(slope.shape)
    else:
        inits["s"] = slope
    return g.model([g.node("PRelu", ["x", "s"], ["y"], name="act")], inputs, {"y": x_shape}, inits)


@pytest.mark.parametrize(
    ("x_shape", "slope_shape"),
    [
        ([2, 6, 10], [6, 1]),  # Conv1d → PReLU(C)
        ([2, 5, 16], [5, 1]),  # Linear on [B, T, F] → PReLU(T)
        ([1, 3, 4, 5, 6], [3, 1, 1, 1]),  # 5-D
        ([1, 3, 4, 5], [5]),  # 4-D, slope on the last axis, not per channel
        ([4, 3], [4, 3]),  # 2-D, one slope per element
    ],
)
def test_prelu_that_would_not_lower_is_decomposed_exactly(g, x_shape, slope_shape):
    model = _prelu(g, x_shape, g.rand(*slope_shape, seed=1))
    before = g.ort(model)
    result = decompose_prelu(model)
    assert (result.count, result.hints) == (1, {"decomposed_prelu": 1})
    assert g.ops(result.model) == DECOMPOSED
    assert g.io(result.model) == g.io(model)
    assert result.model.graph.node[-1].output[0] == "y"
    assert g.diff(before, g.ort(result.model)) <= EXACT
    again = decompose_prelu(result.model)
    assert (again.modified, again.count) == (False, 0)


def test_computed_slope_is_decomposed(g):
    model = _prelu(g, [2, 4], g.rand(4), slope_input=True)
    before = g.ort(model)
    result = decompose_prelu(model)
    assert result.count == 1
    assert g.ops(result.model) == DECOMPOSED
    assert g.diff(before, g.ort(result.model)) <= EXACT


@pytest.mark.parametrize(
    ("x_shape", "slope_shape"),
    [
        ([2, 16], [16]),  # Linear → PReLU(C)
        ([1, 6, 5, 5], [6, 1, 1]),  # Conv2d → PReLU(C)
        ([1, 6, 5, 5], [1, 6, 1, 1]),
        ([2, 6, 10], [1]),  # PReLU() on any rank: one slope
        ([1, 2, 3, 4, 5], []),
    ],
)
def test_prelu_that_lowers_natively_is_untouched(g, x_shape, slope_shape):
    model = _prelu(g, x_shape, np.full(slope_shape, 0.25, np.float32))
    result = decompose_prelu(model)
    assert (result.modified, result.count) == (False, 0)
    assert result.model is model


def test_run_passes_decomposes_and_keeps_outputs(g):
    model = _prelu(g, [2, 6, 10], g.rand(6, 1, seed=2))
    out = run_passes(g.artifact(model))
    entry = next(e for e in out.facts["passes"] if e["name"] == "decompose_prelu")
    assert entry["count"] == 1
    assert entry["max_abs_change"] <= EXACT
    assert "PRelu" not in g.ops(out.model)


import torch  # noqa: E402


def _linear_prelu():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.PReLU(5, init=0.2)), (2, 5, 8)


def _conv1d_prelu():
    return torch.nn.Sequential(torch.nn.Conv1d(4, 6, 3), torch.nn.PReLU(6, init=0.2)), (1, 4, 12)


@pytest.mark.parametrize("build", [_linear_prelu, _conv1d_prelu], ids=["linear", "conv1d"])
@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_torch_prelu_converts_with_parity(tmp_path, build, mode):
    import bridge

    torch.manual_seed(0)
    model, shape = build()
    with torch.no_grad():  # per-channel slopes, some above 1 and some negative
        model[1].weight.copy_(torch.linspace(-0.5, 1.5, model[1].weight.numel()))
    example = (torch.randn(*shape),)
    calibration = [(torch.randn(*shape),) for _ in range(16)] if mode == "int8" else None
    result = bridge.convert(
        model.eval(),
        example,
        tmp_path / "out",
        quantize=None if mode == "fp32" else mode,
        calibration=calibration,
    )
    report = result.report
    passes = {e["name"]: e["count"] for e in report["passes"]}
    assert passes["decompose_prelu"] == 1
    ops = report["lowering"].get("float_lowering", report["lowering"])["op_counts"]
    assert "PRELU" not in ops and not any(op.startswith("ONNX_") for op in ops), ops
    for pair, outputs in report["parity"].items():
        for out in outputs.values():
            assert out["sqnr_db"] >= floor(mode, pair), (pair, out)
