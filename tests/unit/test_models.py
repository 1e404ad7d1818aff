"""The model zoo: declared shapes, determinism, randomised norms, the registry, ONNX export."""

from __future__ import annotations

import functools
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import models
from bridge.errors import ConfigError
from bridge.runtime.metrics import compare
from bridge.runtime.tolerances import floor
from models.efficientnet_lite import SameConvBNAct, same_pads

REQUIRED = {
    "mobilenet_v2",
    "resnet18",
    "efficientnet_lite0",
    "mobilenet_v3_small",
    "vit_tiny",
    "kws_conv1d",
    "lstm_classifier",
    "unet_small",
    "multi_io",
    "digits_cnn",
    "transformer_encoder",
}
SMALL = models.names("small")
LARGE = [n for n in models.names() if n not in SMALL]
#: Random-weight outputs must not collapse to a constant (vanishing activations), or parity and
#: quantization tests on them would pass trivially. The zoo's smallest logits std is about 0.04.
MIN_OUTPUT_STD = 1e-3


@functools.cache
def built(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """One build and forward per model for the whole module (the 224 nets are not free)."""
    model, inputs = models.get(name)
    with torch.no_grad():
        out = model(*inputs)
    return model, inputs, out if isinstance(out, tuple) else (out,)


def export_and_run(name: str) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    """Export `name` exactly as the pipeline does and run the ONNX in ONNX Runtime."""
    entry = models.info(name)
    model, inputs, _ = built(name)
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        inputs,
        buf,
        input_names=entry.input_names,
        output_names=entry.output_names,
        opset_version=17,
        dynamo=False,
    )
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    feeds = {n: t.numpy() for n, t in zip(entry.input_names, inputs, strict=True)}
    return onnx.load_from_string(buf.getvalue()), sess.run(entry.output_names, feeds)


def assert_ort_matches_torch(name: str, onnx_outs: list[np.ndarray]) -> None:
    entry = models.info(name)
    _, _, torch_outs = built(name)
    for spec, ref, got in zip(entry.outputs, torch_outs, onnx_outs, strict=True):
        c = compare(
            ref.numpy(),
            got,
            output=spec.name,
            pair=("torch", "ort"),
            min_sqnr_db=floor("fp32", "torch_vs_ort"),
        )
        assert c.passed, c.to_dict()


def test_zoo_has_every_required_model() -> None:
    assert set(models.names()) == REQUIRED


@pytest.mark.parametrize("name", models.names())
def test_forward_matches_declared_io(name: str) -> None:
    entry = models.info(name)
    model, inputs, outs = built(name)
    assert not model.training
    assert [tuple(t.shape) for t in inputs] == [s.shape for s in entry.inputs]
    assert [tuple(t.shape) for t in outs] == [s.shape for s in entry.outputs]
    for t in (*inputs, *outs, *model.parameters()):
        assert t.dtype == torch.float32
    for t in outs:
        assert torch.isfinite(t).all()
        assert t.std() > MIN_OUTPUT_STD, (
            f"{name}: outputs nearly constant, random init is degenerate"
        )


@pytest.mark.parametrize("name", models.names())
def test_get_is_deterministic_and_leaves_global_rng_alone(name: str) -> None:
    model, inputs, _ = built(name)
    state = torch.get_rng_state()
    again, inputs_again = models.get(name)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(inputs, inputs_again, strict=True):
        assert torch.equal(a, b)
    sd, sd_again = model.state_dict(), again.state_dict()
    assert sd.keys() == sd_again.keys()
    for key, value in sd.items():
        assert torch.equal(value, sd_again[key]), key


def test_different_models_get_different_inputs() -> None:
    _, (a,), _ = built("mobilenet_v2")
    _, (b,), _ = built("resnet18")
    assert not torch.equal(a, b)


@pytest.mark.parametrize("name", SMALL)
def test_small_model_outputs_are_reproducible(name: str) -> None:
    _, _, outs = built(name)
    model, inputs = models.get(name)
    with torch.no_grad():
        again = model(*inputs)
    for a, b in zip(outs, again if isinstance(again, tuple) else (again,), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", models.names())
def test_norm_layers_are_randomised(name: str) -> None:
    model, _, _ = built(name)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    norms += [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    if name == "lstm_classifier":
        assert not norms
        return
    assert norms, f"{name} has no norm layers"
    for m in norms:
        assert not torch.allclose(m.weight, torch.ones_like(m.weight))
        assert not torch.allclose(m.bias, torch.zeros_like(m.bias))
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert not torch.allclose(m.running_var, torch.ones_like(m.running_var))
            assert not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean))
            assert (m.running_var >= 0.5).all() and (m.running_var <= 2.0).all()


def test_names_filters_by_tag() -> None:
    small = models.names("small")
    assert set(small) < set(models.names())
    assert "resnet18" not in small and "digits_cnn" in small
    assert all("small" in models.info(n).tags for n in small)
    assert set(models.names("sequence")) == {"lstm_classifier", "transformer_encoder"}
    assert models.names("multi_io") == ["multi_io"]
    assert models.names("no-such-tag") == []


def test_unknown_name_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="no_such_model"):
        models.get("no_such_model")
    with pytest.raises(ConfigError, match="resnet18"):  # the message lists the known names
        models.info("no_such_model")


def test_multi_io_name_order_differs_from_declared_order() -> None:
    entry = models.info("multi_io")
    assert entry.input_names == ["image", "context"]
    assert entry.output_names == ["logits", "embedding"]
    assert sorted(entry.input_names) != entry.input_names
    assert sorted(entry.output_names) != entry.output_names


def test_sequence_inputs_are_not_channel_first() -> None:
    for name in ("lstm_classifier", "transformer_encoder"):
        assert [s.layout for s in models.info(name).inputs] == ["plain"]
    assert models.info("kws_conv1d").inputs[0].layout == "NCW"


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [
        (224, 3, 2, (0, 1)),
        (224, 5, 2, (1, 2)),
        (113, 3, 2, (1, 1)),
        (7, 3, 2, (1, 1)),
        (8, 1, 2, (0, 0)),
    ],
)
def test_same_pads_match_tensorflow(size: int, kernel: int, stride: int, pads: tuple) -> None:
    assert same_pads(size, kernel, stride) == pads


def test_same_conv_exports_an_asymmetric_pad() -> None:
    conv = SameConvBNAct(4, 4, 3, 2, size=16).eval()
    x = torch.randn(1, 4, 16, 16)
    buf = io.BytesIO()
    torch.onnx.export(conv, (x,), buf, opset_version=17, dynamo=False)
    ops = [n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node]
    assert "Pad" in ops
    assert conv(x).shape == (1, 4, 8, 8)


@pytest.mark.parametrize("name", SMALL)
def test_small_model_exports_and_matches_in_ort(name: str) -> None:
    proto, outs = export_and_run(name)
    assert [i.name for i in proto.graph.input] == models.info(name).input_names
    assert_ort_matches_torch(name, outs)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_large_model_exports_and_matches_in_ort(name: str) -> None:
    proto, outs = export_and_run(name)
    if name == "efficientnet_lite0":
        assert any(n.op_type == "Pad" for n in proto.graph.node)
    assert_ort_matches_torch(name, outs)
