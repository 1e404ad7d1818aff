from __future__ import annotations

import pytest

from bridge.errors import ConfigError
from bridge.verify import tolerances


def test_floors_per_mode() -> None:
    assert tolerances.floor("fp32", "torch_vs_tflite") == 60.0
    assert tolerances.floor("fp16", "torch_vs_tflite") == 40.0
    assert "qdq_vs_tflite" in tolerances.pairs("int8")
    with pytest.raises(ConfigError, match="unknown mode"):
        tolerances.pairs("int4")


def test_every_override_has_a_reason() -> None:
    for key, (value, reason) in tolerances.OVERRIDES.items():
        assert len(reason) > 20, key
        assert value < tolerances.floor(key[1], key[2]), f"{key} does not loosen anything"
