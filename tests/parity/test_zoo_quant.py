"""zoo × {int8, dynamic, int16x8}: parity floors, the I/O contract, and the integer structure
of the .tflite file (tensor types and our scales)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bridge
import models
from bridge.runtime import tflite_io, tolerances
from bridge.verify.structure import audit_integer
from tests.parity.conftest import check_floors, zoo_params

#: 3 of these are held out for verification (see bridge.api._keep_some), 13 calibrate.
CALIBRATION_SAMPLES = 16
CNNS = [
    "digits_cnn",
    "kws_conv1d",
    "unet_small",
    "multi_io",
    "mobilenet_v2",
    "resnet18",
    "efficientnet_lite0",
    "mobilenet_v3_small",
]
#: Sequence and attention models: they convert, with the ops that have no int8 kernel (or a
#: wrong one in LiteRT) left in float and listed.
WITH_FLOAT_FALLBACKS = ["lstm_classifier", "transformer_encoder", "vit_tiny"]


def calibration(name: str) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(1234)
    entry = models.info(name)
    return [
        tuple(rng.standard_normal(s.concrete_shape()).astype(np.float32) for s in entry.inputs)
        for _ in range(CALIBRATION_SAMPLES)
    ]


def convert(name: str, mode: str, out: Path, **extra: object) -> bridge.Conversion:
    model, inputs = models.get(name)
    calib = calibration(name) if mode in ("int8", "int16x8") else None
    return bridge.convert(
        model,
        inputs,
        out,
        quantize=mode,
        calibration=calib,
        **models.convert_options(name),
        **extra,
    )


def tensor_types(path: Path) -> dict[str, int]:
    model = tflite_io.load(path.read_bytes())
    return {tflite_io.tensor_name(t): t.type for t in model.subgraphs[0].tensors}


#: Known failures, strict: they must fail until fixed.
KNOWN_INT8: dict[str, str] = {}


@pytest.mark.parametrize(
    "name", zoo_params(pytest, CNNS + WITH_FLOAT_FALLBACKS, known_failures=KNOWN_INT8)
)
def test_int8(name: str, tmp_path: Path) -> None:
    result = convert(name, "int8", tmp_path / name)
    report = result.report
    check_floors(report)
    audit = audit_integer(result.tflite_path.read_bytes(), report)
    assert audit["problems"] == [], audit["problems"][:10]
    assert audit["scales_checked"] > 0
    weighted = sum(
        audit["ops"].get(k, 0)
        for k in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
    )
    floats = sum(v for k, v in audit["ops"].items() if k.startswith("float_"))
    if name in CNNS:
        assert floats == 0, audit["ops"]
        assert report["lowering"]["float_ops"] == [] or name in ("mobilenet_v3_small",)
    assert weighted - floats > 0
    lsb = report["parity"]["qdq_vs_tflite"]
    for out, c in lsb.items():
        assert c["lsb_p99"] is not None and c["lsb_p99"] <= tolerances.INT8_MAX_LSB_P99, out
    # the I/O contract: float32 in and out, same names and shapes as torch.
    types = tensor_types(result.tflite_path)
    for spec in models.info(name).inputs + models.info(name).outputs:
        assert types[spec.name] == 0, spec.name


def test_int8_io(tmp_path: Path) -> None:
    result = convert("digits_cnn", "int8", tmp_path / "d", io_dtype="int8")
    check_floors(result.report)
    types = tensor_types(result.tflite_path)
    assert types["image"] == 9 and types["logits"] == 9
    assert audit_integer(result.tflite_path.read_bytes(), result.report)["problems"] == []


@pytest.mark.parametrize("name", zoo_params(pytest, CNNS))
def test_dynamic(name: str, tmp_path: Path) -> None:
    result = convert(name, "dynamic", tmp_path / name)
    check_floors(result.report)
    model = tflite_io.load(result.tflite_path.read_bytes())
    sg = model.subgraphs[0]
    weights = [
        sg.tensors[int(op.inputs[1])]
        for op in sg.operators
        if tflite_io.op_name(model, op) in ("CONV_2D", "FULLY_CONNECTED")
    ]
    assert weights and all(w.type == 9 for w in weights)
    assert all(len(w.quantization.scale) >= 1 for w in weights)
    for spec in models.info(name).inputs + models.info(name).outputs:
        assert tensor_types(result.tflite_path)[spec.name] == 0


@pytest.mark.parametrize("name", zoo_params(pytest, ["digits_cnn", "kws_conv1d", "mobilenet_v2"]))
def test_int16x8(name: str, tmp_path: Path) -> None:
    result = convert(name, "int16x8", tmp_path / name)
    check_floors(result.report)
    audit = audit_integer(result.tflite_path.read_bytes(), result.report)
    assert audit["problems"] == [], audit["problems"][:10]
    model = tflite_io.load(result.tflite_path.read_bytes())
    sg = model.subgraphs[0]
    for op in sg.operators:
        if tflite_io.op_name(model, op) == "CONV_2D":
            x, w = (sg.tensors[int(op.inputs[i])] for i in (0, 1))
            assert (x.type, w.type) == (7, 9)
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                assert sg.tensors[int(op.inputs[2])].type == 4  # int64 bias
