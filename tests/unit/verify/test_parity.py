"""parity.run_all, concat and split (verify.npz's layout and back), and check()'s pair
selection; the per-sample floors are covered by test_parity_samples.py."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from bridge.errors import ConfigError
from bridge.modes import MODES
from bridge.verify import parity


def _samples() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {
            "y": rng.standard_normal((1, 3, 2)).astype(np.float32),
            "count": np.float32(i + 0.5),  # a 0-d output
        }
        for i in range(4)
    ]


def test_concat_joins_on_axis_0_and_stacks_scalars() -> None:
    samples = _samples()
    joined = parity.concat(samples)
    assert joined["y"].shape == (4, 3, 2) and joined["count"].shape == (4,)
    np.testing.assert_array_equal(joined["y"][2], samples[2]["y"][0])
    np.testing.assert_array_equal(joined["count"], [0.5, 1.5, 2.5, 3.5])


def test_split_inverts_concat() -> None:
    samples = _samples()
    back = parity.split(parity.concat(samples), samples)
    assert len(back) == len(samples)
    for got, want in zip(back, samples, strict=True):
        assert set(got) == set(want)
        for k in want:
            assert got[k].shape == np.shape(want[k]), k
            np.testing.assert_array_equal(got[k], want[k])


def test_split_keeps_outputs_the_template_lacks() -> None:
    like = [{"y": np.zeros((1, 2))}] * 2
    back = parity.split({"y": np.arange(4.0).reshape(2, 2), "z": np.arange(6.0)}, like)
    np.testing.assert_array_equal(back[1]["y"], [[2.0, 3.0]])
    np.testing.assert_array_equal(back[1]["z"], [3.0, 4.0, 5.0])


class _Doubler:
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
        return {"y": list(2 * np.asarray(feeds["x"]))}


def test_run_all_runs_every_runner_on_every_feed_as_arrays() -> None:
    feeds = [{"x": np.array([1.0, 2.0])}, {"x": np.array([3.0])}]
    got = parity.run_all({"a": _Doubler(), "b": _Doubler()}, feeds)
    assert list(got) == ["a", "b"] and len(got["a"]) == 2
    assert isinstance(got["b"][1]["y"], np.ndarray)
    np.testing.assert_array_equal(got["a"][0]["y"], [2.0, 4.0])
    np.testing.assert_array_equal(got["b"][1]["y"], [6.0])


def test_check_skips_pairs_of_absent_runtimes_and_judges_the_rest() -> None:
    samples = _samples()
    off = [{**s, "y": s["y"] + 0.5} for s in samples]
    verdict = parity.check(
        {"ort": samples, "tflite": off}, mode="fp32", output_names=["y", "count"]
    )
    assert list(verdict["pairs"]) == ["ort_vs_tflite"]  # torch is absent
    entry = verdict["pairs"]["ort_vs_tflite"]["y"]
    assert entry["samples"] == 4 and entry["min_sqnr_db"] == MODES.get("fp32").floor(
        "ort_vs_tflite"
    )
    assert not verdict["passed"] and not entry["passed"]
    assert verdict["pairs"]["ort_vs_tflite"]["count"]["passed"]
    assert len(verdict["failures"]) == 1 and "output 'y'" in verdict["failures"][0]


def test_check_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parity.check({"ort": _samples()}, mode="int4", output_names=["y"])
