"""Per-layer localization on a transformer: the clean model binds its torch modules and shows no
divergence; faults planted in one Linear (in the .tflite, in torch) and an attention-mask-like
quantization range are each named at their own layer and blamed on the right stage."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import bridge
import models
from bridge.export import ExportConfig, export
from bridge.lower.integer import lower_int8
from bridge.passes import run_passes
from bridge.quantize import OBSERVERS, QuantConfig, quantize
from bridge.quantize.observers import MinMaxObserver
from bridge.runtime import tflite_io, tolerances
from bridge.runtime.feeds import random_feeds
from bridge.verify.localize import localize_conversion, localize_dir

MODEL = "transformer_encoder"
#: Every nn.Linear and nn.LayerNorm of the model, by the ONNX scope of its output.
LINEARS = ("attn/qkv", "attn/proj", "mlp/mlp.0", "mlp/mlp.2")
NORMS = ("norm1", "norm2")
#: The Linear whose weights are corrupted, and the one broken in torch.
TFLITE_FAULT = "/blocks/blocks.1/mlp/mlp.0/MatMul"
TORCH_FAULT = "blocks.1.attn.proj"
#: An additive attention mask's padding bias (BERT's): a range stretched down to it leaves the
#: real values one int8 step of ~40 wide, so they all round to zero.
MASK_BIAS = -10000.0
MASK_OBSERVER = "test_mask_range"
#: The attention tensor given the mask-like range: queries scaled by 1/sqrt(d) in block 1.
MASKED = "/blocks/blocks.1/attn/Mul_output_0"


class _MaskRange(MinMaxObserver):
    name = MASK_OBSERVER

    def _range(self, dtype: str, symmetric: bool) -> tuple[float, float]:
        _, hi = super()._range(dtype, symmetric)
        return MASK_BIAS, hi


@pytest.fixture(scope="module")
def transformer() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    return models.get(MODEL)


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory, transformer) -> Path:
    out = tmp_path_factory.mktemp("transformer") / "fp32"
    model, inputs = transformer
    bridge.convert(model, inputs, out, **models.convert_options(MODEL))
    return out


@pytest.fixture(scope="module")
def int8_parts(transformer):
    model, inputs = transformer
    exported = export(model, inputs, ExportConfig())
    optimised = run_passes(exported, None)
    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal(tuple(inputs[0].shape)).astype(np.float32),) for _ in range(8)]
    qdq = quantize(optimised, QuantConfig(mode="int8"), calib)
    feeds = [random_feeds(optimised.contract, seed=s) for s in range(3)]
    return exported, optimised, qdq, lower_int8(qdq), calib, feeds


def corrupt_weights(data: bytes, tflite_tensor: str) -> bytes:
    """Negate the constant weights (input 1) of the .tflite operator writing `tflite_tensor`."""
    model = tflite_io.load(data)
    sg = model.subgraphs[0]
    index = next(i for i, t in enumerate(sg.tensors) if tflite_io.tensor_name(t) == tflite_tensor)
    op = next(op for op in sg.operators if index in list(op.outputs))
    weight = sg.tensors[op.inputs[1]]
    values = tflite_io.buffer_array(model, weight)
    assert values is not None and values.size, "input 1 must be a constant weight"
    model.buffers[weight.buffer].data = np.frombuffer((-values).tobytes(), np.uint8)
    return tflite_io.save(model)


def _torch_rows(layers) -> dict[str, float]:
    return {
        r["tensor"]: r["metrics"]["torch_vs_ort"]["sqnr_db"]
        for r in layers["rows"]
        if "torch_vs_ort" in r["metrics"]
    }


def test_clean_transformer_binds_every_linear_and_norm(fp32_dir: Path, transformer) -> None:
    layers = localize_dir(fp32_dir, module=transformer[0])
    assert layers["first_divergence"] is None, layers["first_divergence"]
    torch_rows = _torch_rows(layers)
    wanted = [
        f"/blocks/blocks.{b}/{m}/{op}_output_0"
        for b in range(2)
        for m, op in [*((s, "Add") for s in LINEARS), *((s, "LayerNormalization") for s in NORMS)]
    ]
    assert set(wanted) <= set(torch_rows), sorted(set(wanted) - set(torch_rows))
    floor = tolerances.floor("fp32", "torch_vs_ort")
    assert min(torch_rows.values()) >= floor, torch_rows
    assert layers["torch_modules"]["unbound"] == {}, layers["torch_modules"]
    # the .tflite holds every tensor but the inside of each GELU, which it computes in one op
    missing = [r["tensor"] for r in layers["rows"] if "ort_vs_tflite" not in r["metrics"]]
    assert missing and all("/mlp/mlp.1/" in t and "Mul_1" not in t for t in missing), missing


def test_corrupt_linear_in_tflite_is_named_as_conversion_error(fp32_dir: Path, tmp_path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(fp32_dir, bad)
    path = bad / "model.tflite"
    path.write_bytes(corrupt_weights(path.read_bytes(), f"{TFLITE_FAULT}_output_0"))

    layers = localize_dir(bad)
    found = layers["first_divergence"]
    assert found is not None
    assert (found["layer"], found["kind"], found["pair"]) == (
        TFLITE_FAULT,
        "conversion",
        "ort_vs_tflite",
    ), found
    assert found["sqnr_db"] < tolerances.floor("fp32", "ort_vs_tflite")
    before = [r for r in layers["rows"] if r["index"] < found["index"]]
    assert len(before) >= 40 and all(
        r["metrics"]["ort_vs_tflite"]["sqnr_db"] >= found["floor"]
        for r in before
        if "ort_vs_tflite" in r["metrics"]
    )


def test_broken_torch_linear_is_an_export_error_at_that_linear(int8_parts, transformer) -> None:
    exported, optimised, qdq, low, _, feeds = int8_parts
    broken = copy.deepcopy(transformer[0])
    with torch.no_grad():
        broken.get_submodule(TORCH_FAULT).weight.mul_(-1.0)
    layers = localize_conversion(broken, exported, optimised, qdq, low, feeds)
    found = layers["first_divergence"]
    assert found is not None
    assert (found["layer"], found["kind"]) == ("/blocks/blocks.1/attn/proj/MatMul", "export"), found
    assert found["tensor"] == "/blocks/blocks.1/attn/proj/Add_output_0"
    # every torch value before it agrees: the blocks before, and this block's qkv
    torch_rows = _torch_rows(layers)
    assert torch_rows["/blocks/blocks.1/attn/qkv/Add_output_0"] >= found["floor"]
    assert found["sqnr_db"] < found["floor"]


def test_mask_like_range_is_a_quantization_error_at_that_tensor(int8_parts, transformer) -> None:
    exported, optimised, clean, _, calib, feeds = int8_parts
    if MASK_OBSERVER not in OBSERVERS:
        OBSERVERS.register(MASK_OBSERVER)(_MaskRange)
    facts = clean.facts["quantization"]["tensors"]
    assert facts[MASKED]["kind"] == "activation" and not facts[MASKED].get("shares_scale_with")
    config = QuantConfig(mode="int8", per_tensor_overrides={MASKED: MASK_OBSERVER})
    bad_qdq = quantize(optimised, config, calib)
    layers = localize_conversion(
        transformer[0], exported, optimised, bad_qdq, lower_int8(bad_qdq), feeds
    )
    found = layers["first_divergence"]
    assert found is not None
    assert (found["tensor"], found["kind"], found["pair"]) == (
        MASKED,
        "quantization",
        "ort_vs_qdq",
    ), found
    assert found["quantization"]["range"][0] <= MASK_BIAS, found["quantization"]
    assert "Quantization error" in found["explanation"]
    # the clean model's same tensor meets the floor
    clean_layers = localize_conversion(None, exported, optimised, clean, lower_int8(clean), feeds)
    assert clean_layers["first_divergence"] is None, clean_layers["first_divergence"]
    row = next(r for r in clean_layers["rows"] if r["tensor"] == MASKED)
    assert row["metrics"]["ort_vs_qdq"]["sqnr_db"] >= found["floor"]


def test_onnx_names_match_the_model(int8_parts) -> None:
    """The scopes named above exist in the exported graph (guards the test's own constants)."""
    names = {n.name for n in int8_parts[1].model.graph.node}
    assert TFLITE_FAULT in names and "/blocks/blocks.1/attn/proj/MatMul" in names
    assert any(o == MASKED for n in int8_parts[1].model.graph.node for o in n.output)
    assert isinstance(int8_parts[1].model, onnx.ModelProto)
