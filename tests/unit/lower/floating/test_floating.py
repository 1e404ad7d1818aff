"""fp32 lowering: the .tflite keeps the I/O contract exactly and matches ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import TensorSpec
from bridge.errors import ConfigError
from bridge.lower import lower
from bridge.lower.modes import load_modes
from bridge.runtime import tflite_io
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB


def test_conv_net_keeps_nchw_io_and_matches_ort(conv_art, conv_fp32, tools) -> None:
    assert tools.io(conv_fp32.data) == tools.contract_io(conv_art.contract)
    assert conv_fp32.contract == conv_art.contract
    assert conv_fp32.mode == "fp32"
    sqnr = tools.sqnr(conv_art, conv_fp32)
    assert min(sqnr.values()) >= FP32_MIN_SQNR_DB, sqnr


def test_facts(conv_fp32: TfliteArtifact) -> None:
    facts = conv_fp32.facts
    assert facts["backend"].startswith("onnx2tf flatbuffer_direct ")
    assert facts["op_counts"]["CONV_2D"] == 1
    assert facts["transpose_count"] == facts["op_counts"].get("TRANSPOSE", 0)
    assert facts["transpose_count"] == 2  # NCHW in → NHWC conv → NCHW out
    assert facts["seconds"] > 0
    corr = facts["correspondence"]
    assert corr["logits"] == {"tflite": "logits", "channel_last": False, "fused": False}
    assert corr["feat"]["tflite"] == "feat" and not corr["feat"]["channel_last"]
    names = {tflite_io.tensor_name(t) for t in tflite_io.load(conv_fp32.data).subgraphs[0].tensors}
    assert {e["tflite"] for e in corr.values()} <= names


def test_signature_lists_contract_order(conv_fp32: TfliteArtifact) -> None:
    model = tflite_io.load(conv_fp32.data)
    (sig,) = model.signatureDefs
    sg = model.subgraphs[0]
    assert sig.signatureKey == b"serving_default"
    assert [(m.name, m.tensorIndex) for m in sig.inputs] == [(b"x", sg.inputs[0])]
    assert [(m.name, m.tensorIndex) for m in sig.outputs] == [
        (b"logits", sg.outputs[0]),
        (b"feat", sg.outputs[1]),
    ]


def test_sequence_input_is_never_transposed(seq_art: OnnxArtifact, tools) -> None:
    for nhwc in (False, True):  # a "plain" [batch, time, features] tensor is not an image
        tfl = lower(seq_art, mode="fp32", nhwc=nhwc)
        assert tools.io(tfl.data) == tools.contract_io(seq_art.contract)
        assert tfl.facts["transpose_count"] == 0
        sqnr = tools.sqnr(seq_art, tfl)
        assert min(sqnr.values()) >= FP32_MIN_SQNR_DB, sqnr


@pytest.fixture(scope="module")
def multi_fp32(multi_art: OnnxArtifact) -> TfliteArtifact:
    return lower(multi_art, mode="fp32")


def test_multi_io_order_and_names(multi_art, multi_fp32, tools) -> None:
    ins, outs = tools.io(multi_fp32.data)
    assert [r[0] for r in ins] == ["image", "context", "bias", "tokens"]
    assert [r[0] for r in outs] == ["score", "embedding", "aux"]
    assert (ins, outs) == tools.contract_io(multi_art.contract)
    # context and bias have the same shape: a swap would only show in the numbers.
    sqnr = tools.sqnr(multi_art, multi_fp32)
    assert min(sqnr.values()) >= FP32_MIN_SQNR_DB, sqnr


def test_multi_io_nhwc_changes_only_image_tensors(multi_art: OnnxArtifact, tools) -> None:
    tfl = lower(multi_art, mode="fp32", nhwc=True)
    assert tfl.contract == multi_art.contract.as_nhwc()
    ins, outs = tools.io(tfl.data)
    assert ins == [
        ("image", (1, 8, 8, 3), "float32"),
        ("context", (1, 5), "float32"),
        ("bias", (1, 5), "float32"),
        ("tokens", (1, 6, 5), "float32"),
    ]
    assert outs == [
        ("score", (1, 6, 5), "float32"),
        ("embedding", (1, 4), "float32"),
        ("aux", (1, 8, 8, 4), "float32"),
    ]
    sqnr = tools.sqnr(multi_art, tfl)
    assert min(sqnr.values()) >= FP32_MIN_SQNR_DB, sqnr


def test_nhwc_conv_net(conv_art, conv_nhwc, tools) -> None:
    assert conv_nhwc.contract == conv_art.contract.as_nhwc()
    assert tools.io(conv_nhwc.data) == (
        [("x", (1, 16, 16, 3), "float32")],
        [("logits", (1, 10), "float32"), ("feat", (1, 16, 16, 8), "float32")],
    )
    # The boundary transposes cancel against onnx2tf's, and the mean runs on NHWC axes.
    assert conv_nhwc.facts["transpose_count"] == 0
    assert conv_nhwc.facts["op_counts"] == {
        "CONV_2D": 1,
        "FULLY_CONNECTED": 1,
        "MEAN": 1,
        "RELU": 1,
    }
    assert conv_nhwc.facts["correspondence"]["x"]["channel_last"]
    sqnr = tools.sqnr(conv_art, conv_nhwc)
    assert min(sqnr.values()) >= FP32_MIN_SQNR_DB, sqnr


def test_nhwc_outputs_hold_channel_last_data(conv_art, conv_fp32, conv_nhwc) -> None:
    """Run both files directly (no runner layout conversion): NHWC = NCHW moved."""
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    results = []
    for data, feed in ((conv_fp32.data, x), (conv_nhwc.data, x.transpose(0, 2, 3, 1))):
        interp = Interpreter(model_content=data)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], feed)
        interp.invoke()
        results.append(
            {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
        )
    nchw, nhwc = results
    np.testing.assert_allclose(nhwc["feat"], nchw["feat"].transpose(0, 2, 3, 1), atol=1e-5)
    np.testing.assert_allclose(nhwc["logits"], nchw["logits"], atol=1e-5)


@pytest.mark.parametrize("nhwc", [False, True])
def test_conv1d_ncw(conv1d_art: OnnxArtifact, nhwc: bool, tools) -> None:
    tfl = lower(conv1d_art, mode="fp32", nhwc=nhwc)
    want = conv1d_art.contract.as_nhwc() if nhwc else conv1d_art.contract
    assert tools.io(tfl.data) == tools.contract_io(want)
    if nhwc:
        assert tools.io(tfl.data)[0] == [("signal", (1, 32, 4), "float32")]
    sqnr = tools.sqnr(conv1d_art, tfl)
    assert min(sqnr.values()) >= FP32_MIN_SQNR_DB, sqnr


def test_dynamic_batch(tools) -> None:
    art = tools.export(
        tools.ConvNet(),
        [("x", (1, 3, 16, 16), "NCHW")],
        [("logits", "plain"), ("feat", "NCHW")],
        dynamic_batch=True,
    )
    assert art.contract.inputs[0].shape == (None, 3, 16, 16)
    tfl = lower(art, mode="fp32")
    assert tools.io(tfl.data) == tools.contract_io(art.contract)
    sqnr = tools.sqnr(art, tfl, batch=3)
    assert min(sqnr.values()) >= FP32_MIN_SQNR_DB, sqnr


def test_modes_registered() -> None:
    assert {"fp32", "fp16"} <= set(load_modes().names())


def test_unknown_mode(conv_art: OnnxArtifact) -> None:
    with pytest.raises(ConfigError, match="fp32"):
        lower(conv_art, mode="int3")


def test_channel_last_contract_is_refused(conv_art: OnnxArtifact) -> None:
    art = conv_art.evolve(contract=conv_art.contract.as_nhwc())
    with pytest.raises(ConfigError, match="channel-first"):
        lower(art, mode="fp32")


def test_qdq_model_is_refused_by_float_modes(conv_art: OnnxArtifact) -> None:
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(conv_art.model)
    graph = model.graph
    first = graph.node[0]
    graph.initializer.extend(
        [
            onnx.numpy_helper.from_array(np.float32(0.1), "s"),
            onnx.numpy_helper.from_array(np.int8(0), "z"),
        ]
    )
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q")
    dq = helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"], name="dq")
    first.input[0] = "xdq"
    graph.node.insert(0, dq)
    graph.node.insert(0, q)
    for mode in ("fp32", "fp16"):
        with pytest.raises(ConfigError, match="QuantizeLinear"):
            lower(OnnxArtifact(model, conv_art.contract), mode=mode)


def test_contract_names_must_match_onnx(conv_art: OnnxArtifact) -> None:
    from bridge.contract import IOContract
    from bridge.errors import LoweringError

    renamed = IOContract(
        (TensorSpec("image", (1, 3, 16, 16), "float32", "NCHW"),), conv_art.contract.outputs
    )
    with pytest.raises(LoweringError, match="image"):
        lower(conv_art.evolve(contract=renamed), mode="fp32")


def _intermediates(data: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of a LiteRT run (no XNNPACK delegate, so no tensor is fused away)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=data,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], feeds[d["name"]])
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_tensor_details()}


@pytest.mark.parametrize("which", ["wide_fp32", "conv_nhwc"])
def test_correspondence_holds_the_onnx_values(which: str, request, wide_art, conv_art) -> None:
    """Each non-fused entry's .tflite tensor equals the ONNX tensor (after its layout move)."""
    from bridge.contract import to_layout
    from bridge.runtime.feeds import random_feeds
    from bridge.runtime.metrics import sqnr_db
    from bridge.runtime.runners import OrtRunner

    tfl = request.getfixturevalue(which)
    art = wide_art if which == "wide_fp32" else conv_art
    corr = tfl.facts["correspondence"]
    exact = [k for k, v in corr.items() if not v["fused"] and k not in art.contract.input_names]
    assert len(exact) >= 4, corr
    if which == "wide_fp32":
        assert any(v["fused"] for v in corr.values())  # conv outputs fused with their ReLU
        assert any(v["channel_last"] for v in corr.values())
    feeds = random_feeds(art.contract, seed=2)
    ref = OrtRunner(art.model, art.contract, extra_outputs=exact).run(feeds)
    tfl_feeds = {
        s.name: to_layout(feeds[s.name], s, t)
        for s, t in zip(art.contract.inputs, tfl.contract.inputs, strict=True)
    }
    got = _intermediates(tfl.data, tfl_feeds)
    for name in exact:
        y = got[corr[name]["tflite"]]
        if corr[name]["channel_last"]:
            y = np.moveaxis(y, -1, 1)
        assert y.shape == ref[name].shape, (name, corr[name])
        assert sqnr_db(ref[name], y) >= FP32_MIN_SQNR_DB, (name, corr[name])
