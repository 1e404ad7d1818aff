"""bridge.verify re-checks a conversion folder from its files alone: an intact folder passes,
a .tflite whose weights were edited is a ParityError carrying its report, missing or truncated
files are a ModelLoadError naming the path."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import bridge
from bridge.errors import ModelLoadError, ParityError
from bridge.modes import MODES
from bridge.outdir import FILES
from bridge.verify.folder import load_folder, output_scales

SAMPLES = 2


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Linear]:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4).eval()
    out = tmp_path_factory.mktemp("folder") / "out"
    bridge.convert(model, (torch.randn(1, 8),), out, verify_samples=SAMPLES)
    return out, model


@pytest.fixture
def folder(converted, tmp_path: Path) -> Path:
    """A fresh copy of the converted folder, free to tamper with."""
    copy = tmp_path / "copy"
    shutil.copytree(converted[0], copy)
    return copy


def test_intact_folder_passes(converted) -> None:
    out, _ = converted
    report = bridge.verify(out)
    assert report["passed"], report["failures"]
    fp32 = MODES.get("fp32")
    for pair in ("ort_vs_tflite", "torch_vs_tflite"):
        entry = report["parity"][pair]["output_0"]
        assert entry["samples"] == 1 + SAMPLES, entry
        assert entry["sqnr_db"] >= fp32.floor(pair), entry


def test_load_folder_reads_samples_and_reference(converted) -> None:
    out, model = converted
    stored = load_folder(out)
    assert stored.mode == "fp32" and len(stored.feeds) == 1 + SAMPLES
    name = stored.contract.input_names[0]
    with torch.inference_mode():
        expected = [model(torch.from_numpy(f[name])).numpy() for f in stored.feeds]
    np.testing.assert_array_equal(stored.reference["output_0"], np.concatenate(expected))


def test_tampered_tflite_weights_fail(folder: Path, converted) -> None:
    _, model = converted
    path = folder / FILES["tflite"]
    data = path.read_bytes()
    weight = model.weight.detach().numpy()
    at = data.find(weight.tobytes())
    assert at >= 0, "the Linear weight is not stored verbatim in the .tflite"
    tampered = data[:at] + (-weight).tobytes() + data[at + weight.nbytes :]
    path.write_bytes(tampered)
    with pytest.raises(ParityError, match="ort_vs_tflite output 'output_0'") as caught:
        bridge.verify(folder)
    report = caught.value.report
    assert not report["passed"]
    entry = report["parity"]["ort_vs_tflite"]["output_0"]
    assert entry["sqnr_db"] < MODES.get("fp32").floor("ort_vs_tflite"), entry
    assert any("ort_vs_tflite" in f for f in report["failures"]), report["failures"]


@pytest.mark.parametrize("role", ["tflite", "opt", "report", "samples"])
def test_missing_file_is_a_model_load_error(folder: Path, role: str) -> None:
    (folder / FILES[role]).unlink()
    with pytest.raises(ModelLoadError, match=re.escape(FILES[role])):
        bridge.verify(folder)


def test_truncated_tflite_is_a_model_load_error(folder: Path) -> None:
    path = folder / FILES["tflite"]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match=r"not a usable \.tflite"):
        bridge.verify(folder)


def test_file_instead_of_folder_is_a_model_load_error(folder: Path) -> None:
    with pytest.raises(ModelLoadError, match="is not a folder"):
        bridge.verify(folder / FILES["tflite"])


def test_output_scales_keeps_quantized_outputs_only() -> None:
    tensors = {"y": {"scale": [0.25]}, "z": {"scale": []}, "w": {}}
    assert output_scales(tensors, ["y", "z", "w", "absent"]) == {"y": 0.25}
