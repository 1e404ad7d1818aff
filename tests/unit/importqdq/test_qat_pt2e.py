"""convert_qat on a PT2E QAT model (torch.export → torchao's prepare_qat_pt2e with the XNNPACK
quantizer → a few training steps on Fashion-MNIST): int8 .tflite with the fake-quant modules'
scales, verified against the fake-quant model in output steps; configs TFLite cannot run
exactly are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bridge.errors import ConfigError, QdqRuleError
from bridge.importqdq.qat import PAIR, convert_qat
from bridge.runtime import tolerances
from models.real import assets
from tests.unit.importqdq.test_qat import TinyCnn, _synthetic

pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")


def _config(**kwargs):
    from torchao.testing.pt2e._xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    cfg = get_symmetric_quantization_config(is_per_channel=True, is_qat=True, **kwargs)
    return XNNPACKQuantizer().set_global(cfg)


def _pt2e(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int, **cfg) -> nn.Module:
    """model exported (dynamic batch), prepared for PT2E QAT and trained `steps` Adam steps."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    torch.manual_seed(0)
    batch = torch.export.Dim("batch")
    ep = torch.export.export(
        model.train(), (torch.from_numpy(x[:2]),), dynamic_shapes=({0: batch},)
    )
    prepared = prepare_qat_pt2e(ep.module(), _config(**cfg))
    opt = torch.optim.Adam(prepared.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = nn.functional.cross_entropy(
            prepared(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return prepared


def _learned(model: nn.Module) -> tuple[set, list[np.ndarray]]:
    """(activation (scale, zero point) set, per-channel weight scales) of the fake-quant modules."""
    from torchao.quantization.pt2e import FakeQuantizeBase

    fqs = [m for m in model.modules() if isinstance(m, FakeQuantizeBase)]
    weights = [m.scale.numpy().astype(np.float32) for m in fqs if m.scale.numel() > 1]
    acts = {(float(m.scale), int(m.zero_point)) for m in fqs if m.scale.numel() == 1}
    return acts, weights


def _check(model: nn.Module, x: np.ndarray, out: Path, *, layers: int) -> dict:
    result = convert_qat(
        model,
        (torch.from_numpy(x[:1]),),
        out,
        input_names=["image"],
        output_names=["logits"],
        calibration=[(x[i : i + 1],) for i in range(1, 9)],
    )
    report = result.report
    assert report["passed"], report["failures"]
    for pair in ("qdq_vs_tflite", PAIR):
        entry = report["parity"][pair]["logits"]
        assert entry["lsb_p99"] <= tolerances.INT8_MAX_LSB_P99, (pair, entry)
        assert entry["samples"] == 4
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(result.tflite_path)).get_tensor_details()
    q = [(d, d["quantization_parameters"]) for d in details]
    q = [(d, p) for d, p in q if len(p["scales"])]
    tfl_acts = {
        (float(p["scales"][0]), int(p["zero_points"][0]))
        for d, p in q
        if d["dtype"] == np.int8 and len(p["scales"]) == 1
    }
    acts, weights = _learned(model)
    assert tfl_acts == {(float(np.float32(s)), z) for s, z in acts}, (tfl_acts, acts)
    per_channel = [
        (d["dtype"], p["scales"].astype(np.float32)) for d, p in q if len(p["scales"]) > 1
    ]
    assert {t for t, _ in per_channel} == {np.int8, np.int32}  # weights and their biases
    tfl_w = [s for t, s in per_channel if t == np.int8]
    assert len(tfl_w) == len(weights) == layers
    for scale in weights:
        assert any(w.shape == scale.shape and np.array_equal(w, scale) for w in tfl_w), scale
    assert len([d for d, p in q if d["dtype"] == np.int32]) == layers
    assert report["lowering"]["float_ops"] == []
    return report


def test_pt2e_synthetic_keeps_learned_scales(tmp_path: Path) -> None:
    x, y = _synthetic(512)
    _check(_pt2e(TinyCnn(), x, y, steps=30), x, tmp_path / "out", layers=3)


@pytest.mark.accuracy
def test_pt2e_fashion_mnist_keeps_learned_scales(tmp_path: Path) -> None:
    if not (assets.FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (ci/assets.sh)")
    from models.real.fashion_mnist import cached_model, load_split

    x, y = load_split("train")
    model = _pt2e(cached_model(x, y), x[:4096], y[:4096], steps=30)
    _check(model, x[4096:], tmp_path / "out", layers=4)


@pytest.mark.parametrize(
    ("cfg", "rule"),
    [({"weight_qmin": -128}, "weight_range"), ({"act_qmin": -127}, "activation_range")],
)
def test_pt2e_config_tflite_cannot_run_refused(tmp_path: Path, cfg: dict, rule: str) -> None:
    x, y = _synthetic(64)
    model = _pt2e(TinyCnn(), x, y, steps=3, **cfg)
    with pytest.raises(QdqRuleError, match="get_symmetric_quantization_config") as info:
        convert_qat(model, (torch.from_numpy(x[:1]),), tmp_path / "out")
    assert info.value.rule == rule
    assert "PT2E QAT node" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_model_without_fake_quant_refused(tmp_path: Path) -> None:
    x, _ = _synthetic(4)
    exported = torch.export.export(TinyCnn().eval(), (torch.from_numpy(x[:1]),)).module()
    for model in (TinyCnn(), exported):
        with pytest.raises(ConfigError, match=r"not a QAT model.*prepare_qat_pt2e"):
            convert_qat(model, (torch.from_numpy(x[:1]),), tmp_path / "out")
    assert not (tmp_path / "out").exists()
