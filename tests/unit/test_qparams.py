"""Scale / zero-point maths: known values, exact zero, symmetric weights, int32 bias scale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.qparams import MIN_SCALE, QParams, affine_qparams, qrange
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
    assert QParams(scale, zero, dtype).fake_quantize(np.float32(0.0)) == 0.0
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
    q = QParams(1.0, 0, "int8").quantize(np.array([0.5, 1.5, 2.5, -0.5, 1e3, -1e3], np.float32))
    np.testing.assert_array_equal(q, [0, 2, 2, 0, 127, -128])
    assert q.dtype == np.int8


def test_per_axis_quantize_dequantize_roundtrip() -> None:
    x = np.array([[1.0, -2.0], [0.3, 0.6]], np.float32)
    scale = np.array([2.0 / 127, 0.6 / 127], np.float32)
    qp = QParams(scale, np.zeros(2, np.int8), "int8", axis=0)
    q = qp.quantize(x)
    np.testing.assert_array_equal(q[:, 1], [-127, 127])
    err = np.abs(qp.dequantize(q) - x)
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


def test_narrow_weights_never_reach_minus_128() -> None:
    qp = QParams.symmetric_weights(np.array([-1.0]), np.array([0.5]), axis=0)
    assert (qp.qmin, qp.qmax) == (-127, 127) and qp.narrow
    np.testing.assert_array_equal(qp.quantize(np.array([[-1.01, 0.5]], np.float32)), [[-127, 64]])


def test_per_tensor_keeps_the_input_shape_and_precision() -> None:
    qp = QParams(np.float32(0.1), 3, "int8")
    assert qp.scale.shape == (1,) and qp.zero_point.dtype == np.int64
    assert qp.quantize(np.float32(0.25)).shape == ()  # a scalar stays a scalar
    x = np.float32(0.35)  # float32 x / s is what ONNX QuantizeLinear computes
    np.testing.assert_array_equal(qp.steps(x), x / np.float32(0.1))
    assert qp.steps(x).dtype == np.float32 and qp.steps(np.float64(x)).dtype == np.float64


def test_int64_saturates_at_its_max_instead_of_wrapping() -> None:
    q = QParams(1.0, 0, "int64").quantize(np.array([1e30, -1e30, 5.0]))
    # float64 holds no 2**63 - 1: the largest value below 2**63 is 2**63 - 1024
    np.testing.assert_array_equal(q, [2**63 - 1024, -(2**63), 5])


def test_dequantize_matches_float32_arithmetic_for_8_and_16_bits() -> None:
    rng = np.random.default_rng(0)
    scale = np.float32(rng.uniform(1e-5, 1.0))
    q = np.arange(-32768, 32768, dtype=np.int16)
    got = QParams(scale, 7, "int16").dequantize(q)
    np.testing.assert_array_equal(got, (q.astype(np.float32) - 7) * scale)


def test_mismatched_zero_points_and_unknown_dtypes_raise() -> None:
    with pytest.raises(ConfigError, match="3 scales but 2 zero points"):
        QParams(np.ones(3), np.zeros(2), "int8", axis=0)
    with pytest.raises(ConfigError, match="int4"):
        QParams(1.0, 0, "int4")
