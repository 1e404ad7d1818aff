"""passes.base: a pass returns a frozen PassResult; a pass with nothing to do hands back the
model it was given."""

from __future__ import annotations

import dataclasses

import onnx
import pytest

from bridge.passes.base import GraphPass, PassResult
from bridge.passes.remove_identity import remove_identity
from tests.unit.passes.conftest import build_model


def test_pass_result_is_frozen_with_its_own_hints() -> None:
    model = onnx.ModelProto()
    a, b = PassResult(model, False, 0), PassResult(model, False, 0)
    assert a.hints == {} and a.hints is not b.hints
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.count = 1  # type: ignore[misc]


def test_a_registered_pass_fits_the_interface() -> None:
    model = build_model([onnx.helper.make_node("Relu", ["x"], ["y"])], {"x": [2]}, {"y": [2]})
    run: GraphPass = remove_identity
    result = run(model)
    assert isinstance(result, PassResult)
    assert (result.modified, result.count) == (False, 0)
    assert result.model is model
