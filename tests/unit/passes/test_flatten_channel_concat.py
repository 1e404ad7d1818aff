"""flatten_channel_concat: a 4-D channel Concat no layout op precedes is done on 3-D tensors.

The graph tests check the rewrite count, op types and ONNX Runtime numbers; the torch test
converts `torch.cat([x, 2x], 1)` on an image-shaped input, which onnx2tf 2.6.9 alone lowers as a
concatenation on the last axis, and checks the mode's SQNR floors.
"""

from __future__ import annotations

import pytest

from bridge.passes.flatten_channel_concat import flatten_channel_concat
from bridge.runtime.tolerances import floor

#: Reshapes and a Concat move data without arithmetic.
EXACT = 0.0
FLATTENED = ["Reshape", "Reshape", "Concat", "Reshape"]


def _concat(g, shapes, axis, out_shape, *, before=()):
    nodes = [*before, g.node("Concat", ["a", "b"], ["y"], axis=axis, name="cat")]
    inputs = {"x": shapes[0], "b": shapes[1]}
    if not before:
        nodes.insert(0, g.node("Relu", ["x"], ["a"]))
    return g.model(nodes, inputs, {"y": out_shape}, {"w": g.rand(shapes[0][1], shapes[0][1], 1, 1)})


@pytest.mark.parametrize("axis", [1, -3])
def test_channel_concat_of_4d_tensors_is_flattened(g, axis):
    model = _concat(g, [[1, 7, 6, 5], [1, 3, 6, 5]], axis, [1, 10, 6, 5])
    before = g.ort(model)
    result = flatten_channel_concat(model)
    assert (result.count, result.hints) == (1, {"flattened_concats": 1})
    assert g.ops(result.model) == ["Relu", *FLATTENED]
    assert g.io(result.model) == g.io(model)
    assert g.diff(before, g.ort(result.model)) <= EXACT
    again = flatten_channel_concat(result.model)
    assert (again.modified, again.count) == (False, 0)


def test_symbolic_batch_is_kept(g):
    model = _concat(g, [["n", 2, 3, 4], ["n", 2, 3, 4]], 1, ["n", 4, 3, 4])
    result = flatten_channel_concat(model)
    assert result.count == 1
    assert g.diff(g.ort(model), g.ort(result.model)) <= EXACT


@pytest.mark.parametrize(
    ("shapes", "axis", "out"),
    [
        ([[1, 7, 6, 5], [1, 7, 6, 5]], 2, [1, 7, 12, 5]),  # not the channel axis
        ([[1, 7, 6], [1, 3, 6]], 1, [1, 10, 6]),  # 3-D lowers correctly already
        ([[1, 7, 6, 5, 2], [1, 3, 6, 5, 2]], 1, [1, 10, 6, 5, 2]),  # 5-D too
    ],
)
def test_other_concats_are_untouched(g, shapes, axis, out):
    model = _concat(g, shapes, axis, out)
    result = flatten_channel_concat(model)
    assert (result.modified, result.count) == (False, 0)


def test_concat_after_a_conv_is_untouched(g):
    n = g.node
    conv = [n("Conv", ["x", "w"], ["c"]), n("Relu", ["c"], ["a"])]  # a descends from a Conv
    model = _concat(g, [[1, 7, 6, 5], [1, 3, 6, 5]], 1, [1, 10, 6, 5], before=conv)
    result = flatten_channel_concat(model)
    assert (result.modified, result.count) == (False, 0)


import torch  # noqa: E402


class _CatChannels(torch.nn.Module):
    def forward(self, x):
        return torch.relu(torch.cat([x, 2 * x], 1))


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_torch_channel_concat_converts_with_parity(tmp_path, mode):
    import bridge

    torch.manual_seed(0)
    shape = (1, 7, 6, 5)
    calibration = [(torch.randn(*shape),) for _ in range(16)] if mode == "int8" else None
    result = bridge.convert(
        _CatChannels(),
        (torch.randn(*shape),),
        tmp_path / "out",
        quantize=None if mode == "fp32" else mode,
        calibration=calibration,
    )
    report = result.report
    assert {e["name"]: e["count"] for e in report["passes"]}["flatten_channel_concat"] == 1
    for pair, outputs in report["parity"].items():
        for out in outputs.values():
            assert out["sqnr_db"] >= floor(mode, pair), (pair, out)
