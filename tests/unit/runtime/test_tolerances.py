from __future__ import annotations

import math

import pytest

from bridge.errors import ConfigError
from bridge.runtime import tolerances


def test_floors_per_mode() -> None:
    assert tolerances.floor("fp32", "torch_vs_tflite") == 60.0
    assert tolerances.floor("fp16", "torch_vs_tflite") == 40.0
    assert "qdq_vs_tflite" in tolerances.pairs("int8")
    with pytest.raises(ConfigError, match="unknown mode"):
        tolerances.pairs("int4")


def test_no_per_model_exceptions() -> None:
    """One rule for every model: floors take no model name and no override table exists."""
    assert not hasattr(tolerances, "OVERRIDES")
    with pytest.raises(TypeError):
        tolerances.floor("int8", "qdq_vs_tflite", model="mobilenet_v2")  # type: ignore[call-arg]


def test_integer_pairs_derive_their_floors() -> None:
    for mode in ("int8", "int16x8"):
        assert tolerances.rule(mode, "qdq_vs_tflite") == "lsb"
        assert tolerances.rule(mode, "torch_vs_qdq") == tolerances.rule(mode, "torch_vs_tflite")
        assert tolerances.rule(mode, "torch_vs_ort") == "fixed"
    assert tolerances.rule("fp16", "torch_vs_tflite") == "fixed"


def test_lsb_floor_is_k_steps_rms() -> None:
    """Signal power 256 steps² (spread ≈ 16 steps) at k steps rms: 10·log10(256 / k²)."""
    k = tolerances.MAX_RMS_LSB["int8"]
    step = 0.066
    got = tolerances.lsb_floor_db(256 * step**2, step, "int8")
    assert got == pytest.approx(10 * math.log10(256 / k**2))
    assert got < tolerances.INT8_VS_QDQ_MIN_SQNR_DB  # a fixed 30 dB would refuse it
    assert tolerances.lsb_floor_db(256 * step**2, step, "int8", predicted_db=12.0) == 12.0


def test_noise_floor_is_prediction_minus_margin_up_to_its_cap() -> None:
    margin = tolerances.NOISE_MARGIN_DB["int8"]
    cap = tolerances.NOISE_FLOOR_CAP_DB["int8"]
    assert tolerances.noise_floor_db(cap + margin - 3.0, "int8") == cap - 3.0
    assert tolerances.noise_floor_db(cap + margin + 20.0, "int8") == cap  # a tail clip passes
    assert tolerances.noise_floor_db(5.0, "int8") == 5.0 - margin  # a near-zero sample
    exact = tolerances.SQNR_EXACT_DB
    assert tolerances.noise_floor_db(exact, "int8") == tolerances.FP32_MIN_SQNR_DB
