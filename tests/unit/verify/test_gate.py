"""The parity gate of convert(): verification feeds start with the example input, and run_gate
judges every pair its mode lists on every sample, failing the verdict when one pair misses."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.export import ExportConfig, export
from bridge.lower import lower
from bridge.modes import MODES
from bridge.quantize import quantize
from bridge.quantize.config import QuantConfig
from bridge.runtime.feeds import random_feeds
from bridge.verify.gate import quantized_output_scales, run_gate, verification_feeds

CONTRACT = IOContract(inputs=(TensorSpec("x", (1, 8), "float32"),), outputs=())


def test_feeds_example_first_then_held_out_then_seeded_random() -> None:
    example = torch.full((1, 8), 3.0)
    held_out = [{"x": np.full((1, 8), 7.0, np.float32)}]
    got = verification_feeds(example, CONTRACT, held_out, samples=3, seed=10)
    assert len(got) == 1 + 3
    np.testing.assert_array_equal(got[0]["x"], example.numpy())
    np.testing.assert_array_equal(got[1]["x"], held_out[0]["x"])
    np.testing.assert_array_equal(got[2]["x"], random_feeds(CONTRACT, seed=11)["x"])
    np.testing.assert_array_equal(got[3]["x"], random_feeds(CONTRACT, seed=12)["x"])
    assert not np.array_equal(got[2]["x"], got[3]["x"])


def test_feeds_take_at_most_samples_held_out_and_accept_a_tuple() -> None:
    held_out = [{"x": np.full((1, 8), float(i), np.float32)} for i in range(5)]
    got = verification_feeds((torch.zeros(1, 8),), CONTRACT, held_out, samples=2, seed=0)
    assert [float(f["x"][0, 0]) for f in got] == [0.0, 0.0, 1.0]
    assert len(verification_feeds(torch.zeros(1, 8), CONTRACT, [], samples=0, seed=0)) == 1


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(8, 6), torch.nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, OnnxArtifact, list[dict[str, np.ndarray]]]:
    torch.manual_seed(0)
    model = _Net().eval()
    example = torch.randn(1, 8)
    art = export(model, (example,), ExportConfig())
    feeds = verification_feeds(example, art.contract, [], samples=2, seed=0)
    return model, art, feeds


@pytest.fixture(scope="module")
def fp32_tflite(tiny) -> TfliteArtifact:
    return lower(tiny[1], mode="fp32")


def test_fp32_gate_judges_each_pair_on_each_sample(tiny, fp32_tflite) -> None:
    model, art, feeds = tiny
    gate = run_gate(model, art, None, fp32_tflite, feeds, mode="fp32")
    assert gate.passed, gate.verdict["failures"]
    assert gate.runtimes == ("torch", "ort", "tflite")
    mode = MODES.get("fp32")
    assert sorted(gate.verdict["pairs"]) == sorted(mode.pairs)
    for pair, outputs in gate.verdict["pairs"].items():
        entry = outputs["output_0"]
        assert entry["samples"] == len(feeds) == 3, entry
        assert min(entry["sqnr_db_per_sample"]) >= mode.floor(pair), entry
    assert gate.results["tflite"]["output_0"].shape == (3, 4)
    assert len(gate.samples["ort"]) == 3 and gate.batched is None


def test_a_wrong_torch_model_fails_its_pairs(tiny, fp32_tflite) -> None:
    model, art, feeds = tiny
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.fc2.bias += 1.0
    gate = run_gate(wrong, art, None, fp32_tflite, feeds, mode="fp32")
    assert not gate.passed
    pairs = gate.verdict["pairs"]
    assert not pairs["torch_vs_ort"]["output_0"]["passed"]
    assert not pairs["torch_vs_tflite"]["output_0"]["passed"]
    assert pairs["ort_vs_tflite"]["output_0"]["passed"]  # the runtimes of one model still agree
    floor = MODES.get("fp32").floor("torch_vs_ort")
    assert pairs["torch_vs_ort"]["output_0"]["sqnr_db"] < floor
    assert any(f.startswith("torch_vs_ort") for f in gate.verdict["failures"])


def test_int8_gate_adds_the_qdq_runtime_and_its_pairs(tiny) -> None:
    model, art, feeds = tiny
    torch.manual_seed(1)
    calibration = [(torch.randn(1, 8),) for _ in range(16)]
    qdq = quantize(art, QuantConfig(mode="int8"), calibration)
    tflite = lower(qdq, mode="int8")
    gate = run_gate(model, art, qdq, tflite, feeds, mode="int8")
    assert gate.runtimes == ("torch", "ort", "qdq", "tflite")
    assert sorted(gate.verdict["pairs"]) == sorted(MODES.get("int8").pairs)
    assert gate.passed, gate.verdict["failures"]
    scales = quantized_output_scales(qdq)
    assert set(scales) == {"output_0"} and scales["output_0"] > 0
    assert quantized_output_scales(None) == {}
    entry = gate.verdict["pairs"]["qdq_vs_tflite"]["output_0"]
    assert entry["samples"] == 3 and entry["lsb_p99"] is not None, entry
