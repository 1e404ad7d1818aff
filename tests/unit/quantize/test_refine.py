"""prepare/finish around calibration: the kept samples go back in front of the stream, the
options validate, and the config reports them."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.errors import ConfigError
from bridge.quantize.config import QuantConfig
from bridge.quantize.refine import prepare

from .conftest import random_samples


def test_kept_samples_are_put_back_in_order(cnn) -> None:
    data = random_samples(cnn, 7)
    pulled: list[int] = []

    def stream():
        for i, s in enumerate(data):
            pulled.append(i)
            yield s

    prepared = prepare(cnn, stream(), QuantConfig(mode="int8", correction_samples=3))
    assert pulled == [0, 1, 2]  # only the kept ones are read ahead
    assert len(prepared.samples) == 3
    np.testing.assert_array_equal(prepared.samples[2]["x0"], data[2][0])
    replay = list(prepared.calibration)
    assert len(replay) == 7 and all(r[0] is s[0] for r, s in zip(replay, data, strict=True))


def test_num_samples_bounds_the_kept_ones(cnn) -> None:
    config = QuantConfig(mode="int8", num_samples=2, correction_samples=5)
    assert len(prepare(cnn, random_samples(cnn, 6), config).samples) == 2


def test_nothing_is_kept_when_both_steps_are_off(cnn) -> None:
    data = random_samples(cnn, 3)
    config = QuantConfig(mode="int8", bias_correction=False, equalize=False)
    prepared = prepare(cnn, data, config)
    assert prepared.samples == [] and prepared.calibration is data


def test_options_validate_and_are_reported() -> None:
    with pytest.raises(ConfigError, match="correction_samples"):
        QuantConfig(correction_samples=0)
    d = QuantConfig().to_dict()
    assert d["bias_correction"] is True and d["equalize"] is True
    assert d["correction_samples"] == 32 and d["weight_rounding"] == "gptq"
    assert QuantConfig(equalize=False).to_dict()["equalize"] is False
