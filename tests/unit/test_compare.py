"""compare: `--modes` converts once per mode into OUT/<mode>/, records a failing mode's error
without stopping the others, and writes OUT/report.md and OUT/report.html comparing them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bridge.compare import convert_modes, write_summary
from bridge.errors import ConfigError
from bridge.modes import MODES


def _model() -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 4)).eval(), (torch.randn(1, 8),)


def test_unknown_or_no_modes_are_a_config_error(tmp_path: Path) -> None:
    model, inputs = _model()
    for modes in ([], ["fp32", "int4"]):
        with pytest.raises(ConfigError, match="choose from " + ", ".join(MODES)):
            convert_modes(model, inputs, tmp_path, modes)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_mode_is_recorded_and_the_others_still_run(tmp_path: Path) -> None:
    model, inputs = _model()
    # int8 needs calibration data: its convert refuses, fp32 converts; the repeat runs once
    summary = convert_modes(model, inputs, tmp_path, ["int8", "fp32", "int8"])
    assert summary["failed"] == ["int8"]
    int8, fp32 = summary["rows"]
    assert int8["mode"] == "int8" and int8["passed"] is None and "calibration" in int8["error"]
    assert fp32["mode"] == "fp32" and fp32["passed"] is True
    assert (tmp_path / "fp32" / "model.tflite").is_file()
    assert not (tmp_path / "int8").exists()
    md = (tmp_path / "report.md").read_text()
    assert "| fp32 |" in md and "| int8 |" in md and "ERROR: " in md
    assert (tmp_path / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32", "report.html", "report.md"]


def test_write_summary_rewrites_the_comparison(tmp_path: Path) -> None:
    summary = write_summary(tmp_path / "new", ["fp16"], errors={"fp16": "stopped"})
    assert summary == {
        "model": None,
        "rows": [{"mode": "fp16", "passed": None, "error": "stopped"}],
    }
    assert "ERROR: stopped" in (tmp_path / "new" / "report.md").read_text()
