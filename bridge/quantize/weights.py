"""Constant tensors: per-channel symmetric weights and int32 / int64 biases.

TFLite's rules: filters are int8 symmetric per output channel in [−127, 127] with zero point 0;
a bias has scale s_in·s_w[c] per channel and zero point 0, so the accumulator Σ x_q·w_q + b_q
shares one scale. The bias is int32 with int8 activations and int64 with int16 activations
(TFLite's 16x8 CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and TRANSPOSE_CONV kernels: int16
inputs make s_in ~256× finer, so a bias takes 8 more bits). (Other constant operands, such as
the constant of an Add, are quantized like activations, per tensor, by the QDQ writer.)
"""

from __future__ import annotations

import logging

import numpy as np

from bridge.qparams import QParams

log = logging.getLogger(__name__)

#: The bias type per activation type.
BIAS_DTYPES = {"int8": "int32", "int16": "int64"}


class PerChannelMinMax:
    """Min and max per slice along `axis` (None: one min and max for the whole tensor)."""

    name = "per_channel_minmax"

    def __init__(self, axis: int | None) -> None:
        self.axis = axis
        self.min_val: np.ndarray | None = None
        self.max_val: np.ndarray | None = None

    def update(self, array: np.ndarray) -> None:
        x = np.asarray(array, np.float64)
        if self.axis is None:
            lo, hi = np.asarray(x.min()), np.asarray(x.max())
        else:
            other = tuple(i for i in range(x.ndim) if i != self.axis % x.ndim)
            lo, hi = x.min(axis=other), x.max(axis=other)
        if self.min_val is None or self.max_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val, self.max_val = np.minimum(self.min_val, lo), np.maximum(self.max_val, hi)

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        if self.min_val is None or self.max_val is None:
            raise ValueError("PerChannelMinMax.range() called before update()")
        return self.min_val, self.max_val

    def qparams(self, dtype: str = "int8") -> QParams:
        """Symmetric narrow-range qparams (zero point 0, [−127, 127] for int8)."""
        lo, hi = self.range()
        return QParams.symmetric_weights(lo, hi, self.axis, dtype)


def quantize_weight(
    w: np.ndarray, axis: int | None, dtype: str = "int8"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, zero_point) of a weight, symmetric per channel along `axis`."""
    obs = PerChannelMinMax(axis)
    obs.update(w)
    qp = obs.qparams(dtype)
    shape = np.shape(obs.range()[0])
    return qp.quantize(w), qp.scale.reshape(shape), qp.zero_point.astype(dtype).reshape(shape)


def bias_scale(input_scale: float | np.ndarray, weight_scale: np.ndarray, size: int) -> np.ndarray:
    """s_in·s_w per output channel, float32, repeated when the bias has group × channels."""
    ws = np.atleast_1d(np.asarray(weight_scale, np.float32))
    if size % ws.size:
        raise ValueError(f"bias of {size} elements does not fit {ws.size} weight scales")
    ws = np.tile(ws, size // ws.size)
    return (np.float32(input_scale) * ws).astype(np.float32)


def quantize_bias(
    b: np.ndarray,
    input_scale: float | np.ndarray,
    weight_scale: np.ndarray,
    *,
    name: str = "bias",
    dtype: str = "int32",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, zero_point) of a 1-D bias with scale s_in·s_w (zero point 0).

    Args:
        dtype: "int32" or "int64" (BIAS_DTYPES); q and the zero point have this type.
    """
    b = np.asarray(b, np.float64).ravel()
    qp = QParams(bias_scale(input_scale, weight_scale, b.size), 0, dtype, axis=0)
    steps = np.rint(qp.steps(b))
    if np.any(steps < qp.qmin) or np.any(steps > qp.qmax):
        log.warning("bias %s overflows %s at scale s_in·s_w; values are clipped", name, dtype)
    return qp.quantize(b), qp.scale, np.zeros(b.size, dtype)
