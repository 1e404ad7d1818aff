"""mul_relu_mul: `x·c1 → Relu|Relu6 → ·c2`, which onnx2tf folds into one MUL without the Relu.

Fuzz seed 6233 (fp32 and int8): x·c1 → Relu → ·c2 came out of onnx2tf as MUL(x, c1·c2). The graph
tests check which rewrite each sign pattern gets, the op types and ONNX Runtime numbers; the
torch tests convert the minimal pattern end to end and check the .tflite against torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import bridge
from bridge.passes.mul_relu_mul import mul_relu_mul

#: x·(c1·c2) against (x·c1)·c2: a few float32 roundings of values of order 10.
ROUNDING = 1e-5
SHAPE = [1, 2, 4, 4]


def _chain(g, c1, c2, *, act="Relu", first="Mul", second="Mul"):
    inits = {"c1": c1, "c2": c2}
    act_inputs = ["a"]
    if act == "Relu6":
        inits |= {"lo": np.float32(0), "hi": np.float32(6)}
        act_inputs += ["lo", "hi"]
    nodes = [
        g.node(first, ["x", "c1"], ["a"], name="scale1"),
        g.node("Clip" if act == "Relu6" else act, act_inputs, ["b"], name="act"),
        g.node(second, ["b", "c2"], ["y"], name="scale2"),
    ]
    return g.model(nodes, {"x": SHAPE}, {"y": SHAPE}, inits)


def _positive(g, seed):
    return g.rand(*SHAPE, seed=seed, low=0.5)


@pytest.mark.parametrize(
    ("signs", "expected_ops", "kind"),
    [
        (("+", "+"), ["Mul", "Relu"], "scale then Relu"),
        (("-", "+"), ["Mul", "Relu"], "scale then Relu"),
        (("+", "-"), ["Relu", "Mul"], "Relu then scale"),
        (("-", "-"), ["Mul", "Relu", "Relu", "Mul"], "activation repeated"),
    ],
)
def test_relu_between_scales_is_rewritten_by_sign(g, signs, expected_ops, kind):
    c1, c2 = (_positive(g, i) if s == "+" else g.rand(*SHAPE, seed=i) for i, s in enumerate(signs))
    assert (c1 < 0).any() == (signs[0] == "-") and (c2 < 0).any() == (signs[1] == "-")
    model = _chain(g, c1, c2)
    before = g.ort(model)
    result = mul_relu_mul(model)
    assert (result.count, result.hints) == (1, {"mul_relu_mul": {kind: 1}})
    assert g.ops(result.model) == expected_ops
    assert g.io(result.model) == g.io(model)
    assert g.diff(before, g.ort(result.model)) <= ROUNDING
    assert not mul_relu_mul(result.model).modified


@pytest.mark.parametrize(("first", "second"), [("Div", "Mul"), ("Mul", "Div")])
def test_division_by_a_constant_is_a_scale(g, first, second):
    model = _chain(g, _positive(g, 0), _positive(g, 1), first=first, second=second)
    before = g.ort(model)
    result = mul_relu_mul(model)
    assert result.count == 1
    assert g.ops(result.model) == ["Mul", "Relu"]
    assert g.diff(before, g.ort(result.model)) <= ROUNDING


def test_relu6_gets_a_second_clip(g):
    model = _chain(g, _positive(g, 0), _positive(g, 1), act="Relu6")
    before = g.ort(model)
    result = mul_relu_mul(model)
    assert result.hints == {"mul_relu_mul": {"activation repeated": 1}}
    assert g.ops(result.model) == ["Mul", "Clip", "Clip", "Mul"]
    assert g.diff(before, g.ort(result.model)) == 0.0


def test_chains_onnx2tf_does_not_fold_are_left_alone(g):
    c1, c2 = _positive(g, 0), _positive(g, 1)
    tanh = _chain(g, c1, c2, act="Tanh")  # onnx2tf does not fuse TANH into MUL
    read_twice = g.model(
        [
            g.node("Mul", ["x", "c1"], ["a"]),
            g.node("Relu", ["a"], ["b"]),
            g.node("Mul", ["b", "c2"], ["y"]),
            g.node("Add", ["b", "y"], ["z"]),
        ],
        {"x": SHAPE},
        {"z": SHAPE},
        {"c1": c1, "c2": c2},
    )
    scale_is_output = g.model(
        [
            g.node("Mul", ["x", "c1"], ["a"]),
            g.node("Relu", ["a"], ["b"]),
            g.node("Mul", ["b", "c2"], ["y"]),
        ],
        {"x": SHAPE},
        {"y": SHAPE, "a": SHAPE},
        {"c1": c1, "c2": c2},
    )
    for model in (tanh, read_twice, scale_is_output):
        result = mul_relu_mul(model)
        assert (result.modified, result.count) == (False, 0), g.ops(model)


class ScaleReluScale(torch.nn.Module):
    """The minimal pattern of fuzz seed 6233: x·c1 → activation → ·c2."""

    def __init__(self, c1: torch.Tensor, c2: torch.Tensor, act: str) -> None:
        super().__init__()
        self.c1, self.c2 = torch.nn.Parameter(c1), torch.nn.Parameter(c2)
        self.act = torch.nn.functional.relu6 if act == "relu6" else torch.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x * self.c1) * self.c2


@pytest.mark.parametrize(
    ("signs", "act"), [(("+", "+"), "relu"), (("-", "-"), "relu"), (("+", "+"), "relu6")]
)
def test_converted_model_keeps_the_activation(tmp_path: Path, signs, act) -> None:
    gen = torch.Generator().manual_seed(0)
    c1, c2 = (
        torch.rand(SHAPE, generator=gen) + 0.5 if s == "+" else torch.randn(SHAPE, generator=gen)
        for s in signs
    )
    model = ScaleReluScale(c1, c2, act).eval()
    x = torch.randn(SHAPE, generator=gen) * 4
    result = bridge.convert(model, (x,), tmp_path)
    got = result.report["parity"]["torch_vs_tflite"]["output_0"]
    assert got["passed"] and got["sqnr_db"] >= got["min_sqnr_db"], got
    entry = next(e for e in result.report["passes"] if e["name"] == "mul_relu_mul")
    assert entry["count"] == 1, entry


def test_onnx2tf_still_drops_the_relu(g) -> None:
    """Why the pass exists. When this fails, onnx2tf keeps the Relu itself: drop the pass."""
    from ai_edge_litert.interpreter import Interpreter

    from bridge.lower.floating.onnx2tf_driver import run_onnx2tf

    model = _chain(g, _positive(g, 0), _positive(g, 1))
    x = g.rand(*SHAPE, seed=2) * 4
    tflite = run_onnx2tf(model, keep_shape_inputs=["x"]).tflite
    interp = Interpreter(model_content=tflite)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    c = _positive(g, 0) * _positive(g, 1)
    np.testing.assert_allclose(got, x * c, rtol=ROUNDING)  # no Relu: negatives pass through
