"""bridge.convert and its options: unknown names and modes are a ConfigError before any work; a
tiny nn.Linear converts, writes its folder and reports every pair of its mode above its floor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bridge
from bridge.api import ConvertOptions
from bridge.errors import ConfigError
from bridge.modes import MODES
from bridge.outdir import FILES


@pytest.fixture(scope="module")
def linear() -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return torch.nn.Linear(8, 4).eval(), (torch.randn(1, 8),)


def test_from_kwargs_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['verify_sample'\]"):
        ConvertOptions.from_kwargs({"verify_sample": 3})


def test_from_kwargs_turns_lists_into_tuples() -> None:
    opts = ConvertOptions.from_kwargs({"input_names": ["x"], "verify_samples": 5})
    assert opts.input_names == ("x",) and opts.verify_samples == 5


def test_bogus_quantize_is_a_config_error(linear, tmp_path: Path) -> None:
    model, example = linear
    with pytest.raises(ConfigError, match="bogus"):
        bridge.convert(model, example, tmp_path / "out", quantize="bogus")
    assert not (tmp_path / "out").exists()


def test_convert_linear_writes_files_and_report(linear, tmp_path: Path) -> None:
    model, example = linear
    result = bridge.convert(model, example, tmp_path / "out", verify_samples=2)
    written = {p.name for p in (tmp_path / "out").iterdir()}
    for role in ("onnx", "opt", "tflite", "report", "samples"):
        assert FILES[role] in written, (role, written)
    assert FILES["qdq"] not in written
    assert result.passed and result.report["mode"] == "fp32"
    assert result.tflite_path == tmp_path / "out" / FILES["tflite"]
    assert {"contract", "tflite_contract", "parity", "passed", "failures"} <= set(result.report)
    assert result.report["failures"] == []
    fp32 = MODES.get("fp32")
    assert sorted(result.report["parity"]) == sorted(fp32.pairs), result.report["parity"]
    for pair, outputs in result.report["parity"].items():
        for entry in outputs.values():
            assert entry["samples"] == 1 + 2, entry
            assert entry["min_sqnr_db"] == fp32.floor(pair)
            assert entry["sqnr_db"] >= fp32.floor(pair), entry
