"""Per-layer localization of an equalized int8 conversion: the QDQ model and the .tflite hold
x_c / t_c on the equalized tensors, so the comparison multiplies t_c back before comparing with
the float model. Without that, the unbalanced channels below make every equalized tensor look
like a quantization error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import bridge
from bridge.export import ExportConfig, export
from bridge.lower import lower
from bridge.modes import MODES
from bridge.passes import run_passes
from bridge.quantize import QuantConfig, quantize
from bridge.runtime import tolerances
from bridge.runtime.feeds import random_feeds
from bridge.verify.layer_stats import LayerStats
from bridge.verify.localize import localize_conversion, localize_dir
from bridge.verify.unscale import Unscaler

#: Input [1, 3, 20, 20]: 8 channels on a 10x10 grid after the max-pool, so that no tensor's
#: channel count equals its height and width (such a cube hides the .tflite's layout).
SHAPE = (1, 3, 20, 20)
CALIBRATION_SAMPLES = 16
#: Rounding to the nearest step is at most half a step off, plus float slack.
HALF_LSB = 0.5 + 1e-3


class Residual(nn.Module):
    """stem → ReLU → max-pool, a → ReLU → b, Add, ReLU, head: the residual stream (stem, b →
    a, head) and a → ReLU → b are channel groups. The stem's and b's channels span 100× in
    range, so the factors t_c are far from 1."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            spread = torch.logspace(-1, 1, 8)
            for conv in (self.stem, self.b):
                conv.weight.mul_(spread[:, None, None, None])
                conv.bias.mul_(spread)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(torch.relu(self.stem(x)), 2)
        h = torch.relu(h + self.b(torch.relu(self.a(h))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.head(h), 1), 1))


def _calibration() -> list[tuple[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(SHAPE).astype(np.float32),) for _ in range(CALIBRATION_SAMPLES)]


@pytest.fixture(scope="module")
def residual() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return Residual().eval(), (torch.randn(*SHAPE),)


@pytest.fixture(scope="module")
def parts(residual):
    model, inputs = residual
    exported = export(model, inputs, ExportConfig())
    optimised = run_passes(exported, None)
    qdq = quantize(optimised, QuantConfig(mode="int8", equalize=True), _calibration())
    feeds = [random_feeds(optimised.contract, seed=s) for s in range(3)]
    return exported, optimised, qdq, lower(qdq, mode="int8"), feeds


def _equalized_rows(layers: dict, equalized: set[str], pair: str) -> list[float]:
    return [
        r["metrics"][pair]["sqnr_db"]
        for r in layers["rows"]
        if r["tensor"] in equalized and pair in r["metrics"]
    ]


def test_equalized_int8_names_no_divergence(parts, residual) -> None:
    exported, optimised, qdq, low, feeds = parts
    equalized = set(qdq.facts["quantization"]["equalization"])
    assert {"/MaxPool_output_0", "/Relu_1_output_0", "/Add_output_0"} <= equalized, equalized
    layers = localize_conversion(residual[0], exported, optimised, qdq, low, feeds)
    assert layers["first_divergence"] is None, layers["first_divergence"]["explanation"]
    for link in MODES.get("int8").links[1:]:  # every link that reads an equalized runtime
        floor = tolerances.floor("int8", link.floor[1])
        got = _equalized_rows(layers, equalized, link.pair)
        assert len(got) >= 4 and min(got) >= floor, (link.pair, got)


def test_without_unscaling_equalized_tensors_diverge(parts, residual) -> None:
    """Negative control: the same comparison, the factors dropped from the facts."""
    exported, optimised, qdq, low, feeds = parts
    facts = dict(qdq.facts["quantization"])
    equalized = set(facts.pop("equalization"))
    blind = qdq.evolve(facts={"quantization": facts})
    layers = localize_conversion(residual[0], exported, optimised, blind, low, feeds)
    found = layers["first_divergence"]
    assert found is not None and found["tensor"] in equalized, found
    got = _equalized_rows(layers, equalized, "ort_vs_qdq")
    assert min(got) < tolerances.floor("int8", "torch_vs_qdq"), got


def test_folder_carries_the_factors(residual, tmp_path: Path) -> None:
    """report.json keeps the factors, so `localize_dir` undoes them too."""
    model, inputs = residual
    out = tmp_path / "eq"
    result = bridge.convert(
        model, inputs, out, quantize="int8", calibration=_calibration(), equalize=True
    )
    assert result.report["quantization"]["equalization"]
    assert result.report["layers"]["first_divergence"] is None
    assert localize_dir(out)["first_divergence"] is None


def test_lsb_is_counted_in_per_channel_steps() -> None:
    """A tensor held as x_c / t_c and rounded to step s is off by at most s·t_c / 2 once
    unscaled: its LSB error stays at half a step, which one per-tensor step would not."""
    rng = np.random.default_rng(0)
    t = np.array([0.1, 1.0, 10.0], np.float32)
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32) * t[:, None, None]
    step = 0.01
    held = np.round(x / t[:, None, None] / step) * step  # what the equalized .tflite holds
    unscaler = Unscaler.from_facts({"x": t.tolist()})
    values = unscaler.runtimes({"ort": {"x": x}, "tflite": {"x": held}})
    np.testing.assert_allclose(values["tflite"]["x"], x, atol=5 * step)
    link = MODES.get("int8").links[-1]  # ORT ⇄ LiteRT
    stats = LayerStats()
    stats.add(values, {"x": step}, [link], {}, unscaler)
    lsb = stats.acc[(link.pair, "x")].lsb_max
    assert 0.4 < lsb <= HALF_LSB, lsb
    plain = LayerStats()
    plain.add(values, {"x": step}, [link], {})
    assert plain.acc[(link.pair, "x")].lsb_max > 1.0  # a per-tensor step overcounts t_c = 10
