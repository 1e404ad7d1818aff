"""When a tensor below its floor is a divergence, and the .tflite's carried state."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

import bridge
import models
from bridge.runtime import tolerances
from bridge.verify.divergence import LAYER_DROP_DB, first_divergence
from bridge.verify.layer_report import state_note, verdict

FLOOR = 20.0
PAIR = "ort_vs_qdq"


def _chain() -> onnx.ModelProto:
    """x → Relu → a → Neg → b → Abs → c (the graph output)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="/relu/Relu"),
        helper.make_node("Neg", ["a"], ["b"], name="/neg/Neg"),
        helper.make_node("Abs", ["b"], ["c"], name="/abs/Abs"),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "c")]
    return helper.make_model(helper.make_graph(nodes, "chain", io[:1], io[1:]))


def _layers(sqnr: dict[str, float], *, accumulates: bool = True) -> dict:
    ops = {"a": ("/relu/Relu", "Relu"), "b": ("/neg/Neg", "Neg"), "c": ("/abs/Abs", "Abs")}
    rows = [
        {
            "index": i,
            "tensor": t,
            "node": ops[t][0],
            "op": ops[t][1],
            "shape": [4],
            "range": [0.0, 1.0],
            "metrics": {PAIR: {"sqnr_db": db, "max_abs": 0.1, "lsb_max": None}},
        }
        for i, (t, db) in enumerate(sqnr.items())
    ]
    link = {
        "pair": PAIR,
        "ref": "ort",
        "cand": "qdq",
        "kind": "quantization",
        "floor": FLOOR,
        "accumulates": accumulates,
    }
    return {"links": [link], "labels": {}, "rows": rows}


def test_accumulated_noise_below_the_floor_is_no_divergence() -> None:
    small = LAYER_DROP_DB / 2  # each layer loses a little
    layers = _layers({"a": FLOOR + 1, "b": FLOOR + 1 - small, "c": FLOOR + 0.5})
    assert first_divergence(layers, _chain(), {}) is None
    layers["first_divergence"] = None
    assert "1 of the 3 compared tensors fall below" in verdict(layers), verdict(layers)


@pytest.mark.parametrize(
    ("case", "sqnr", "accumulates"),
    [
        ("the output misses the floor too", {"a": 21.0, "b": 18.0, "c": 19.0}, True),
        ("one layer loses more than LAYER_DROP_DB", {"a": 40.0, "b": 18.0, "c": 21.0}, True),
        ("the link does not accumulate error", {"a": 21.0, "b": 18.0, "c": 21.0}, False),
    ],
)
def test_tensor_below_the_floor_diverges(case: str, sqnr: dict, accumulates: bool) -> None:
    found = first_divergence(_layers(sqnr, accumulates=accumulates), _chain(), {})
    assert found is not None, case
    assert (found["tensor"], found["layer"]) == ("b", "/neg/Neg"), (case, found)


@pytest.mark.parametrize(("rms", "diverges"), [(1.4, False), (6.0, True)])
def test_qdq_vs_tflite_is_judged_in_output_steps(rms: float, diverges: bool) -> None:
    """A conversion link below its dB floor diverges only beyond the gate's rms step budget
    (MobileNetV2's logits: 29.5 dB at 1.4 steps rms, two runtimes rounding the same model)."""
    layers = _layers({"a": 40.0, "b": 40.0, "c": 29.5}, accumulates=False)
    layers["mode"] = "int8"
    link = layers["links"][0]
    link.update(pair="qdq_vs_tflite", ref="qdq", cand="tflite", kind="conversion", floor=30.0)
    for row in layers["rows"]:
        row["metrics"] = {"qdq_vs_tflite": {**row["metrics"][PAIR], "lsb_rms": rms}}
    assert rms != tolerances.MAX_RMS_LSB["int8"]
    found = first_divergence(layers, _chain(), {})
    assert (found is not None) == diverges, found


def test_errors_that_add_up_are_named_on_the_end_to_end_link() -> None:
    """Quantization (ORT ⇄ QDQ) and conversion (QDQ ⇄ LiteRT) each meet their floor, their sum
    (ORT ⇄ LiteRT, which the parity gate judges) does not: the first tensor where it misses."""
    links = {"ort_vs_qdq": "quantization", "qdq_vs_tflite": "conversion"}
    links["ort_vs_tflite"] = "end-to-end"
    sqnr = {
        "ort_vs_qdq": {"a": 30.0, "b": 24.0, "c": 23.0},
        "qdq_vs_tflite": {"a": 30.0, "b": 24.0, "c": 23.0},
        "ort_vs_tflite": {"a": 27.0, "b": 19.0, "c": 19.5},
    }
    layers = _layers(sqnr["ort_vs_qdq"])
    template = layers["links"][0]
    layers["links"] = [
        {**template, "pair": pair, "kind": kind, "ref": pair.split("_vs_")[0]}
        for pair, kind in links.items()
    ]
    for row in layers["rows"]:
        row["metrics"] = {
            pair: {"sqnr_db": sqnr[pair][row["tensor"]], "max_abs": 0.1, "lsb_max": None}
            for pair in links
        }
    found = first_divergence(layers, _chain(), {})
    assert found is not None
    assert (found["tensor"], found["kind"], found["pair"]) == ("b", "end-to-end", "ort_vs_tflite")
    assert "add up" in found["explanation"]


def test_lstm_state_is_reset_and_reported(tmp_path) -> None:
    """LiteRT's LSTM keeps its state in variable tensors from one run to the next: compared
    from a carried state, the sequence outputs of samples 2.. differed at ~20 dB while the last
    step (the model's output) agreed. Each sample now starts from reset state, and the report
    says that a .tflite that carries state does. LSTMs are now lowered stateless
    (bridge/lower/floating/recurrent.py), so the note is checked on its own."""
    model, inputs = models.get("lstm_classifier")
    result = bridge.convert(
        model, inputs, tmp_path / "lstm", **models.convert_options("lstm_classifier")
    )
    layers = result.report["layers"]
    assert layers["first_divergence"] is None, layers["first_divergence"]
    assert not layers.get("tflite_state")
    seq = next(r for r in layers["rows"] if r["tensor"] == "/lstm/LSTM_output_0")
    floor = tolerances.floor("fp32", "ort_vs_tflite")
    assert seq["metrics"]["ort_vs_tflite"]["sqnr_db"] >= floor and layers["samples"] > 1

    note = state_note({"tflite_state": ["/rnn/LSTM_h0_state", "/rnn/LSTM_c0_state"]})
    assert note is not None and "2 variable" in note and "reset_all_variables" in note
