"""tools/noise_budget.py: the noise of an int8 model split by weights, activations and tensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bridge
import models
from tools import noise_budget


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    model, inputs = models.get("digits_cnn")
    root = tmp_path_factory.mktemp("budget")
    rng = np.random.default_rng(0)
    calibration = [
        tuple(rng.standard_normal(tuple(i.shape)).astype(np.float32) for i in inputs)
        for _ in range(16)
    ]
    for equalize in (False, True):
        out = root / str(equalize)
        bridge.convert(
            model, inputs, out, quantize="int8", equalize=equalize, calibration=calibration
        )
    return {e: root / str(e) for e in (False, True)}


def test_budget_splits_the_noise(folders: dict[bool, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(noise_budget, "write_json", lambda name, data: _keep(tmp_path, data))
    assert noise_budget.main([str(folders[False]), "--samples", "4", "--top", "50"]) == 0
    result = json.loads((tmp_path / "budget.json").read_text())
    full = result["sqnr_db"]["full"]
    # each part alone is at least as clean as the whole (the model adds their noises)
    assert result["sqnr_db"]["weights_only"] > full
    for kind in ("activation", "weight"):
        rows = result["tensors"][kind]
        assert rows and all(0.0 <= r["share"] <= 1.0 for r in rows)
        assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-6)
        assert all(r["alone_db"] > full for r in rows)


def test_equalized_folder_is_refused(folders: dict[bool, Path]) -> None:
    with pytest.raises(SystemExit) as stop:
        noise_budget.main([str(folders[True]), "--samples", "2"])
    assert stop.value.code == 2


def _keep(folder: Path, data: dict) -> Path:
    path = folder / "budget.json"
    path.write_text(json.dumps(data))
    return path
