"""verify.divergence: the first row where a judged link misses its floor, the layer blamed for
it, and the excuses (within output steps; accumulated noise while every output meets its floor).

The graph is a chain x ─n0→ a ─n1→ b ─n2→ y; the rows are hand-made metrics on a, b, y.
"""

from __future__ import annotations

from typing import Any

from onnx import TensorProto, helper

from bridge.runtime import tolerances
from bridge.verify.divergence import (
    LAYER_DROP_DB,
    MAX_SUSPECTS,
    accumulated,
    excused_links,
    explain,
    first_divergence,
    short_name,
    within_steps,
)

QUANT = tolerances.floor("int8", "torch_vs_qdq")
CONV = tolerances.floor("int8", "qdq_vs_tflite")
MAX_RMS = tolerances.MAX_RMS_LSB["int8"]
EXACT = 140.0

MODEL = helper.make_model(
    helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="/blk/n0"),
            helper.make_node("Neg", ["a"], ["b"], name="/blk/n1"),
            helper.make_node("Abs", ["b"], ["y"], name="/head/n2"),
        ],
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
)
LINKS = [
    {"pair": "torch_vs_ort", "ref": "torch", "cand": "ort", "kind": "export", "floor": QUANT},
    {"pair": "ort_vs_qdq", "ref": "ort", "cand": "qdq", "kind": "quantization", "floor": QUANT,
     "accumulates": True},
    {"pair": "qdq_vs_tflite", "ref": "qdq", "cand": "tflite", "kind": "conversion",
     "floor": CONV, "accumulates": True},
]  # fmt: skip


def _m(sqnr: float, lsb_rms: float | None = None) -> dict[str, Any]:
    return {"sqnr_db": sqnr, "max_abs": 0.5, "lsb_max": None, "lsb_rms": lsb_rms}


def _layers(quant: tuple[float, float, float], conv: tuple[float, float, float], **kw: Any):
    """Rows a, b, y with those ort_vs_qdq and qdq_vs_tflite SQNRs (torch_vs_ort exact)."""
    rows = [
        {
            "index": i,
            "tensor": t,
            "node": node,
            "op": op,
            "shape": [1, 4],
            "range": [-1.0, 2.0],
            "metrics": {
                "torch_vs_ort": _m(EXACT),
                "ort_vs_qdq": _m(quant[i]),
                "qdq_vs_tflite": _m(conv[i], kw.get("rms")),
            },
        }
        for i, (t, node, op) in enumerate(
            [("a", "/blk/n0", "Relu"), ("b", "/blk/n1", "Neg"), ("y", "/head/n2", "Abs")]
        )
    ]
    return {"mode": "int8", "links": LINKS, "rows": rows, "labels": {"qdq": "QDQ"}}


GOOD = (QUANT + 20, QUANT + 15, QUANT + 10)
GOOD_CONV = (CONV + 20, CONV + 15, CONV + 10)


def test_no_divergence_when_every_row_meets_its_floors() -> None:
    assert first_divergence(_layers(GOOD, GOOD_CONV), MODEL, {}) is None


def test_conversion_miss_blames_the_node_after_the_last_agreeing_tensor() -> None:
    conv = (CONV + 20, CONV - 15, CONV - 16)
    found = first_divergence(_layers(GOOD, conv), MODEL, {})
    assert found is not None
    assert (found["tensor"], found["layer"], found["kind"]) == ("b", "/blk/n1", "conversion")
    assert found["suspects"] == ["/blk/n1"]
    assert found["input_sqnr_db"] == CONV + 20
    assert found["sqnr_db"] == CONV - 15 and found["floor"] == CONV
    assert "Conversion error" in found["explanation"]
    assert f"down from {CONV + 20:.1f} dB on its inputs" in found["explanation"]


def test_accumulated_quantization_noise_is_not_a_divergence() -> None:
    """b is below the floor but lost less than LAYER_DROP_DB, and the output y meets it."""
    quant = (QUANT + 1, QUANT - (LAYER_DROP_DB - 9), QUANT + 1)
    layers = _layers(quant, GOOD_CONV)
    assert excused_links(layers, {"y"}) == {"ort_vs_qdq", "qdq_vs_tflite"}
    assert accumulated(MODEL, layers["rows"][1], "ort_vs_qdq", layers["rows"])
    assert first_divergence(layers, MODEL, {}) is None


def test_a_sharp_drop_below_the_floor_is_a_divergence_even_if_outputs_pass() -> None:
    quant = (QUANT + 5, QUANT + 5 - LAYER_DROP_DB - 1, QUANT + 1)
    fact = {"range": [-1.0, 1.0], "observed_range": [-3.0, 3.0], "scale": 0.0078, "observer": "mse"}
    found = first_divergence(_layers(quant, GOOD_CONV), MODEL, {"b": fact})
    assert found is not None and (found["tensor"], found["layer"]) == ("b", "/blk/n1")
    assert found["quantization"]["observed_range"] == [-3.0, 3.0]
    assert "Quantization range [-1, 1] (observer mse saw [-3, 3])" in found["explanation"]


def test_an_output_below_the_floor_is_never_excused() -> None:
    quant = (QUANT + 1, QUANT + 1, QUANT - 1)
    layers = _layers(quant, GOOD_CONV)
    assert excused_links(layers, {"y"}) == {"qdq_vs_tflite"}
    found = first_divergence(layers, MODEL, {})
    assert found is not None and found["tensor"] == "y" and found["pair"] == "ort_vs_qdq"


def test_within_steps_excuses_an_lsb_pair_within_the_rms_budget() -> None:
    assert within_steps(_m(CONV - 30, MAX_RMS), "int8", "qdq_vs_tflite")
    assert not within_steps(_m(CONV - 30, MAX_RMS * 1.01), "int8", "qdq_vs_tflite")
    assert not within_steps(_m(CONV - 30, None), "int8", "qdq_vs_tflite")
    assert not within_steps(_m(CONV - 30, 0.0), "int8", "torch_vs_qdq")  # a "noise" pair
    conv = (CONV - 30, CONV - 30, CONV - 30)
    assert first_divergence(_layers(GOOD, conv, rms=MAX_RMS / 2), MODEL, {}) is None


def test_export_miss_blames_a_suspect_inside_the_rows_module_scope() -> None:
    layers = _layers(GOOD, GOOD_CONV)
    layers["rows"][0]["metrics"].pop("torch_vs_ort")  # a: no torch value to compare
    layers["rows"][1]["metrics"]["torch_vs_ort"] = _m(QUANT - 40)
    found = first_divergence(layers, MODEL, {})
    assert found is not None and found["kind"] == "export"
    assert found["suspects"] == ["/blk/n0", "/blk/n1"]
    assert found["layer"] == "/blk/n0" and found["input_sqnr_db"] is None
    assert found["explanation"].endswith(
        "Export error: the ONNX model already disagrees with torch here."
    )


def test_suspect_walk_is_bounded() -> None:
    n = MAX_SUSPECTS + 10
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"r{i}") for i in range(n)]
    graph = helper.make_graph(
        nodes,
        "long",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1])],
    )
    row = {"tensor": f"t{n}", "index": 0, "metrics": {"p": _m(0.0)}}
    near = {"tensor": f"t{n - MAX_SUSPECTS + 1}", "metrics": {"p": _m(1.0)}}
    far = {"tensor": f"t{n - MAX_SUSPECTS - 1}", "metrics": {"p": _m(1.0)}}
    model = helper.make_model(graph)
    assert accumulated(model, row, "p", [row, near])  # 1 dB lost since a tensor in reach
    assert not accumulated(model, row, "p", [row, far])  # beyond MAX_SUSPECTS nodes: unknown


def test_explain_names_the_labels_and_lsb() -> None:
    found = {
        "pair": "ort_vs_qdq", "layer": "/a/a.1/Conv", "layer_op": "Conv", "tensor": "/a/a.1/Conv",
        "sqnr_db": 12.34, "floor": 25.0, "max_abs": 0.25, "lsb_max": 3.0,
        "input_sqnr_db": None, "kind": "end-to-end",
    }  # fmt: skip
    text = explain(found, {"ort": "ORT", "qdq": "QDQ"})
    assert text.startswith(
        "first diverging layer a.1/Conv (Conv): QDQ vs ORT SQNR 12.3 dB < 25 dB "
        "(max abs 0.25, 3.0 LSB)."
    )
    assert "errors add up here" in text


def test_short_name_drops_scopes_repeated_by_their_child() -> None:
    assert short_name("/features/features.1/block/block.0/Conv") == "features.1/block.0/Conv"
    assert short_name("/fc/Gemm") == "fc/Gemm"
    assert short_name("output_0") == "output_0"
    assert short_name("/") == "/"
