"""int16x8 biases are int64 at scale s_in·s_w: a bias far past int32 converts without clipping.

TFLite's 16x8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV take int64 biases.
ONNX's DequantizeLinear has no int64 input, so the QDQ model holds such a bias as float32 on
the s_in·s_w grid, and the lowering writes the int64 integers. int8 keeps int32 biases.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.lower.integer import lower_int8, lower_int16x8
from bridge.quantize import QuantConfig, quantize
from bridge.quantize.calibrate import calibrate
from bridge.quantize.qdq import quantize_model
from bridge.runtime import tflite_io
from bridge.runtime.metrics import lsb_error, sqnr_db
from bridge.runtime.runners import LiteRTRunner, OrtRunner
from bridge.runtime.tolerances import floor

SHAPE = (1, 3, 8, 8)
#: Inputs and weights of ~1e-3 give s_in·s_w ≈ 1e-13 (conv) and ≈ 1e-10 (fc): biases of ~1
#: are ~1e13 and ~1e10 steps, far past int32's 2.1e9.
TINY = 1e-3
CONV_BIAS = (0.75, -0.5, 1.25, 1e-5)  # the last fits int32, the others do not
FC_BIAS = (1.0, -2.0, 0.5)
#: Calibration samples: 32 or more run the cross-fit check, which builds two fold QDQ models.
SAMPLES = 32
#: A stored int64 bias times its scale may miss the float bias by float32 rounding of the
#: scale (s_in·s_w is a float32 product) and half a step: far below this.
BIAS_RTOL = 1e-6
#: TFLite and ONNX Runtime compute one integer model; a rounding tie flips one step (as in
#: test_integer.MAX_LSB).
MAX_LSB = 2.0
BIAS_OPS = {"CONV_2D": ("conv.bias", 2), "FULLY_CONNECTED": ("fc.bias", 2)}
INT32_MAX = np.iinfo(np.int32).max
TYPE_INT32, TYPE_INT64 = 2, 4


class BigBias(nn.Module):
    """conv → ReLU → mean → linear, with tiny weights and biases of order 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv.weight.uniform_(-TINY, TINY)
            self.fc.weight.uniform_(-TINY, TINY)
            self.conv.bias.copy_(torch.tensor(CONV_BIAS))
            self.fc.bias.copy_(torch.tensor(FC_BIAS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def samples(n: int, seed: int) -> list[tuple[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [((TINY * rng.standard_normal(SHAPE)).astype(np.float32),) for _ in range(n)]


@pytest.fixture(scope="module")
def torch_net() -> BigBias:
    torch.manual_seed(0)
    return BigBias().eval()


@pytest.fixture(scope="module")
def float_art(torch_net: BigBias) -> OnnxArtifact:
    buf = io.BytesIO()
    torch.onnx.export(
        torch_net,
        (torch.from_numpy(samples(1, 0)[0][0]),),
        buf,
        input_names=["x"],
        output_names=["y"],
        opset_version=17,
        dynamo=False,
    )
    contract = IOContract(
        (TensorSpec("x", SHAPE, "float32", "NCHW"),), (TensorSpec("y", (1, 3), "float32"),)
    )
    return OnnxArtifact(onnx.load_from_string(buf.getvalue()), contract, stage="passes")


@pytest.fixture(scope="module")
def qdq16(float_art: OnnxArtifact) -> OnnxArtifact:
    # no bias correction, so that the stored biases are exactly the torch ones, rounded
    config = QuantConfig(mode="int16x8", bias_correction=False)
    return quantize(float_art, config, samples(SAMPLES, 1))


@pytest.fixture(scope="module")
def tfl16(qdq16: OnnxArtifact) -> TfliteArtifact:
    return lower_int16x8(qdq16)


def tflite_biases(art: TfliteArtifact) -> dict[str, tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """TFLite op → (bias type, bias integers, bias scale, s_in·s_w) for the ops in BIAS_OPS."""
    model = tflite_io.load(art.data)
    sg = model.subgraphs[0]
    out = {}
    for op in sg.operators:
        name = tflite_io.op_name(model, op)
        if name not in BIAS_OPS:
            continue
        x, w, b = (sg.tensors[int(op.inputs[i])] for i in (0, 1, BIAS_OPS[name][1]))
        s_in = np.float32(x.quantization.scale[0])
        s_w = np.asarray(w.quantization.scale, np.float32)
        scale = np.asarray(b.quantization.scale, np.float64)
        q = tflite_io.buffer_array(model, b)
        out[name] = (b.type, q, scale, (s_in * s_w).astype(np.float64))
    return out


def test_tflite_biases_are_int64_at_input_times_weight_scale(
    torch_net: BigBias, tfl16: TfliteArtifact
) -> None:
    biases = tflite_biases(tfl16)
    assert biases.keys() == BIAS_OPS.keys(), biases.keys()
    for op, (ty, q, scale, s_in_w) in biases.items():
        assert ty == TYPE_INT64 and q.dtype == np.int64, (op, ty)
        assert np.abs(scale / s_in_w - 1.0).max() <= BIAS_RTOL, (op, scale, s_in_w)
        assert np.abs(q).max() > INT32_MAX, (op, q)  # the case under test: past int32
        want = torch_net.get_parameter(BIAS_OPS[op][0]).detach().numpy().astype(np.float64)
        rel = np.abs(q * scale - want) / np.abs(want)
        assert rel.max() <= BIAS_RTOL, (op, rel)


def test_qdq_bias_is_float_on_the_grid(qdq16: OnnxArtifact) -> None:
    facts = qdq16.facts["quantization"]
    assert facts["bias_dtype"] == "int64"
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in qdq16.model.graph.initializer}
    biases = {k: f for k, f in facts["tensors"].items() if f["kind"] == "bias"}
    assert set(biases) == {"conv.bias", "fc.bias"}, set(biases)
    for name, fact in biases.items():
        stored = inits[fact["q"]]
        assert fact["dtype"] == "int64" and stored.dtype == np.float32, (name, stored.dtype)
        steps = stored.astype(np.float64) / np.asarray(fact["scale"], np.float64)
        assert np.abs(steps).max() > INT32_MAX, name
        # on the grid up to float32 rounding of q·s (relative 2^-24)
        off = np.abs(steps - np.rint(steps))
        assert np.all(off <= np.maximum(0.5 * 2.0**-23 * np.abs(steps), 1e-3)), (name, off)


def test_parity_torch_qdq_tflite(
    torch_net: BigBias, qdq16: OnnxArtifact, tfl16: TfliteArtifact
) -> None:
    ort = OrtRunner(qdq16.model, qdq16.contract)
    lite = LiteRTRunner(tfl16.data, tfl16.contract, user_contract=qdq16.contract)
    out_scale = qdq16.facts["quantization"]["tensors"]["y"]["scale"][0]
    ref, q, t = [], [], []
    for (x,) in samples(8, 2):
        with torch.no_grad():
            ref.append(torch_net(torch.from_numpy(x)).numpy())
        q.append(ort.run({"x": x})["y"])
        t.append(lite.run({"x": x})["y"])
    ref, q, t = np.concatenate(ref), np.concatenate(q), np.concatenate(t)
    assert sqnr_db(ref, q) >= floor("int16x8", "torch_vs_qdq"), sqnr_db(ref, q)
    assert sqnr_db(q, t) >= floor("int16x8", "qdq_vs_tflite"), sqnr_db(q, t)
    assert sqnr_db(ref, t) >= floor("int16x8", "torch_vs_tflite"), sqnr_db(ref, t)
    assert lsb_error(q, t, out_scale)[0] <= MAX_LSB, lsb_error(q, t, out_scale)


def test_bias_correction_moves_float_biases_on_the_grid(
    qdq16: OnnxArtifact, float_art: OnnxArtifact, caplog: pytest.LogCaptureFixture
) -> None:
    """With bias correction (the default), float-stored biases move by whole steps; nothing
    warns of an overflow, though the cross-fit check builds two more QDQ models."""
    with caplog.at_level(logging.WARNING, logger="bridge.quantize"):
        fixed = quantize(float_art, QuantConfig(mode="int16x8"), samples(SAMPLES, 1))
    assert not [r for r in caplog.records if "overflows" in r.getMessage()], caplog.text
    facts = fixed.facts["quantization"]
    assert facts["bias_correction"]["layers"] == 2, facts["bias_correction"]
    before, after = qdq_biases(qdq16), qdq_biases(fixed)
    assert before.keys() == after.keys() == {"conv.bias", "fc.bias"}
    for name, (value, scale) in after.items():
        assert value.dtype == np.float32
        moved = (value.astype(np.float64) - before[name][0]) / scale
        assert np.any(moved != 0.0), name
        assert np.allclose(moved, np.rint(moved), atol=1e-3 + 2.0**-23 * np.abs(value) / scale), (
            name
        )


def qdq_biases(qdq: OnnxArtifact) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Bias name → (its initializer in the QDQ model, its scale)."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in qdq.model.graph.initializer}
    tensors = qdq.facts["quantization"]["tensors"]
    return {
        k: (inits[f["q"]], np.asarray(f["scale"], np.float64))
        for k, f in tensors.items()
        if f["kind"] == "bias"
    }


def test_fold_models_keep_the_float_biases(float_art: OnnxArtifact) -> None:
    """The cross-fit check's fold models (`float_weights=True`) read the float biases directly,
    while their activations are quantized."""
    config = QuantConfig(mode="int16x8", bias_correction=False)
    observers = calibrate(float_art, samples(SAMPLES, 1), config, crossfit=False)
    model = quantize_model(float_art, observers, config, float_weights=True).model
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    readers = {i: n.op_type for n in model.graph.node for i in n.input}
    assert "QuantizeLinear" in readers.values()
    for name, want, op in (("conv.bias", CONV_BIAS, "Conv"), ("fc.bias", FC_BIAS, "Gemm")):
        assert readers[name] == op, name
        np.testing.assert_array_equal(inits[name], np.asarray(want, np.float32), err_msg=name)


def test_int8_keeps_int32_biases_and_warns_once_per_bias(
    float_art: OnnxArtifact, caplog: pytest.LogCaptureFixture
) -> None:
    """int8 biases stay int32: the conv's is clipped (s_in·s_w ≈ 1e-11) and said so once,
    though the cross-fit check builds two more QDQ models; the fc's fits (s_in ≈ 1/255)."""
    with caplog.at_level(logging.WARNING, logger="bridge.quantize"):
        qdq = quantize(float_art, QuantConfig(mode="int8"), samples(SAMPLES, 1))
    warned = [r.getMessage() for r in caplog.records if "overflows" in r.getMessage()]
    assert len(warned) == 1 and "conv.bias overflows int32" in warned[0], warned
    facts = qdq.facts["quantization"]
    assert facts["bias_dtype"] == "int32"
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in qdq.model.graph.initializer}
    for fact in facts["tensors"].values():
        if fact["kind"] == "bias":
            assert fact["dtype"] == "int32" and inits[fact["q"]].dtype == np.int32
    for op, (ty, q, _, _) in tflite_biases(lower_int8(qdq)).items():
        assert ty == TYPE_INT32 and q.dtype == np.int32, (op, ty)
