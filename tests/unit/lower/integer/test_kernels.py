"""integer.kernels, the table of LiteRT's integer kernels: LiteRT runs its int8 kernels at the
listed versions with the fixed output parameters (within the LSB budget), the fixed outputs
are the quantizer's, and float_reason reads the table."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.lower.integer.kernels import FLOAT_ONLY, KERNELS, float_reason, kernel
from bridge.lower.tflite_graph import quantization
from bridge.qparams import QParams
from bridge.quantize.rules import SIGMOID_QPARAMS, TANH_QPARAMS
from bridge.runtime.tolerances import INT8_MAX_LSB_P99
from tests.unit.lower.graph_builders import I8, add_op, new_graph, run

X = np.linspace(-6, 6, 64, dtype=np.float32).reshape(1, 64)
IN = QParams(np.float32(12 / 255), np.int64(0), "int8")
FUNCS = {"LOGISTIC": lambda x: 1 / (1 + np.exp(-x)), "TANH": np.tanh}


def _unary(op: str, out_qparams: tuple[float, int]):
    g = new_graph()
    x = g.add_tensor("x", [1, 64], I8, quant=quantization(IN.scale, IN.zero_point))
    y = g.add_tensor("y", [1, 64], I8, quant=quantization(*out_qparams))
    add_op(g, op, [x], [y]).opcodeIndex = g.opcode(op, kernel(op).int8)
    g.sg.inputs, g.sg.outputs = [x], [y]
    return g


@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
def test_fixed_output_qparams_run_in_litert(op: str) -> None:
    scale, zero = kernel(op).fixed_output["int8"]
    (y,) = run(_unary(op, (scale, zero)), IN.quantize(X))
    got = (y.astype(np.float64) - zero) * scale
    want = FUNCS[op](IN.dequantize(IN.quantize(X)).astype(np.float64))
    lsb = np.abs(got - want) / scale
    assert np.percentile(lsb, 99) <= INT8_MAX_LSB_P99, lsb.max()


def test_fixed_outputs_are_the_quantizers() -> None:
    assert kernel("LOGISTIC").fixed_output == SIGMOID_QPARAMS
    assert kernel("TANH").fixed_output == TANH_QPARAMS
    assert kernel("LOGISTIC").fixed_output["int8"] == (1 / 256, -128)
    assert kernel("TANH").fixed_output["int8"] == (1 / 128, 0)


def test_weighted_kernels_name_their_weight_axis() -> None:
    assert kernel("CONV_2D").weight == (1, 0) and kernel("CONV_2D").bias == 2
    assert kernel("DEPTHWISE_CONV_2D").weight == (1, 3)  # [1, H, W, C·M]: channels last
    assert kernel("FULLY_CONNECTED").hybrid is not None
    assert kernel("BATCH_MATMUL").zero_point_free == (1,)
    assert kernel("DIV") is None


def test_float_reason() -> None:
    assert float_reason("CONV_2D", "int8") is None
    assert float_reason("CONV_2D", "int16") is None
    assert float_reason("GELU", "int8") is None
    assert float_reason("GELU", "int16") == "LiteRT's GELU has no int16 kernel"
    assert float_reason("DIV", "int8") == FLOAT_ONLY["DIV"]
    assert float_reason("NO_SUCH_OP", "int8") == "no integer kernel known to the lowering"


def test_tables_do_not_overlap() -> None:
    assert not set(KERNELS) & set(FLOAT_ONLY)
    assert all(k.int8 is not None or k.int16 is not None for k in KERNELS.values())
