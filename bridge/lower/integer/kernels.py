"""Which TFLite operators have integer kernels in LiteRT, and what those kernels require.

This is the lowering side of TFLite's integer rules: it is keyed by the TFLite operator (what
onnx2tf emitted), not by the ONNX op the quantizer saw, because lowering adds operators of its
own (TRANSPOSE, PAD, RESHAPE, ...) that must obey the same kernels. The quantizer's table
(`bridge.quantize.rules`) decides the scales; this one checks that the kernels accept them.

Data only: `KERNELS` lists the operators that run in int8 and/or int16x8, `FLOAT_ONLY` the ones
that stay float32 with a reason. Versions follow tensorflow/lite/tools/versioning/op_version.cc
for the integer signatures we emit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.quantize.rules import LOG_SOFTMAX_QPARAMS, SIGMOID_QPARAMS, TANH_QPARAMS

#: TFLite's fixed output quantization: (scale, zero point) per activation type. The values are
#: the quantizer's (one table); L2_NORMALIZATION has no ONNX twin there.
LOGISTIC_OUT = SIGMOID_QPARAMS
SOFTMAX_OUT = SIGMOID_QPARAMS
TANH_OUT = TANH_QPARAMS
LOG_SOFTMAX_OUT = LOG_SOFTMAX_QPARAMS
L2NORM_OUT = {"int8": (1.0 / 128.0, 0)}


@dataclass(frozen=True)
class Kernel:
    """What one TFLite operator's integer kernels accept.

    Attributes:
        int8: operator version of the int8 kernel, None if there is none.
        int16: operator version of the int16-activation kernel (16x8), None if none.
        same_scale: every float tensor of the op (inputs and outputs) must share one scale and
            zero point: the kernel moves or selects values without rescaling them.
        fixed_output: activation type → the (scale, zero point) the kernel's output must have.
        weight: (input index, quantized dimension of the TFLite layout) of a per-channel
            symmetric int8 weight.
        bias: input index of the bias (int32 for int8, int64 for int16x8), scale s_in·s_w[c].
        hybrid: operator version when run with float activations and int8 weights (dynamic
            range quantization), None if no hybrid kernel.
        zero_point_free: input indices whose zero point must be 0 for the result to be right.
    """

    int8: int | None = 2
    int16: int | None = 3
    same_scale: bool = False
    fixed_output: Mapping[str, tuple[float, int]] | None = None
    weight: tuple[int, int] | None = None
    bias: int | None = None
    hybrid: int | None = None
    zero_point_free: tuple[int, ...] = ()


_SAME = Kernel(same_scale=True)

KERNELS: dict[str, Kernel] = {
    # Weighted ops: per-channel int8 weights along the output-channel axis.
    "CONV_2D": Kernel(int8=3, int16=4, weight=(1, 0), bias=2, hybrid=5),
    "DEPTHWISE_CONV_2D": Kernel(int8=3, int16=5, weight=(1, 3), bias=2, hybrid=6),
    "FULLY_CONNECTED": Kernel(int8=4, int16=7, weight=(1, 0), bias=2, hybrid=12),
    "TRANSPOSE_CONV": Kernel(int8=3, int16=5, weight=(1, 0), bias=3),
    # XNNPACK's int8 BATCH_MATMUL (LiteRT 2.1) ignores the second input's zero point: measured
    # 18 dB SQNR against the builtin kernel's exact result when it is not 0.
    "BATCH_MATMUL": Kernel(int8=2, int16=3, zero_point_free=(1,)),
    # Arithmetic: the kernels rescale each input.
    "ADD": Kernel(int8=2, int16=3),
    "SUB": Kernel(int8=2, int16=5),
    "MUL": Kernel(int8=2, int16=4),
    "SQUARED_DIFFERENCE": Kernel(int8=2, int16=None),
    "MEAN": Kernel(int8=2, int16=3),
    "SUM": Kernel(int8=2, int16=None),
    "REDUCE_PROD": Kernel(int8=2, int16=2),
    "RSQRT": Kernel(int8=2, int16=3),
    "ABS": Kernel(int8=2, int16=3),
    "EXP": Kernel(int8=2, int16=2),
    "LOG": Kernel(int8=2, int16=2),
    "GELU": Kernel(int8=2, int16=None),
    "HARD_SWISH": Kernel(int8=1, int16=None),
    "RELU": Kernel(int8=2, int16=3),
    "RELU6": Kernel(int8=2, int16=3),
    "RELU_N1_TO_1": Kernel(int8=1, int16=None),
    "LEAKY_RELU": Kernel(int8=1, int16=2),
    "PRELU": Kernel(int8=1, int16=None),
    "ELU": Kernel(int8=1, int16=None),
    # Fixed output quantization.
    "LOGISTIC": Kernel(int8=2, int16=3, fixed_output=LOGISTIC_OUT),
    "TANH": Kernel(int8=2, int16=3, fixed_output=TANH_OUT),
    "SOFTMAX": Kernel(int8=2, int16=3, fixed_output=SOFTMAX_OUT),
    "LOG_SOFTMAX": Kernel(int8=2, int16=None, fixed_output=LOG_SOFTMAX_OUT),
    "L2_NORMALIZATION": Kernel(int8=2, int16=None, fixed_output=L2NORM_OUT),
    # Scale-keeping: data movement and selection.
    "MAX_POOL_2D": _SAME,
    "AVERAGE_POOL_2D": _SAME,
    "CONCATENATION": _SAME,
    "RESHAPE": Kernel(int8=1, int16=1, same_scale=True),
    "SQUEEZE": Kernel(int8=1, int16=1, same_scale=True),
    "EXPAND_DIMS": Kernel(int8=1, int16=1, same_scale=True),
    "TRANSPOSE": Kernel(int8=2, int16=5, same_scale=True),
    "PAD": _SAME,
    "PADV2": _SAME,
    "MIRROR_PAD": _SAME,
    "RESIZE_BILINEAR": Kernel(int8=3, int16=4, same_scale=True),
    "RESIZE_NEAREST_NEIGHBOR": Kernel(int8=3, int16=4, same_scale=True),
    "SLICE": Kernel(int8=2, int16=4, same_scale=True),
    "STRIDED_SLICE": Kernel(int8=2, int16=4, same_scale=True),
    "SPLIT": Kernel(int8=2, int16=4, same_scale=True),
    "SPLIT_V": Kernel(int8=2, int16=None, same_scale=True),
    "GATHER": Kernel(int8=2, int16=4, same_scale=True),
    "GATHER_ND": Kernel(int8=1, int16=3, same_scale=True),
    "PACK": _SAME,
    "UNPACK": Kernel(int8=2, int16=4, same_scale=True),
    "TILE": Kernel(int8=3, int16=None, same_scale=True),
    "BROADCAST_TO": Kernel(int8=3, int16=3, same_scale=True),
    "DEPTH_TO_SPACE": Kernel(int8=2, int16=None, same_scale=True),
    "SPACE_TO_DEPTH": Kernel(int8=2, int16=None, same_scale=True),
    "BATCH_TO_SPACE_ND": Kernel(int8=2, int16=4, same_scale=True),
    "SPACE_TO_BATCH_ND": Kernel(int8=2, int16=4, same_scale=True),
    "REVERSE_V2": Kernel(int8=3, int16=None, same_scale=True),
    "MAXIMUM": Kernel(int8=2, int16=4, same_scale=True),
    "MINIMUM": Kernel(int8=2, int16=4, same_scale=True),
    "REDUCE_MAX": _SAME,
    "REDUCE_MIN": _SAME,
    "SELECT_V2": Kernel(int8=1, int16=1, same_scale=True),
    # Integer-valued outputs (indices, shapes) from quantized inputs, and type-agnostic ops.
    "ARG_MAX": Kernel(int8=2, int16=None),
    "ARG_MIN": Kernel(int8=2, int16=None),
    "SHAPE": Kernel(int8=1, int16=1),
    "FILL": Kernel(int8=3, int16=3),
}

#: Operators kept in float32 in integer models, with the reason. Anything in neither table is
#: kept float too, reported as "no integer kernel known to the lowering".
FLOAT_ONLY: dict[str, str] = {
    "DIV": "LiteRT's DIV has a uint8 kernel but no int8/int16 one",
    "POW": "LiteRT's POW has no quantized kernel",
    "SQRT": "LiteRT's SQRT has no quantized kernel",
    "SQUARE": "LiteRT's SQUARE has no quantized kernel",
    "SIN": "LiteRT's SIN has no quantized kernel",
    "COS": "LiteRT's COS has no quantized kernel",
    "FLOOR": "LiteRT's FLOOR has no quantized kernel",
    "CEIL": "LiteRT's CEIL has no quantized kernel",
    "ROUND": "LiteRT's ROUND has no quantized kernel",
    "CUMSUM": "LiteRT's CUMSUM has no quantized kernel",
    "CAST": "a type conversion has no quantized form",
}


def kernel(op: str) -> Kernel | None:
    """The integer kernel description of TFLite operator `op`, None if it has none."""
    return KERNELS.get(op)


def float_reason(op: str, act_dtype: str) -> str | None:
    """Why `op` must stay float for `act_dtype` activations ("int8"/"int16"), None if not."""
    k = KERNELS.get(op)
    if k is None:
        return FLOAT_ONLY.get(op, "no integer kernel known to the lowering")
    version = k.int8 if act_dtype == "int8" else k.int16
    if version is None:
        return f"LiteRT's {op} has no {act_dtype} kernel"
    return None
