"""QuantConfig validates itself and names the allowed values."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bridge.errors import ConfigError
from bridge.quantize import QuantConfig
from bridge.quantize.observers import MSEObserver, PercentileObserver


def test_defaults_and_derived_dtypes() -> None:
    c = QuantConfig()
    assert (c.mode, c.observer, c.activation_dtype, c.symmetric_activations) == (
        "int8",
        "histogram",
        "int8",
        False,
    )
    assert QuantConfig(mode="int16x8").activation_dtype == "int16"
    assert QuantConfig(mode="int16x8").symmetric_activations
    assert QuantConfig(mode="dynamic").activation_dtype is None
    json.dumps(c.to_dict())
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.mode = "int16x8"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "int4"}, r"mode 'int4'.*'int8', 'int16x8', 'dynamic'"),
        ({"observer": "kmeans"}, "unknown observer 'kmeans'; choose one of: minmax"),
        ({"io_dtype": "float16"}, r"io_dtype.*'float32', 'int8', 'uint8'"),
        ({"weight_bits": 4}, r"weight_bits 4.*\[8\]"),
        ({"num_samples": 0}, "positive"),
        ({"per_tensor_overrides": {"x": "nope"}}, "unknown observer 'nope'"),
        ({"observer_options": {"bins": 8}}, "at least 16 bins"),
        ({"observer_options": {"colour": "red"}}, "bad observer_options for observer 'histogram'"),
        ({"mode": "dynamic", "io_dtype": "int8"}, "needs mode 'int8'"),
        ({"exclude_nodes": "/conv"}, "tuple of node names"),
    ],
)
def test_invalid_configs(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        QuantConfig(**kwargs)


def test_make_observer_applies_options_and_overrides() -> None:
    c = QuantConfig(
        observer="percentile",
        observer_options={"percentile": 99.9},
        per_tensor_overrides={"logits": "mse"},
    )
    obs = c.make_observer("conv1")
    assert isinstance(obs, PercentileObserver) and obs.percentile == 99.9
    assert isinstance(c.make_observer("logits"), MSEObserver)
    int16 = QuantConfig(mode="int16x8").make_observer("x")
    assert (int16.dtype, int16.symmetric) == ("int16", True)
