"""Sequential bias correction: after it, every corrected layer's mean output in the QDQ model
matches the float one channel by channel (upstream layers quantized and corrected), only int32
biases change, and the systematic output error of a net with positive-mean inputs is gone."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from bridge.artifact import OnnxArtifact
from bridge.quantize import QuantConfig, quantize
from bridge.quantize.bias_correction import _shrink
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import OrtRunner

from .conftest import export, initializers

#: Calibration samples (all of them also drive the correction).
CALIBRATION = 16
#: Bias correction alone: no equalization, nearest rounding (the defaults would mix them in).
ISOLATED = {"equalize": False, "weight_rounding": "nearest"}
#: A corrected mean may miss the float one by half a bias step (the bias is an integer) plus
#: float32 rounding of the means.
HALF_STEP = 0.5
#: Gain of the correction on PositiveMean's held-out output: measured 3.4 to 3.8 dB.
MIN_GAIN_DB = 2.0


class PositiveMean(nn.Module):
    """Inputs far from zero mean, so a weight's rounding error shifts every output (ΔW·E[x])."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x.abs() + 2.0))
        h = torch.relu(self.b(h))
        return self.fc(h.mean((2, 3)))


def positive_mean() -> OnnxArtifact:
    torch.manual_seed(0)
    return export(PositiveMean(), (1, 4, 8, 8))


def samples(art: OnnxArtifact, n: int, seed: int) -> list[tuple[np.ndarray]]:
    rng = np.random.default_rng(seed)
    shape = art.contract.inputs[0].concrete_shape()
    return [(rng.standard_normal(shape).astype(np.float32),) for _ in range(n)]


def output_sqnr(art: OnnxArtifact, qdq: OnnxArtifact, data: list[tuple[np.ndarray]]) -> float:
    ref, test = OrtRunner(art.model, art.contract), OrtRunner(qdq.model, qdq.contract)
    name = art.contract.input_names[0]
    a = np.concatenate([ref.run({name: x})["y"] for (x,) in data])
    b = np.concatenate([test.run({name: x})["y"] for (x,) in data])
    return sqnr_db(a, b)


def layer_outputs(model: onnx.ModelProto, facts: dict) -> dict[str, tuple[str, str]]:
    """bias name → (its layer's output in `model`, the int32 initializer), for every bias."""
    readers = {t: n for n in model.graph.node for t in n.input}
    return {
        k: (readers[f["dq"]].output[0], f["q"]) for k, f in facts.items() if f["kind"] == "bias"
    }


def channel_means(art_or_model, contract, names: list[str], data) -> dict[str, np.ndarray]:
    runner = OrtRunner(art_or_model, contract, extra_outputs=names)
    key = contract.input_names[0]
    values = [runner.run({key: x}) for (x,) in data]
    out = {}
    for t in names:
        y = np.concatenate([v[t] for v in values])
        axes = tuple(i for i in range(y.ndim) if i != (1 if y.ndim == 4 else y.ndim - 1))
        out[t] = y.astype(np.float64).mean(axis=axes)
    return out


def test_each_conv_mean_matches_float_after_correction() -> None:
    art = positive_mean()
    calib = samples(art, CALIBRATION, seed=1)
    qdq = quantize(art, QuantConfig(mode="int8", **ISOLATED), calib)
    facts = qdq.facts["quantization"]
    assert facts["bias_correction"]["layers"] == 3, facts["bias_correction"]
    outs = layer_outputs(qdq.model, facts["tensors"])
    float_out = {b: n.output[0] for n in art.model.graph.node for b in n.input if b in outs}
    got = channel_means(qdq.model, qdq.contract, [o for o, _ in outs.values()], calib)
    want = channel_means(art.model, art.contract, list(float_out.values()), calib)
    for bias, (out, _) in outs.items():
        if bias == "fc.bias":
            continue  # one row per sample: shrunk by its noise (test_shrink_keeps_clear_shifts)
        step = np.asarray(facts["tensors"][bias]["scale"], np.float64)
        miss = np.abs(got[out] - want[float_out[bias]])
        assert np.all(miss <= HALF_STEP * step + 1e-6), (bias, (miss / step).max())


def test_shrink_keeps_clear_shifts_and_drops_noise() -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((32, 2))
    diff = noise - np.array([3.0, 0.0])  # channel 0 shifted by −3 (10σ/√n), channel 1 not
    shift = -diff.mean(axis=0)
    kept = _shrink(shift, diff)
    assert abs(kept[0] - shift[0]) < 0.01 * abs(shift[0])
    assert abs(kept[1]) < abs(shift[1]) and abs(kept[1]) < 0.1


def test_only_bias_integers_change_and_the_output_gains() -> None:
    art = positive_mean()
    calib, held_out = samples(art, CALIBRATION, seed=1), samples(art, 32, seed=2)
    plain = quantize(art, QuantConfig(mode="int8", **ISOLATED, bias_correction=False), calib)
    fixed = quantize(art, QuantConfig(mode="int8", **ISOLATED), calib)
    before, after = initializers(plain.model), initializers(fixed.model)
    assert before.keys() == after.keys()
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    biases = {
        f["q"] for f in fixed.facts["quantization"]["tensors"].values() if f["kind"] == "bias"
    }
    assert changed and changed <= biases, changed - biases
    assert all(after[k].dtype == np.int32 for k in changed)
    gain = output_sqnr(art, fixed, held_out) - output_sqnr(art, plain, held_out)
    assert gain >= MIN_GAIN_DB, gain


def test_token_layers_are_left_alone() -> None:
    """A Linear over [batch, tokens, channels] keeps its bias: tokens err differently."""
    torch.manual_seed(0)
    art = export(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)), (1, 5, 8))
    calib = samples(art, CALIBRATION, seed=1)
    plain = quantize(art, QuantConfig(mode="int8", **ISOLATED, bias_correction=False), calib)
    fixed = quantize(art, QuantConfig(mode="int8", **ISOLATED), calib)
    assert "bias_correction" not in fixed.facts["quantization"]
    for name, value in initializers(plain.model).items():
        np.testing.assert_array_equal(value, initializers(fixed.model)[name])


def test_no_correction_without_biases_or_when_off() -> None:
    art = positive_mean()
    calib = samples(art, 4, seed=1)
    off = quantize(art, QuantConfig(mode="int8", **ISOLATED, bias_correction=False), calib)
    assert "bias_correction" not in off.facts["quantization"]
    dynamic = quantize(art, QuantConfig(mode="dynamic"))
    assert "bias_correction" not in dynamic.facts["quantization"]


def test_memory_budget_bounds_the_samples(monkeypatch) -> None:
    import bridge.quantize.bias_correction as bc

    monkeypatch.setattr(bc, "MEMORY_BUDGET", 1)
    art = positive_mean()
    qdq = quantize(art, QuantConfig(mode="int8", **ISOLATED), samples(art, CALIBRATION, seed=1))
    assert qdq.facts["quantization"]["bias_correction"]["samples"] == bc.MIN_SAMPLES
