"""int8 / int16x8 lowering: QDQ ONNX → integer TFLite carrying the QDQ model's own scales."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.errors import ConfigError, LoweringError
from bridge.lower import lower, lower_float
from bridge.lower.integer import fuse, lower_int8, lower_int16x8
from bridge.lower.integer.qdq import read_qdq
from bridge.lower.tflite_graph import Graph
from bridge.quantize import QuantConfig, quantize
from bridge.runtime import tflite_io, tolerances
from bridge.runtime.feeds import random_feeds
from bridge.runtime.metrics import lsb_error, sqnr_db
from bridge.runtime.runners import LiteRTRunner, OrtRunner

#: TFLite and ONNX Runtime compute the same integer model. They differ only where a value sits
#: within float error of a rounding tie: TFLite requantizes with a 31-bit fixed-point (or fp32)
#: multiplier, ORT runs DQ → float op → Q in float32, and XNNPACK's int8 ADD rounds its
#: rescaled inputs. A tie rounds one step either way, so one requantization differs by at most
#: 1 LSB; on this net a flip upstream reaches the output scaled down (the measured worst case is
#: 1 LSB, int8 and int16). Bound: 2 LSB anywhere, 1 LSB at the 99th percentile (+ float slack
#: of the LSB division: an int16 step of a float32 scale measures up to 1.0015 LSB).
MAX_LSB = 2.0
P99_LSB = 1.0 + 1e-2
N_SAMPLES = 6
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
TYPE_NAMES = {0: "float32", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}
#: Output-channel axis of each weighted op's filter in the TFLite layout.
FILTER_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


class TinyNet(nn.Module):
    """conv-bn-relu, depthwise-relu6, pointwise, residual add, maxpool, conv / avgpool-conv-resize
    branches concatenated, sigmoid gating, conv-relu6, mean, linear; logits and softmax out."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6())
        self.pw = nn.Conv2d(16, 16, 1)
        self.pool = nn.MaxPool2d(2)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.avg = nn.AvgPool2d(2)
        self.b = nn.Conv2d(16, 8, 1)
        self.head = nn.Sequential(nn.Conv2d(24, 32, 1), nn.ReLU6())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.stem(x)
        y = self.pool(y + self.pw(self.dw(y)))
        b = F.interpolate(self.b(self.avg(y)), scale_factor=2.0, mode="nearest")
        z = torch.cat([self.a(y), b], 1)
        z = self.head(z * torch.sigmoid(z)).mean((2, 3))
        logits = self.fc(z)
        return logits, torch.softmax(logits, -1)


def export(
    module: nn.Module, shape: tuple[int, ...] = (1, 3, 16, 16), out_features: int = 10
) -> OnnxArtifact:
    torch.manual_seed(0)
    module.eval()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    buf = io.BytesIO()
    torch.onnx.export(
        module,
        (torch.randn(*shape),),
        buf,
        opset_version=17,
        dynamo=False,
        input_names=["x"],
        output_names=["logits", "probs"],
    )
    model = onnx.load_from_string(buf.getvalue())
    contract = IOContract(
        (TensorSpec("x", shape, "float32", "NCHW"),),
        tuple(TensorSpec(n, (1, out_features), "float32") for n in ("logits", "probs")),
    )
    return OnnxArtifact(model, contract, stage="passes")


def calibration(artifact: OnnxArtifact, n: int = 16) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(1)
    shape = artifact.contract.inputs[0].shape
    return [(rng.standard_normal(shape).astype(np.float32),) for _ in range(n)]


@pytest.fixture(scope="module")
def float_net() -> OnnxArtifact:
    torch.manual_seed(0)
    return export(TinyNet())


@pytest.fixture(scope="module")
def qdq8(float_net: OnnxArtifact) -> OnnxArtifact:
    return quantize(float_net, QuantConfig(mode="int8"), calibration(float_net))


@pytest.fixture(scope="module")
def qdq16(float_net: OnnxArtifact) -> OnnxArtifact:
    return quantize(float_net, QuantConfig(mode="int16x8"), calibration(float_net))


@pytest.fixture(scope="module")
def int8(qdq8: OnnxArtifact) -> TfliteArtifact:
    return lower_int8(qdq8)


@pytest.fixture(scope="module")
def int16(qdq16: OnnxArtifact) -> TfliteArtifact:
    return lower_int16x8(qdq16)


# ---- helpers ------------------------------------------------------------------------------------
def ops_of(art: TfliteArtifact) -> tuple:
    model = tflite_io.load(art.data)
    sg = model.subgraphs[0]
    return model, sg, [(tflite_io.op_name(model, op), op) for op in sg.operators]


def qdq_activation_qparams(model: onnx.ModelProto) -> dict[str, tuple[float, int]]:
    """Tensor → (scale, zero point) of the QuantizeLinear on it, read from the graph itself."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            out[n.input[0]] = (float(inits[n.input[1]]), int(inits[n.input[2]]))
    return out


def qdq_weight_scales(model: onnx.ModelProto) -> list[tuple[float, ...]]:
    """Per-channel scale vectors of the DequantizeLinear nodes on int8 weight initializers."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return sorted(
        tuple(np.round(inits[n.input[1]].astype(np.float64), 12))
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].dtype == np.int8
        and inits[n.input[1]].size > 1
    )


def tflite_weight_scales(art: TfliteArtifact) -> list[tuple[float, ...]]:
    """Per-channel scale vectors of the filters of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED."""
    _, sg, ops = ops_of(art)
    return sorted(
        tuple(np.round(np.asarray(sg.tensors[int(op.inputs[1])].quantization.scale, float), 12))
        for name, op in ops
        if name in WEIGHTED
    )


def output_scales(qdq: onnx.ModelProto) -> dict[str, float]:
    """Scale of the QuantizeLinear feeding each graph output's DequantizeLinear."""
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    dq = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    return {o.name: float(inits[dq[o.name].input[1]]) for o in qdq.graph.output}


def parity(qdq: OnnxArtifact, art: TfliteArtifact) -> dict[str, dict[str, float]]:
    """Per output over N_SAMPLES inputs: worst SQNR, max and p99 error in output-scale LSBs."""
    ort = OrtRunner(qdq.model, qdq.contract)
    lite = LiteRTRunner(art.data, art.contract, user_contract=qdq.contract)
    scales = output_scales(qdq.model)
    res: dict[str, dict[str, float]] = {}
    for seed in range(N_SAMPLES):
        feeds = random_feeds(qdq.contract, seed=100 + seed)
        ref, got = ort.run(feeds), lite.run(feeds)
        for name in ref:
            mx, p99 = lsb_error(ref[name], got[name], scales[name])
            r = res.setdefault(name, {"sqnr": 1e9, "max_lsb": 0.0, "p99_lsb": 0.0})
            r["sqnr"] = min(r["sqnr"], sqnr_db(ref[name], got[name]))
            r["max_lsb"] = max(r["max_lsb"], mx)
            r["p99_lsb"] = max(r["p99_lsb"], p99)
    return res


# ---- int8 structure -----------------------------------------------------------------------------
def test_weighted_ops_are_int8_with_int32_bias(int8: TfliteArtifact) -> None:
    model, sg, ops = ops_of(int8)
    weighted = [(name, op) for name, op in ops if name in WEIGHTED]
    assert len(weighted) == 7, Counter(name for name, _ in ops)
    for name, op in weighted:
        x, w, b = (sg.tensors[int(i)] for i in op.inputs)
        out = sg.tensors[int(op.outputs[0])]
        assert (x.type, w.type, b.type, out.type) == (9, 9, 2, 9), name
        wq, xq = w.quantization, x.quantization
        assert wq.quantizedDimension == FILTER_AXIS[name]
        assert len(wq.scale) == w.shape[FILTER_AXIS[name]] and not np.any(wq.zeroPoint)
        np.testing.assert_allclose(
            b.quantization.scale, np.float32(xq.scale[0]) * wq.scale, rtol=1e-6
        )
        q = tflite_io.buffer_array(model, w)
        assert q.min() >= -127 and q.max() <= 127


def test_no_float_weights_and_qdq_only_at_boundary(int8: TfliteArtifact) -> None:
    model, sg, ops = ops_of(int8)
    float_consts = [
        tflite_io.tensor_name(t)
        for t in sg.tensors
        if t.type == 0 and tflite_io.buffer_array(model, t) is not None
    ]
    assert float_consts == []
    quant_inputs = [int(op.inputs[0]) for name, op in ops if name == "QUANTIZE"]
    dequant_outputs = [int(op.outputs[0]) for name, op in ops if name == "DEQUANTIZE"]
    assert quant_inputs == [int(i) for i in sg.inputs]
    assert sorted(dequant_outputs) == sorted(int(o) for o in sg.outputs)
    assert int8.facts["float_ops"] == []
    assert int8.facts["qparams_source"] == "qdq"
    assert int8.facts["quantized_ops"] == len(ops) - len(quant_inputs) - len(dequant_outputs)
    # The head's Clip sat behind onnx2tf's NCHW transpose; it is folded into the conv.
    assert not {"RELU", "RELU6"} & {name for name, _ in ops}
    float_activations = [tflite_io.tensor_name(t) for t in sg.tensors if t.type == 0]
    assert sorted(float_activations) == sorted(["x", "logits", "probs"])


def test_activation_scales_equal_the_qdq_models(qdq8: OnnxArtifact, int8: TfliteArtifact) -> None:
    want = qdq_activation_qparams(qdq8.model)
    _, sg, _ = ops_of(int8)
    by_name = {tflite_io.tensor_name(t): t for t in sg.tensors}
    checked = 0
    for tfl_name, onnx_name in int8.facts["tensor_map"].items():
        q = by_name[tfl_name].quantization
        scale, zero = want[onnx_name]
        assert abs(q.scale[0] - scale) <= 1e-6 * scale, (tfl_name, q.scale[0], scale)
        assert q.zeroPoint[0] == zero, tfl_name
        checked += 1
    # Every quantized ONNX activation except the graph I/O ends up in the map (the I/O tensors
    # are float32 here, their int8 twins are named "<name>_int8").
    io_names = {"x", "logits", "probs"}
    mapped = set(int8.facts["tensor_map"].values())
    assert set(want) - io_names - {n + "_float" for n in io_names} <= mapped | set(
        int8.facts["unmatched_onnx"]
    )
    assert checked >= len(want) - 3
    for name in io_names:
        q = by_name[f"{name}_int8"].quantization
        src = want.get(name) or want[f"{name}_float"]
        assert abs(q.scale[0] - src[0]) <= 1e-6 * src[0] and q.zeroPoint[0] == src[1]


def test_weight_scales_equal_the_qdq_models(qdq8: OnnxArtifact, int8: TfliteArtifact) -> None:
    got = tflite_weight_scales(int8)
    want = qdq_weight_scales(qdq8.model)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_int8_matches_qdq_onnxruntime(qdq8: OnnxArtifact, int8: TfliteArtifact) -> None:
    res = parity(qdq8, int8)
    for name, r in res.items():
        assert r["max_lsb"] <= MAX_LSB, (name, r)
        assert r["p99_lsb"] <= P99_LSB, (name, r)
        assert r["sqnr"] >= tolerances.INT8_VS_QDQ_MIN_SQNR_DB, (name, r)


# ---- I/O types ----------------------------------------------------------------------------------
@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_integer_io(qdq8: OnnxArtifact, int8: TfliteArtifact, io_dtype: str) -> None:
    art = lower_int8(qdq8, io_dtype=io_dtype)
    _, sg, ops = ops_of(art)
    code = {"int8": 9, "uint8": 3}[io_dtype]
    assert [sg.tensors[int(i)].type for i in sg.inputs] == [code]
    assert [sg.tensors[int(i)].type for i in sg.outputs] == [code, code]
    assert [s.dtype for s in art.contract.inputs + art.contract.outputs] == [io_dtype] * 3
    names = Counter(name for name, _ in ops)
    assert names["DEQUANTIZE"] == 0
    assert names["QUANTIZE"] == (0 if io_dtype == "int8" else 3)  # uint8 ⇄ int8 requantize
    # Same integer model inside: real-valued outputs agree exactly with the float-I/O model.
    feeds = random_feeds(qdq8.contract, seed=7)
    a = LiteRTRunner(int8.data, int8.contract, user_contract=qdq8.contract).run(feeds)
    b = LiteRTRunner(art.data, art.contract, user_contract=qdq8.contract).run(feeds)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_bad_io_dtype_is_a_config_error(qdq8: OnnxArtifact) -> None:
    with pytest.raises(ConfigError, match="io_dtype"):
        lower_int8(qdq8, io_dtype="int16")


def test_modes_are_registered(qdq8: OnnxArtifact, int8: TfliteArtifact) -> None:
    art = lower(qdq8, mode="int8")
    assert art.mode == "int8" and art.data == int8.data


def test_nhwc(qdq8: OnnxArtifact) -> None:
    art = lower_int8(qdq8, nhwc=True)
    assert art.contract.inputs[0].shape == (1, 16, 16, 3)
    res = parity(qdq8, art)
    assert all(r["max_lsb"] <= MAX_LSB for r in res.values()), res


# ---- int16x8 ------------------------------------------------------------------------------------
def test_int16x8_structure(int16: TfliteArtifact) -> None:
    model, sg, ops = ops_of(int16)
    for name, op in ops:
        if name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        acts = [
            sg.tensors[int(t)]
            for t in (*op.inputs, *op.outputs)
            if t >= 0 and tflite_io.buffer_array(model, sg.tensors[int(t)]) is None
        ]
        assert all(t.type == 7 and t.quantization.zeroPoint[0] == 0 for t in acts), name
        if name in WEIGHTED:
            w, b = sg.tensors[int(op.inputs[1])], sg.tensors[int(op.inputs[2])]
            assert (w.type, b.type) == (9, 4), name
    assert int16.mode == "int16x8" and int16.facts["float_ops"] == []


def test_int16x8_matches_qdq_onnxruntime(qdq16: OnnxArtifact, int16: TfliteArtifact) -> None:
    for name, r in parity(qdq16, int16).items():
        assert r["sqnr"] >= tolerances.INT16X8_VS_QDQ_MIN_SQNR_DB, (name, r)
        assert r["max_lsb"] <= MAX_LSB, (name, r)
        assert r["p99_lsb"] <= P99_LSB, (name, r)


# ---- errors and fallbacks -----------------------------------------------------------------------
def _set_scale(model: onnx.ModelProto, tensor: str, scale: float) -> onnx.ModelProto:
    """A copy whose QuantizeLinear on `tensor` (and its DequantizeLinear) uses `scale`."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    q = next(n for n in out.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    init = next(i for i in out.graph.initializer if i.name == q.input[1])
    init.CopyFrom(numpy_helper.from_array(np.array(scale, np.float32), q.input[1]))
    return out


def test_a_broken_kernel_rule_is_an_error(qdq8: OnnxArtifact) -> None:
    sigmoid = next(n for n in qdq8.model.graph.node if n.op_type == "Sigmoid").output[0]
    broken = qdq8.evolve(model=_set_scale(qdq8.model, sigmoid, 0.01))
    with pytest.raises(LoweringError, match=r"LOGISTIC output .* requires 0.00390625"):
        lower_int8(broken)


class SinNet(nn.Module):
    """A conv, a sin (no integer kernel), a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.b(torch.sin(self.a(x))).mean((2, 3))
        return y, y * 2


def test_ops_without_integer_kernel_stay_float() -> None:
    art = export(SinNet(), out_features=8)
    qdq = quantize(art, QuantConfig(mode="int8"), calibration(art))
    tfl = lower_int8(qdq)
    _, sg, ops = ops_of(tfl)
    names = [name for name, _ in ops]
    i = names.index("SIN")
    assert names[i - 1] == "DEQUANTIZE" and names[i + 1] == "QUANTIZE"
    assert sg.tensors[int(ops[i][1].inputs[0])].type == 0
    assert [f["op"] for f in tfl.facts["float_ops"]] == ["SIN"]
    assert tfl.facts["float_ops"][0]["reason"]
    assert names.count("CONV_2D") == 2
    for r in parity(qdq, tfl).values():
        assert r["max_lsb"] <= MAX_LSB, r


# ---- QDQ models from ONNX Runtime's quantizer ---------------------------------------------------
def ort_qdq(artifact: OnnxArtifact, tmp_path: Path) -> onnx.ModelProto:
    """ONNX Runtime's quantize_static: QDQ, per-channel int8 weights, int8 activations."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.data = iter([{"x": s[0]} for s in calibration(artifact, 8)])

        def get_next(self) -> dict | None:
            return next(self.data, None)

    src, dst = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(artifact.model, src)
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return onnx.load(dst)


def make_tflite_legal(model: onnx.ModelProto) -> onnx.ModelProto:
    """Edit an ORT QDQ model's scales the way a TFLite-aware quantizer would have chosen them:
    Sigmoid/Softmax outputs (1/256, −128), Concat inputs on the Concat output's scale."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    dq_of = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}

    def put(name: str, value: float | int, dtype: type) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(np.array(value, dtype), name))

    for n in g.node:
        if n.op_type in ("Sigmoid", "Softmax"):
            q = readers[n.output[0]][0]
            put(q.input[1], 1 / 256, np.float32)
            put(q.input[2], -128, np.int8)
        if n.op_type == "Concat":
            q = readers[n.output[0]][0]
            for x in n.input:
                dq = dq_of[x]
                put(dq.input[1], float(numpy_helper.to_array(inits[q.input[1]])), np.float32)
                put(dq.input[2], int(numpy_helper.to_array(inits[q.input[2]])), np.int8)
    return out


def test_onnxruntime_qdq_rule_breaks_are_reported(float_net: OnnxArtifact, tmp_path: Path) -> None:
    model = ort_qdq(float_net, tmp_path)
    qdq = read_qdq(model)
    assert qdq.activation_dtype == "int8"
    assert not any(n.op_type.endswith("QuantizeLinear") for n in qdq.float_model.graph.node)
    # ORT gives Sigmoid its calibrated range and Softmax the scale 1/255, and lets Concat inputs
    # keep their own scales: all break TFLite's int8 kernels, and the error lists them.
    with pytest.raises(LoweringError) as err:
        lower_int8(float_net.evolve(model=model, stage="quantize"))
    assert all(op in str(err.value) for op in ("LOGISTIC", "SOFTMAX", "CONCATENATION"))


def test_onnxruntime_qdq_lowers_with_its_own_scales(
    float_net: OnnxArtifact, tmp_path: Path
) -> None:
    qdq = float_net.evolve(model=make_tflite_legal(ort_qdq(float_net, tmp_path)))
    art = lower_int8(qdq)
    want = qdq_activation_qparams(qdq.model)
    _, sg, _ = ops_of(art)
    by_name = {tflite_io.tensor_name(t): t for t in sg.tensors}
    for tfl_name, onnx_name in art.facts["tensor_map"].items():
        q = by_name[tfl_name].quantization
        assert abs(q.scale[0] - want[onnx_name][0]) <= 1e-6 * want[onnx_name][0], tfl_name
    got = tflite_weight_scales(art)
    for g, w in zip(got, qdq_weight_scales(qdq.model), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)
    for name, r in parity(qdq, art).items():
        assert r["max_lsb"] <= MAX_LSB, (name, r)


# ---- kernel quirks and graph clean-ups ----------------------------------------------------------
class MatMulNet(nn.Module):
    """Attention-like product of two activations: softmax(a) @ b."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.softmax(a, -1), b)


def matmul_qdq() -> OnnxArtifact:
    shapes = ((1, 2, 8, 8), (1, 2, 8, 4))
    buf = io.BytesIO()
    args = tuple(torch.randn(*s) for s in shapes)
    torch.onnx.export(
        MatMulNet(), args, buf, opset_version=17, dynamo=False,
        input_names=["a", "b"], output_names=["y"],
    )  # fmt: skip
    contract = IOContract(
        tuple(TensorSpec(n, s, "float32") for n, s in zip("ab", shapes, strict=True)),
        (TensorSpec("y", (1, 2, 8, 4), "float32"),),
    )
    art = OnnxArtifact(onnx.load_from_string(buf.getvalue()), contract, stage="passes")
    rng = np.random.default_rng(0)
    cal = [tuple((rng.standard_normal(s) + 1).astype(np.float32) for s in shapes) for _ in range(8)]
    return quantize(art, QuantConfig(mode="int8"), cal)


def test_batch_matmul_needs_a_symmetric_second_input() -> None:
    # XNNPACK's int8 BATCH_MATMUL ignores the second input's zero point (18 dB SQNR measured):
    # with an asymmetric `b` the op stays float, with a symmetric one it runs integer, exactly.
    # The quantizer makes `b` symmetric (rules: MatMul symmetric_inputs); the asymmetric case is
    # written by hand, as another quantizer's QDQ model could have it.
    sym = matmul_qdq()
    b_scale, b_zero = qdq_activation_qparams(sym.model)["b"]
    assert b_zero == 0
    asym = sym.evolve(model=_set_qparams(sym.model, "b", 2 * b_scale * 127 / 255, -64))
    art = lower_int8(asym)
    assert [f["op"] for f in art.facts["float_ops"]] == ["BATCH_MATMUL"]
    assert "zero point" in art.facts["float_ops"][0]["reason"]
    art = lower_int8(sym)
    assert art.facts["float_ops"] == []
    for r in parity(sym, art).values():
        assert r["max_lsb"] <= MAX_LSB, r


def _set_qparams(model: onnx.ModelProto, tensor: str, scale: float, zero: int) -> onnx.ModelProto:
    out = _set_scale(model, tensor, scale)
    q = next(n for n in out.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    init = next(i for i in out.graph.initializer if i.name == q.input[2])
    init.CopyFrom(numpy_helper.from_array(np.array(zero, np.int8), q.input[2]))
    return out


def test_transpose_before_a_global_mean_is_folded(float_net: OnnxArtifact) -> None:
    fp = lower_float(float_net)
    model = tflite_io.load(fp.data)
    graph = Graph(model)
    mean = next(op for op in graph.ops if graph.op_type(op) == "MEAN")
    src = int(mean.inputs[0])  # NHWC, reduced over (1, 2): make it NCHW reduced over (2, 3)
    nchw = [graph.tensor(src).shape[i] for i in (0, 3, 1, 2)]
    perm = graph.add_tensor("perm", [4], 2, data=np.array([0, 3, 1, 2], np.int32))
    moved = graph.add_tensor("nchw", nchw, 0, like=src)
    axes = graph.add_tensor("axes23", [2], 2, data=np.array([2, 3], np.int32))
    transpose = graph.new_op("TRANSPOSE", [src, perm], [moved], 1)
    graph.ops.insert(graph.ops.index(mean), transpose)
    mean.inputs = np.asarray([moved, axes], np.int32)
    graph.commit()
    with_transpose = tflite_io.save(model)
    graph = Graph(tflite_io.load(with_transpose))
    assert fuse.fold_transposes_into_reductions(graph, {id(op) for op in graph.ops}) == 1
    mean = next(op for op in graph.ops if graph.op_type(op) == "MEAN")
    assert graph.constant(int(mean.inputs[1])).tolist() == [1, 2]
    assert "TRANSPOSE" not in {graph.op_type(op) for op in graph.ops[1:]}
    graph.commit()
    feeds = random_feeds(float_net.contract, seed=3)
    a = LiteRTRunner(with_transpose, fp.contract).run(feeds)
    b = LiteRTRunner(tflite_io.save(graph.model), fp.contract).run(feeds)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)
