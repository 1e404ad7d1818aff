"""integer.match: TFLite tensors are paired with the ONNX tensors holding the same values (in any
layout), by sorted values within MATCH_RTOL; weights channel by channel."""

from __future__ import annotations

import numpy as np
import torch

from bridge.export import ExportConfig, export
from bridge.lower import lower
from bridge.lower.integer.match import (
    MATCH_RTOL,
    float_values,
    match_activations,
    match_channels,
    match_constant,
)

RNG = np.random.default_rng(0)
A = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)
B = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)


def test_a_transposed_copy_matches_and_another_tensor_does_not() -> None:
    tfl = {0: A.transpose(0, 2, 3, 1), 1: B.reshape(1, -1), 2: RNG.standard_normal(7)}
    got = match_activations(tfl, {"a": A, "b": B})
    assert got == {0: ["a"], 1: ["b"]}


def test_noise_within_match_rtol_matches_best_first() -> None:
    peak = float(np.abs(A).max())
    near = A + 0.5 * MATCH_RTOL * peak * np.sign(A)
    far = A + 3 * MATCH_RTOL * peak
    got = match_activations({0: near}, {"far": far, "a": A, "same": A.copy()})
    assert got[0][:2] in (["a", "same"], ["same", "a"]) and "far" not in got[0]


def test_candidates_and_non_finite_values_are_skipped() -> None:
    inf = A.copy()
    inf[0, 0, 0, 0] = np.inf
    assert match_activations({0: A, 1: A}, {"a": A}, candidates={1}) == {1: ["a"]}
    assert match_activations({0: inf}, {"a": inf}) == {}


def test_channels_match_along_their_own_axes() -> None:
    w = RNG.standard_normal((8, 3, 3, 3))  # ONNX OIHW, output channels on axis 0
    tfl_ohwi = w.transpose(0, 2, 3, 1)
    assert match_channels(tfl_ohwi, 0, {"w": (w, 0)}) == "w"
    dw = w.transpose(1, 2, 3, 0)  # channels last, as a depthwise filter
    assert match_channels(dw, 3, {"w": (w, 0)}) == "w"
    swapped = tfl_ohwi[[1, 0, *range(2, 8)]]  # same values, two channels exchanged
    assert match_channels(swapped, 0, {"w": (w, 0)}) is None


def test_constant_matches_by_sorted_values() -> None:
    c = RNG.standard_normal(6)
    assert match_constant(c[::-1].reshape(2, 3), {"other": c + 1, "c": c}) == "c"
    assert match_constant(c[:5], {"c": c}) is None


def test_float_values_pairs_every_onnx_tensor_with_its_tflite_twin() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    art = export(model.eval(), (torch.randn(1, 8),), ExportConfig())
    tfl = lower(art, mode="fp32")
    onnx_vals, tfl_vals = float_values(
        art.model, tfl.data, contract=art.contract, tflite_contract=tfl.contract
    )
    matches = match_activations(tfl_vals, onnx_vals)
    matched = {name for names in matches.values() for name in names}
    produced = {o for n in art.model.graph.node for o in n.output if o in onnx_vals}
    assert produced and produced <= matched, (produced - matched, matches)
    assert "input_0" in matched and "output_0" in matched
