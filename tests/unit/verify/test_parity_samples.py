"""The parity gate judges every sample on its own, with floors from LSB steps and the noise
model, on synthetic arrays (no conversion)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from bridge.contract import IOContract, TensorSpec
from bridge.runtime import tolerances
from bridge.verify import parity
from bridge.verify.gate import verification_feeds

SAMPLES = 4


class FakeRunner:
    """Returns the feed's `x` times `gain`, plus `noise` × N(0, 1) on the listed samples."""

    def __init__(self, noise: Mapping[int, float] | None = None, *, step: float = 0.0) -> None:
        self.noise, self.step, self.calls = dict(noise or {}), step, 0

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        i, self.calls = self.calls, self.calls + 1
        x = np.asarray(feeds["x"], np.float64)
        rng = np.random.default_rng(100 + i)
        y = x + self.noise.get(i, 0.0) * rng.standard_normal(x.shape)
        if self.step:
            y = np.round(y / self.step) * self.step
        return {"y": y.astype(np.float32)}


def feeds(scale: float = 1.0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": (scale * rng.standard_normal((1, 256))).astype(np.float32)} for _ in range(4)]


def test_one_wrong_sample_of_four_fails() -> None:
    """Sample 2 at ~56 dB misses the fp32 floor of 60 dB; pooled with three exact samples it
    measures ~62 dB and passed."""
    runners = {"torch": FakeRunner(), "ort": FakeRunner(), "tflite": FakeRunner({2: 1.5e-3})}
    verdict = parity.check(parity.run_all(runners, feeds()), mode="fp32", output_names=["y"])
    entry = verdict["pairs"]["ort_vs_tflite"]["y"]
    assert not verdict["passed"], verdict
    assert entry["sample"] == 2 and entry["samples"] == SAMPLES, entry
    per_sample = entry["sqnr_db_per_sample"]
    assert (
        per_sample[2]
        < tolerances.floor("fp32", "ort_vs_tflite")
        <= min(per_sample[:2] + per_sample[3:])
    ), per_sample
    assert entry["sqnr_db"] == per_sample[2] or abs(entry["sqnr_db"] - per_sample[2]) < 0.01
    assert any("sample 2" in f for f in verdict["failures"]), verdict["failures"]


def test_example_input_is_sample_0() -> None:
    contract = IOContract(inputs=(TensorSpec("x", (1, 256), "float32"),), outputs=())
    example = torch.full((1, 256), 3.0)
    held_out = [{"x": np.zeros((1, 256), np.float32)}] * 2
    got = verification_feeds(example, contract, held_out, samples=3, seed=0)
    assert len(got) == 1 + 3
    np.testing.assert_array_equal(got[0]["x"], example.numpy())
    np.testing.assert_array_equal(got[1]["x"], held_out[0]["x"])


def qdq_tflite(flips: float, *, step: float) -> dict:
    """An int8 output spread over ~16 steps; the .tflite moves `flips` of the values by one
    step (sample 1 only), or by 6 steps when flips > 1."""
    base = FakeRunner(step=step)
    data = feeds(scale=16 * step)
    qdq = parity.run_all({"qdq": base}, data)["qdq"]
    moved = []
    for i, s in enumerate(qdq):
        y = s["y"].copy()
        if i == 1:
            rng = np.random.default_rng(5)
            if flips <= 1:
                y += step * rng.choice(
                    [-1, 0, 1], size=y.shape, p=[flips / 2, 1 - flips, flips / 2]
                )
            else:
                y += flips * step * rng.choice([-1, 1], size=y.shape)
        moved.append({"y": y.astype(np.float32)})
    return {"qdq": qdq, "tflite": moved}


def test_lsb_floor_follows_the_output_step() -> None:
    """An output spanning ~16 steps where the .tflite is within one step of QDQ measures well
    below a fixed 30 dB, yet it is 0.5 steps rms: it passes. Six steps everywhere fails."""
    step = 0.066
    samples = qdq_tflite(0.3, step=step)
    verdict = parity.check(samples, mode="int8", output_names=["y"], lsb_scales={"y": step})
    entry = verdict["pairs"]["qdq_vs_tflite"]["y"]
    assert verdict["passed"], verdict["failures"]
    assert entry["sqnr_db"] < tolerances.INT8_VS_QDQ_MIN_SQNR_DB, entry
    assert entry["lsb_max"] <= 1.0 + 1e-6
    power = float(np.mean(np.square(samples["qdq"][1]["y"], dtype=np.float64)))
    assert entry["min_sqnr_db"] == tolerances.lsb_floor_db(power, step, "int8")

    wrong = qdq_tflite(6.0, step=step)
    verdict = parity.check(wrong, mode="int8", output_names=["y"], lsb_scales={"y": step})
    entry = verdict["pairs"]["qdq_vs_tflite"]["y"]
    assert not verdict["passed"] and entry["sample"] == 1, entry
    assert entry["lsb_p99"] > tolerances.MAX_RMS_LSB["int8"], entry


def test_noise_floor_follows_the_prediction() -> None:
    """torch ⇄ QDQ: a sample far below the noise model's prediction fails (clipping), one near
    it passes whatever its absolute SQNR (coarse steps)."""
    data = feeds()
    predicted = [45.0, 20.0, 45.0, 45.0]
    # sample 1: coarse steps, 19 dB where 20 dB is predicted; sample 2: clipped, 15 dB of 45
    noise = {1: 10 ** (-19 / 20), 2: 10 ** (-15 / 20), 0: 10 ** (-44 / 20), 3: 10 ** (-44 / 20)}
    runners = {"torch": FakeRunner(), "qdq": FakeRunner(noise)}
    verdict = parity.check(
        parity.run_all(runners, data), mode="int8", output_names=["y"], predicted={"y": predicted}
    )
    entry = verdict["pairs"]["torch_vs_qdq"]["y"]
    floors = [tolerances.noise_floor_db(p, "int8") for p in predicted]
    assert entry["floor_db_per_sample"] == [round(f, 2) for f in floors]
    assert entry["sqnr_db_per_sample"][1] < tolerances.INT8_VS_TORCH_MIN_SQNR_DB + 5
    assert not verdict["passed"] and entry["sample"] == 2, entry
    assert [f.split(":")[0] for f in verdict["failures"]] == ["torch_vs_qdq output 'y' sample 2"]
