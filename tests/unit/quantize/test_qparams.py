"""Scale / zero-point maths: known values, exact zero, symmetric weights, int32 bias scale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.quantize.qparams import (
    MIN_SCALE,
    affine_qparams,
    dequantize,
    fake_quantize,
    qrange,
    quantize,
)
from bridge.quantize.weights import PerChannelMinMax, bias_scale, quantize_bias, quantize_weight


def test_asymmetric_int8_known_values() -> None:
    scale, zero = affine_qparams(-1.0, 3.0)
    assert scale.dtype == np.float32 and zero.dtype == np.int8
    assert scale == np.float32(4.0 / 255)
    assert zero == -128 + 64  # round(-128 + 1 / (4 / 255)) = round(-64.25)


def test_range_is_widened_to_include_zero() -> None:
    scale, zero = affine_qparams(2.0, 4.0)
    assert scale == np.float32(4.0 / 255) and zero == -128
    scale, zero = affine_qparams(-4.0, -2.0)
    assert scale == np.float32(4.0 / 255) and zero == 127


@given(
    lo=st.floats(-1e4, 0.0, allow_subnormal=False),
    hi=st.floats(0.0, 1e4, allow_subnormal=False),
    dtype=st.sampled_from(["int8", "uint8", "int16"]),
)
@settings(max_examples=200, deadline=None)
def test_zero_is_exactly_representable(lo: float, hi: float, dtype: str) -> None:
    scale, zero = affine_qparams(lo, hi, dtype=dtype)
    assert fake_quantize(np.float32(0.0), scale, zero, dtype) == 0.0
    qmin, qmax = qrange(dtype)
    assert qmin <= int(zero) <= qmax


def test_symmetric_weights_use_narrow_range_and_zero_point_zero() -> None:
    w = np.array([[-0.5, 0.25], [0.1, -0.2], [0.0, 0.0]], np.float32)
    q, scale, zero = quantize_weight(w, axis=0)
    np.testing.assert_array_equal(zero, 0)
    np.testing.assert_allclose(scale[:2], [0.5 / 127, 0.2 / 127], rtol=1e-7)
    assert scale[2] == np.float32(MIN_SCALE)  # an all-zero channel
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    assert q[0, 0] == -127 and q[1, 1] == -127  # each channel's extreme hits the range end


def test_per_channel_minmax_over_other_axes() -> None:
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 12
    obs = PerChannelMinMax(axis=1)
    obs.update(w)
    lo, hi = obs.range()
    np.testing.assert_array_equal(lo, [-12, -8, -4])
    np.testing.assert_array_equal(hi, [3, 7, 11])


def test_int16_symmetric_activation() -> None:
    scale, zero = affine_qparams(-1.0, 2.0, dtype="int16", symmetric=True)
    assert zero.dtype == np.int16 and zero == 0
    assert scale == np.float32(2.0 / 32767)


def test_degenerate_range_gets_min_scale() -> None:
    scale, zero = affine_qparams(0.0, 0.0)
    assert scale == np.float32(MIN_SCALE) and zero == -128
    scale, zero = affine_qparams(0.0, 0.0, symmetric=True)
    assert scale == np.float32(MIN_SCALE) and zero == 0


def test_non_finite_range_and_unknown_dtype_raise() -> None:
    with pytest.raises(ConfigError, match="non-finite"):
        affine_qparams(-np.inf, 1.0)
    with pytest.raises(ConfigError, match="int4"):
        affine_qparams(-1.0, 1.0, dtype="int4")


def test_quantize_rounds_half_to_even_and_saturates() -> None:
    q = quantize(np.array([0.5, 1.5, 2.5, -0.5, 1000.0, -1000.0], np.float32), 1.0, 0, "int8")
    np.testing.assert_array_equal(q, [0, 2, 2, 0, 127, -128])


def test_per_axis_quantize_dequantize_roundtrip() -> None:
    x = np.array([[1.0, -2.0], [0.3, 0.6]], np.float32)
    scale = np.array([2.0 / 127, 0.6 / 127], np.float32)
    q = quantize(x, scale, np.zeros(2, np.int8), "int8", axis=0)
    np.testing.assert_array_equal(q[:, 1], [-127, 127])
    err = np.abs(dequantize(q, scale, np.zeros(2), axis=0) - x)
    assert np.all(err <= scale[:, None] / 2 + 1e-7)


def test_bias_scale_is_input_scale_times_weight_scale() -> None:
    s_in = np.float32(0.02)
    s_w = np.array([0.001, 0.004], np.float32)
    q, scale, zero = quantize_bias(np.array([0.1, -0.2], np.float32), s_in, s_w)
    assert q.dtype == np.int32 and zero.dtype == np.int32
    np.testing.assert_array_equal(scale, s_in * s_w)
    np.testing.assert_array_equal(zero, 0)
    np.testing.assert_array_equal(q, [round(0.1 / (0.02 * 0.001)), round(-0.2 / (0.02 * 0.004))])


def test_bias_scale_repeats_per_group() -> None:
    s = bias_scale(0.5, np.array([1.0, 2.0], np.float32), 6)
    np.testing.assert_array_equal(s, [0.5, 1.0, 0.5, 1.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="does not fit"):
        bias_scale(0.5, np.array([1.0, 2.0], np.float32), 3)
