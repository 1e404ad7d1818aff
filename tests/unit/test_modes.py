"""A mode is one file plus one registry line: a throwaway Mode registered here is seen by the
CLI choices, the quantizer's config, the gate's pairs and floors, and localize's links."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from bridge import api, cli
from bridge.errors import ConfigError
from bridge.modes import EXPORT, MODES, Link, Mode, get, integer_mode, register
from bridge.quantize.config import QuantConfig
from bridge.runtime import tolerances
from bridge.verify import parity

#: The throwaway mode's own floor, far from every real one so a wrong lookup shows.
TOY_FLOOR = tolerances.FP32_MIN_SQNR_DB + 7.0
TOY = Mode(
    name="toy",
    activation_dtype="float32",
    weight_dtype="int8",
    needs_calibration=False,
    has_qdq=True,
    floors={"torch_vs_ort": tolerances.FP32_MIN_SQNR_DB, "torch_vs_tflite": TOY_FLOOR},
    links=(EXPORT, Link("ort", "tflite", "end-to-end", ("toy", "torch_vs_tflite"))),
    lowering="dynamic",
)


@pytest.fixture
def toy() -> Iterator[Mode]:
    register(TOY)
    try:
        yield TOY
    finally:
        del MODES._items[TOY.name]


def test_the_registry_holds_every_mode_in_order():
    assert MODES.names() == ["fp32", "fp16", "dynamic", "int8", "int16x8"]
    for name in MODES:
        mode = get(name)
        assert mode.name == name
        assert mode.pairs == tolerances.pairs(name)
        for pair in mode.pairs:
            assert mode.floor(pair) == tolerances.floor(name, pair)
            assert mode.rule(pair) == tolerances.rule(name, pair)
    assert integer_mode("int8").name == "int8" and integer_mode("int16").name == "int16x8"


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="mode 'int8' is already registered"):
        register(get("int8"))
    with pytest.raises(ConfigError, match="unknown mode 'int4'"):
        get("int4")


def test_a_new_mode_is_seen_everywhere(toy: Mode):
    args = cli._parser().parse_args(["convert", "zoo:digits_cnn", "-o", "x", "--quantize", "toy"])
    assert args.mode == "toy"
    assert QuantConfig(mode="toy").activation_dtype is None  # weights only, like dynamic
    assert api._mode("toy") == "toy"
    ref = {"y": np.ones(64, np.float32)}
    # an error between fp32's floor and the toy's: only the toy's own floor fails it
    err = 10 ** (-(tolerances.FP32_MIN_SQNR_DB + 3.5) / 20)
    cand = {"y": ref["y"] * np.float32(1 + err)}
    samples = {"torch": [ref], "ort": [ref], "tflite": [cand]}
    verdict = parity.check(samples, mode="toy", output_names=["y"])
    assert list(verdict["pairs"]) == ["torch_vs_ort", "torch_vs_tflite"]
    entry = verdict["pairs"]["torch_vs_tflite"]["y"]
    assert entry["min_sqnr_db"] == TOY_FLOOR, entry
    assert not verdict["passed"], verdict  # 63.5 dB: passes fp32's 60, fails the toy's 67
    assert get("toy").links[-1].floor == ("toy", "torch_vs_tflite")
    assert get("toy").lowering == "dynamic" and get("int8").lowering == "int8"


def test_an_unknown_mode_is_refused_by_the_cli():
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["convert", "zoo:x", "-o", "x", "--quantize", "toy"])
