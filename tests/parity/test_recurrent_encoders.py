"""LSTM/GRU encoders that read the final hidden state convert and pass parity.

`_, (h, c) = self.lstm(x); return self.fc(h[-1])` is the common speaker / keyword encoder.
Before the `recurrent_last_state` pass and the stateless lowering, its fp32 conversion failed
(1 layer: Gemm → CUSTOM ONNX_GEMM; 2 layers: h_n wrong at 12.9 dB; h_n returned directly: shape
mismatch), and int8 failed parity at 2.4 dB or aborted in LiteRT (glibc double free).
Integer modes keep the unrolled layer float (bridge/lower/integer/recurrent.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bridge
from bridge.runtime import tflite_io
from models.fuzz.family_layers import Recurrent
from models.lstm import RecurrentEncoder

SHAPE = (1, 20, 16)
INTEGER = {
    "int8": tflite_io.DTYPE_CODES[np.dtype(np.int8)],
    "int16x8": tflite_io.DTYPE_CODES[np.dtype(np.int16)],
}


def _convert(tmp_path, model: torch.nn.Module, shape=SHAPE, **options) -> bridge.Conversion:
    torch.manual_seed(1)
    example = (torch.randn(*shape),)
    return bridge.convert(model.eval(), example, tmp_path / "out", **options)


@pytest.mark.parametrize(
    ("kind", "layers", "read", "batch_first"),
    [
        ("lstm", 1, "head", True),
        ("lstm-bi", 2, "head", True),
        ("lstm-bi", 1, "h_c", False),
        ("lstm", 2, "head", False),
        ("lstm", 3, "head", True),
        ("lstm", 2, "h_n", True),
        ("lstm", 1, "h_c", True),
        ("lstm", 3, "h_c", False),
        ("gru", 1, "head", False),
        ("gru", 2, "h_n", True),
        ("gru", 3, "head", True),
    ],
)
def test_fp32_encoder_reading_h_n(tmp_path, kind, layers, read, batch_first):
    torch.manual_seed(0)
    bidirectional = kind.endswith("-bi")
    model = RecurrentEncoder(
        kind.removesuffix("-bi"),
        layers=layers,
        read=read,
        batch_first=batch_first,
        bidirectional=bidirectional,
    )
    result = _convert(tmp_path, model)
    assert result.report["passed"], result.report["failures"]
    ops = result.report["lowering"]["op_counts"]
    assert not [op for op in ops if op.startswith("ONNX_")], ops
    assert result.report["lowering"]["stateful_tensors"] == []
    if read == "head":
        assert ops.get("FULLY_CONNECTED", 0) >= 1, ops


@pytest.mark.parametrize(
    ("mode", "layers", "bidirectional", "sizes"),
    [
        ("int8", 2, False, (16, 32, 8)),
        ("int8", 3, False, (16, 32, 8)),
        ("int8", 2, True, (16, 32, 8)),
        ("int8", 2, False, (40, 64, 8)),  # aborted LiteRT before: free(): invalid next size
        ("int16x8", 2, False, (16, 32, 8)),
    ],
)
def test_integer_lstm_encoder_head_on_h_n(tmp_path, mode, layers, bidirectional, sizes):
    """The LSTM stays float (bridge/quantize/rules.py) and the Linear head runs integer."""
    torch.manual_seed(0)
    model = RecurrentEncoder(
        "lstm", layers=layers, read="head", bidirectional=bidirectional, sizes=sizes
    )
    shape = (1, SHAPE[1], sizes[0])
    calibration = [(torch.randn(*shape),) for _ in range(16)]
    result = _convert(tmp_path, model, shape, quantize=mode, calibration=calibration)
    assert result.report["passed"], result.report["failures"]
    tfl = tflite_io.load(result.tflite_path.read_bytes())
    sg = tfl.subgraphs[0]
    integer = INTEGER[mode]
    integer_fc = [
        op
        for op in sg.operators
        if tflite_io.op_name(tfl, op) == "FULLY_CONNECTED"
        and sg.tensors[op.outputs[0]].type == integer
    ]
    assert len(integer_fc) == 1, "the Linear head should be the only integer FULLY_CONNECTED"
    float_ops = {f["op"] for f in result.report["lowering"]["float_ops"]}
    assert {"LOGISTIC", "TANH"} <= float_ops  # the unrolled LSTM cell stays float


@pytest.mark.parametrize(
    ("cell", "layers", "read", "batch_first", "shape", "mode"),
    [
        ("lstm", 2, "c_n", False, (1, 7, 6), "fp32"),  # time-major: c_n came out [T + 1, 1, H]
        ("lstm", 3, "c_n", True, (1, 5, 6), "fp32"),
        ("lstm", 1, "c_n", False, (2, 4, 6), "fp32"),  # batch 2
        ("lstm", 3, "c_n", False, (3, 1, 6), "fp32"),  # seq_len 1, batch 3
        ("lstm", 3, "h_n", False, (1, 1, 6), "fp32"),  # seq_len 1
        ("gru", 3, "y", False, (1, 1, 6), "fp32"),  # seq_len 1: XNNPack failed to reshape
        ("gru", 1, "h_n", True, (2, 1, 6), "fp32"),  # seq_len 1, batch 2
        ("gru", 2, "y", True, (1, 1, 6), "fp32"),
        ("lstm", 1, "c_n", False, (1, 4, 6), "int8"),  # c_n came out [4, 1, 1, H]
        ("gru", 1, "y", True, (1, 1, 6), "int8"),
    ],
)
def test_state_reads_and_single_steps(tmp_path, cell, layers, read, batch_first, shape, mode):
    """Unread Y/Y_h before a read Y_c, and one-step GRUs, keep their shapes and numbers."""
    torch.manual_seed(0)
    params = {"cell": cell, "hidden": 5, "layers": layers, "batch_first": batch_first}
    model = Recurrent({**params, "read": read}, shape)
    options: dict = {}
    if mode != "fp32":
        options = {"quantize": mode, "calibration": [(torch.randn(*shape),) for _ in range(16)]}
    result = _convert(tmp_path, model, shape, **options)
    assert result.report["passed"], result.report["failures"]
    assert result.report["lowering"]["stateful_tensors"] == []
