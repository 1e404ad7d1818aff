"""convert_qat: a torch.ao FX QAT model, trained a few steps, → int8 .tflite with its learned
scales, verified against the fake-quant torch model in output steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bridge.errors import QdqRuleError
from bridge.importqdq.qat import PAIR, convert_qat, qat_qconfig_mapping
from bridge.runtime import tolerances
from models.real import assets

pytest.importorskip("torch.ao.quantization.quantize_fx")


class TinyCnn(nn.Module):
    """Conv-BN-ReLU, max-pool, Conv-BN-ReLU, mean, Linear: 1x28x28 → 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c2(self.pool(self.c1(x))).mean((2, 3)))


def _synthetic(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic 10-class images: a class-dependent bright square plus noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32) * 0.3
    for i, c in enumerate(y):
        r, k = divmod(int(c), 5)
        x[i, 0, 4 + 12 * r : 12 + 12 * r, 2 + 5 * k : 7 + 5 * k] += 2.0
    return x, y.astype(np.int64)


def _qat(qconfig, x: np.ndarray, y: np.ndarray, steps: int = 40) -> nn.Module:
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    torch.manual_seed(0)
    model = prepare_qat_fx(TinyCnn().train(), qconfig, (torch.from_numpy(x[:1]),))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = nn.functional.cross_entropy(
            model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _fake_quants(model: nn.Module) -> tuple[dict, dict]:
    """(activation (scale, int8 zero point) set, weight scales by module) torch learned."""
    from torch.ao.quantization import FakeQuantizeBase

    weights = {n: m.weight_fake_quant for n, m in model.named_modules() if hasattr(m, "weight")
               and hasattr(m, "weight_fake_quant")}  # fmt: skip
    wid = {id(f) for f in weights.values()}
    acts = {
        (float(m.scale), int(m.zero_point) - (128 if m.dtype == torch.quint8 else 0))
        for m in model.modules()
        if isinstance(m, FakeQuantizeBase) and id(m) not in wid
    }
    return acts, {n: f.scale.numpy().astype(np.float32) for n, f in weights.items()}


def _check(model: nn.Module, x: np.ndarray, out: Path) -> dict:
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
    acts, weights = _fake_quants(model)
    q = [
        (d, d["quantization_parameters"])
        for d in details
        if len(d["quantization_parameters"]["scales"])
    ]
    tfl_acts = {
        (float(p["scales"][0]), int(p["zero_points"][0]))
        for d, p in q
        if d["dtype"] == np.int8 and len(p["scales"]) == 1
    }
    learned = {(float(np.float32(s)), z) for s, z in acts}
    assert tfl_acts == learned, (tfl_acts, learned)
    tfl_w = [
        p["scales"].astype(np.float32)
        for d, p in q
        if d["dtype"] == np.int8 and len(p["scales"]) > 1
    ]
    assert len(tfl_w) == len(weights) == 3
    for name, scale in weights.items():
        assert any(w.shape == scale.shape and np.array_equal(w, scale) for w in tfl_w), name
    biases = [d for d, p in q if d["dtype"] == np.int32]
    assert len(biases) == 3
    assert report["lowering"]["float_ops"] == []
    return report


def test_qat_synthetic_keeps_learned_scales(tmp_path: Path) -> None:
    x, y = _synthetic(512)
    _check(_qat(qat_qconfig_mapping(), x, y), x, tmp_path / "out")


@pytest.mark.accuracy
def test_qat_fashion_mnist_keeps_learned_scales(tmp_path: Path) -> None:
    if not (assets.FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (ci/assets.sh)")
    from models.real.fashion_mnist import load_split

    x, y = load_split("train")
    _check(_qat(qat_qconfig_mapping(), x[:4096], y[:4096]), x[4096:], tmp_path / "out")


def test_asymmetric_per_tensor_weights_refused(tmp_path: Path) -> None:
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, QConfig

    mapping = qat_qconfig_mapping()
    weight = FakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver,
        quant_min=-128,
        quant_max=127,
        dtype=torch.qint8,
        qscheme=torch.per_tensor_affine,
    )
    mapping.set_global(QConfig(activation=mapping.global_qconfig.activation, weight=weight))
    x, y = _synthetic(64)
    with pytest.raises(QdqRuleError, match="qat_qconfig_mapping") as info:
        convert_qat(_qat(mapping, x, y, steps=3), (torch.from_numpy(x[:1]),), tmp_path / "out")
    assert info.value.rule == "weight_symmetric"
    assert not (tmp_path / "out").exists()
