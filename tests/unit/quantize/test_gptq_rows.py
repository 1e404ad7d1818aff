"""GPTQ's sampled rows: gathered conv patches are exactly im2col's rows (padding, stride,
dilation, groups), and a layer stops collecting at MAX_ROWS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper
from torch.nn import functional as F

from bridge.quantize import gptq
from bridge.quantize.config import QuantConfig
from bridge.quantize.qdq import weight_moments

from .conftest import random_samples


@pytest.mark.parametrize(
    ("groups", "pads", "stride", "dilation"),
    [(1, [1, 1, 1, 1], 1, 1), (2, [0, 1, 2, 0], 2, 1), (4, [2, 2, 2, 2], 1, 2)],
)
def test_sampled_rows_are_im2col_rows(
    groups: int, pads: list[int], stride: int, dilation: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gptq, "ROWS_PER_SAMPLE", 10**6)  # every row, in order
    c, k = 4, 3
    node = helper.make_node(
        "Conv",
        ["x", "w"],
        ["y"],
        kernel_shape=[k, k],
        pads=pads,
        strides=[stride, stride],
        dilations=[dilation, dilation],
        group=groups,
    )
    layer = gptq._layer(node, "w", (6, c // groups, k, k))
    x = np.random.default_rng(0).standard_normal((1, c, 9, 8)).astype(np.float32)
    rows = gptq._rows(x, layer, np.random.default_rng(0))
    xt = F.pad(torch.from_numpy(x), (pads[1], pads[3], pads[0], pads[2]))
    cols = F.unfold(xt, k, dilation=dilation, stride=stride)[0]  # (C·k·k, L)
    want = cols.reshape(groups, c // groups * k * k, -1).permute(0, 2, 1).numpy()
    np.testing.assert_array_equal(rows, want)


def test_rows_are_capped_per_layer(cnn) -> None:
    moments = weight_moments(cnn.model, QuantConfig(mode="int8"))
    from bridge.runtime.runners import OrtRunner

    runner = OrtRunner(cnn.model, cnn.contract, extra_outputs=moments.sources)
    for (x,) in random_samples(cnn, 3 * gptq.MAX_ROWS // gptq.ROWS_PER_SAMPLE):
        values = runner.run({"x0": x})
        values["x0"] = x
        moments.update(values)
    assert moments._rows and max(moments._rows.values()) <= gptq.MAX_ROWS
    first = next(iter(moments.layers))
    assert moments._rows[first] == gptq.MAX_ROWS  # the stem conv has 256 positions a sample
