"""verify.layer_stats: per (link, tensor) SQNR pooled over samples, max abs, LSB error in the
candidate's steps (scaled by t_c for an equalized tensor), and rows in graph order."""

from __future__ import annotations

import numpy as np
from onnx import helper

from bridge.modes.base import Link
from bridge.runtime.metrics import SQNR_EXACT_DB, sqnr_db
from bridge.verify.layer_stats import LayerStats, _Acc, lsb_scale
from bridge.verify.unscale import Unscaler

ORT_QDQ = Link("ort", "qdq", "quantization", None)
QDQ_TFL = Link("qdq", "tflite", "conversion", None)
RNG = np.random.default_rng(0)


def test_sqnr_is_pooled_over_samples_not_averaged() -> None:
    refs = [RNG.standard_normal(64).astype(np.float32) * s for s in (1.0, 10.0)]
    outs = [r + RNG.standard_normal(64).astype(np.float32) * 0.1 for r in refs]
    acc = _Acc()
    for r, o in zip(refs, outs, strict=True):
        acc.add(r, o, None)
    got = acc.result()
    want = sqnr_db(np.concatenate(refs), np.concatenate(outs))
    assert abs(got["sqnr_db"] - want) < 0.01
    assert got["max_abs"] == max(
        float(np.abs(r - o).max()) for r, o in zip(refs, outs, strict=True)
    )
    assert got["lsb_max"] is None and got["lsb_rms"] is None


def test_lsb_error_in_steps() -> None:
    acc = _Acc()
    ref = np.zeros(4, np.float32)
    acc.add(ref, np.array([0.0, 0.5, -1.0, 2.0], np.float32), 0.5)
    got = acc.result()
    assert got["lsb_max"] == 4.0
    assert abs(got["lsb_rms"] - np.sqrt((0 + 1 + 4 + 16) / 4)) < 1e-6
    assert got["sqnr_db"] == -SQNR_EXACT_DB  # zero signal


def test_exact_match_and_non_finite_values() -> None:
    exact = _Acc()
    exact.add(np.ones(3), np.ones(3), None)
    assert exact.result()["sqnr_db"] == SQNR_EXACT_DB
    nan = _Acc()
    nan.add(np.ones(3), np.array([1.0, np.nan, 1.0]), None)
    nan.add(np.ones(3), np.ones(3), None)  # a later finite sample does not hide it
    assert nan.result()["sqnr_db"] == -SQNR_EXACT_DB
    assert nan.result()["max_abs"] == float("inf")


def test_lsb_scale_prefers_the_tflite_step_then_the_qdq_activation_fact() -> None:
    quant = {"t": {"kind": "activation", "scale": [0.25]}, "w": {"kind": "constant", "scale": [1]}}
    assert lsb_scale(QDQ_TFL, "t", {"t": 0.5}, quant) == 0.5
    assert lsb_scale(QDQ_TFL, "t", {}, quant) == 0.25
    assert lsb_scale(ORT_QDQ, "t", {"t": 0.5}, quant) == 0.25
    assert lsb_scale(ORT_QDQ, "w", {}, quant) is None
    assert lsb_scale(Link("torch", "ort", "export", None), "t", {"t": 0.5}, quant) is None


def test_layer_stats_ranges_shapes_and_rows_in_graph_order() -> None:
    stats = LayerStats()
    a = np.array([[-1.0, 2.0]], np.float32)
    for shift in (0.0, 3.0):
        values = {
            "ort": {"a": a + shift, "b": a * 2},
            "qdq": {"a": a + shift + 0.25, "b": np.zeros((2, 1), np.float32)},  # b: shape differs
        }
        stats.add(values, {}, [ORT_QDQ], {"a": {"kind": "activation", "scale": [0.125]}})
    assert stats.ranges["a"] == [-1.0, 5.0]
    assert stats.shapes["b"] == (1, 2)
    nodes = [("b", helper.make_node("Neg", ["a"], ["b"], name="nb")),
             ("a", helper.make_node("Relu", ["x"], ["a"])),
             ("c", helper.make_node("Abs", ["b"], ["c"]))]  # fmt: skip
    rows = stats.rows(nodes, [ORT_QDQ])
    assert [(r["index"], r["tensor"], r["node"], r["op"]) for r in rows] == [
        (0, "b", "nb", "Neg"),
        (1, "a", "a", "Relu"),
    ]
    assert rows[0]["metrics"] == {}
    m = rows[1]["metrics"]["ort_vs_qdq"]
    assert m["max_abs"] == 0.25 and m["lsb_max"] == 2.0


def test_equalized_tensor_steps_are_scaled_by_their_factors() -> None:
    """An equalized tflite value is x_c / t_c; its step s is s·t_c in the float scale."""
    unscaler = Unscaler.from_facts({"e": [1.0, 4.0]})
    ref = np.zeros((1, 2, 1, 1), np.float32)
    out = np.full((1, 2, 1, 1), 0.5, np.float32)
    stats = LayerStats()
    stats.add({"ort": {"e": ref}, "qdq": {"e": ref}, "tflite": {"e": out}}, {"e": 0.5},
              [QDQ_TFL], {}, unscaler)  # fmt: skip
    got = stats.acc[("qdq_vs_tflite", "e")].result()
    assert got["lsb_max"] == 1.0  # channel 0: 0.5 / (0.5·1); channel 1: 0.5 / (0.5·4)
    assert abs(got["lsb_rms"] - np.sqrt((1 + 0.25**2) / 2)) < 1e-6
