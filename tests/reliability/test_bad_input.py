"""Bad input gets a typed error whose message says what failed, where, and what to do.

Each case asserts the error type and the message, and that nothing was written.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bridge
from bridge import cli
from bridge.errors import (
    CalibrationError,
    ConfigError,
    ExportError,
    ModelLoadError,
    OutputDirError,
    ShapeError,
    UnsupportedOpError,
)
from bridge.runtime import tolerances
from tests.reliability.conftest import run_cli, snapshot, tiny_cnn

# --- operators with no lowering -------------------------------------------------------------


class _Unique(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.unique(x)


class _DilatedPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


def test_op_without_lowering_names_node_op_and_fix(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOpError) as info:
        bridge.convert(_Unique(), (torch.randn(1, 8),), tmp_path / "out")
    e = info.value
    assert e.op == "Unique" and e.node == "/Unique"
    assert "ONNX node '/Unique' (op Unique)" in str(e)
    assert "To fix: its output size depends on the data" in str(e)
    assert not (tmp_path / "out").exists()


def test_unsupported_attribute_suggests_decomposition(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOpError) as info:
        bridge.convert(_DilatedPool(), (torch.randn(1, 2, 8, 8),), tmp_path / "out")
    assert info.value.op == "MaxPool"
    assert "dilations" in str(info.value)
    assert "To fix: use dilation 1" in str(info.value)


# --- torch export failures name the module --------------------------------------------------


class _Spectrum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x).abs()


class _NumpyCall(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.numpy() * 2)


def _nested(inner: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(16, 16), nn.Sequential(nn.ReLU(), inner))


def test_unexportable_operator_names_the_module(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as info:
        bridge.convert(_nested(_Spectrum()), (torch.randn(1, 16),), tmp_path / "out")
    message = str(info.value)
    assert "in module 1.1 (_Spectrum)" in message
    assert "aten::fft_rfft" in message and "Rewrite that module" in message


def test_untraceable_module_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"in module 1\.1 \(_NumpyCall\): .*numpy"):
        bridge.convert(_nested(_NumpyCall()), (torch.randn(1, 16),), tmp_path / "out")


# --- example inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        (torch.randn(1, 3, 10, 10), r"in head \(Linear\): .*\(1, 3, 10, 10\) float32"),
        (torch.randn(1, 3, 8, 8).double(), r"in features\.0 \(Conv2d\): .*\(1, 3, 8, 8\) float64"),
        (torch.randn(1, 8, 8), r"in features\.0 \(Conv2d\): .*\(1, 8, 8\) float32"),
    ],
    ids=["shape", "dtype", "rank"],
)
def test_wrong_example_input_names_module_and_input(
    tmp_path: Path, example: torch.Tensor, expected: str
) -> None:
    model, _ = tiny_cnn()
    with pytest.raises(ShapeError, match=expected) as info:
        bridge.convert(model, (example,), tmp_path / "out")
    assert "Check the shapes and dtypes of example_inputs" in str(info.value)


class _IgnoresSecondInput(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_input_that_reaches_no_output_is_named(tmp_path: Path) -> None:
    example = (torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ExportError) as info:
        bridge.convert(_IgnoresSecondInput(), example, tmp_path / "out", input_names=["x", "mask"])
    assert "input 'mask' (example_inputs[1]) does not reach any output" in str(info.value)
    assert "use it in forward() or remove it" in str(info.value)


def test_example_inputs_must_be_tensors(tmp_path: Path) -> None:
    model, _ = tiny_cnn()
    with pytest.raises(ShapeError, match=r"example_inputs\[0\] is a ndarray, not a torch.Tensor"):
        bridge.convert(model, (np.zeros((1, 3, 8, 8), np.float32),), tmp_path / "out")
    with pytest.raises(ShapeError, match="example_inputs is empty"):
        bridge.convert(model, (), tmp_path / "out")


# --- calibration data -----------------------------------------------------------------------


def _sample(fill: float | None = None, shape=(1, 3, 8, 8), dtype=np.float32) -> tuple:
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    if fill is not None:
        x.flat[5] = fill
    return (x,)


@pytest.mark.parametrize(
    ("calibration", "expected"),
    [
        ([_sample(), _sample(np.nan)], r"calibration sample 1, input 'input_0': 1 NaN/Inf values"),
        ([_sample(np.inf)], r"calibration sample 0, input 'input_0': 1 NaN/Inf values"),
        (
            [_sample(shape=(1, 3, 9, 9))],
            r"calibration sample 0: input 'input_0': expected shape \(1, 3, 8, 8\), "
            r"got \(1, 3, 9, 9\)",
        ),
        ([_sample(dtype=np.float64)], r"expected dtype float32, got float64; cast the data"),
        ([], r"calibration data is empty; pass at least one sample per input \['input_0'\]"),
        (None, r"mode 'int8' needs calibration data"),
        ([(*_sample(), *_sample())], r"sample 0 has 2 arrays; the model has 1 inputs"),
    ],
    ids=["nan", "inf", "shape", "dtype", "empty", "missing", "count"],
)
def test_bad_calibration_data(tmp_path: Path, calibration: list | None, expected: str) -> None:
    model, inputs = tiny_cnn()
    with pytest.raises(CalibrationError, match=expected):
        bridge.convert(model, inputs, tmp_path / "out", quantize="int8", calibration=calibration)
    assert not (tmp_path / "out").exists()


def test_calibration_file_that_does_not_exist(tmp_path: Path) -> None:
    model, inputs = tiny_cnn()
    missing = tmp_path / "nope.npy"
    with pytest.raises(CalibrationError, match=r"nope\.npy' does not exist"):
        bridge.convert(model, inputs, tmp_path / "out", quantize="int8", calibration=str(missing))


@pytest.mark.parametrize(
    "files", [{}, {"notes.txt": b"x", "sub/a.png": b""}], ids=["empty", "none"]
)
def test_calibration_folder_without_images(tmp_path: Path, files: dict[str, bytes]) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
    model, inputs = tiny_cnn()
    expected = rf"image folder {re.escape(str(folder))} holds no images \(\.png, \.jpg, "
    with pytest.raises(CalibrationError, match=expected):
        bridge.convert(model, inputs, tmp_path / "out", quantize="int8", calibration=str(folder))
    assert not (tmp_path / "out").exists()


def test_unreadable_calibration_image_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    model, inputs = tiny_cnn()
    with pytest.raises(
        CalibrationError, match=rf"cannot read image {re.escape(str(folder))}/a\.png"
    ):
        bridge.convert(model, inputs, tmp_path / "out", quantize="int8", calibration=str(folder))


def test_corrupt_calibration_npy_is_a_calibration_error(tmp_path: Path) -> None:
    bad = tmp_path / "samples.npy"
    bad.write_bytes(b"not an array")
    model, inputs = tiny_cnn()
    with pytest.raises(CalibrationError, match=r"samples\.npy"):
        bridge.convert(model, inputs, tmp_path / "out", quantize="int8", calibration=str(bad))


# --- example inputs that cannot verify anything -----------------------------------------------


_ZERO_BATCH = """
import sys, torch, bridge
from bridge.errors import ShapeError
from tests.reliability.conftest import tiny_cnn
model, _ = tiny_cnn()
try:
    bridge.convert(model, (torch.zeros(0, 3, 8, 8),), sys.argv[1])
except ShapeError as e:
    sys.exit(f"ShapeError: {e}")
"""


def test_example_input_with_zero_size_dimension(tmp_path: Path) -> None:
    # A child process, so the segfault shows as a failed test, not a dead test run.
    proc = subprocess.run(
        [sys.executable, "-c", _ZERO_BATCH, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert re.search(r"ShapeError: .*example_inputs\[0\].*\(0, 3, 8, 8\)", proc.stderr)


def test_example_input_with_nan(tmp_path: Path) -> None:
    model, _ = tiny_cnn()
    with pytest.raises(ShapeError, match=r"example_inputs\[0\].*NaN"):
        bridge.convert(model, (torch.full((1, 3, 8, 8), float("nan")),), tmp_path / "out")


# --- corrupt or truncated files for `bridge verify` / `bridge inspect` -------------------------


def _damage(data: bytes, how: str) -> bytes:
    if how == "bad-index":  # a well-formed flatbuffer whose input points past the tensors
        from bridge.runtime import tflite_io

        model = tflite_io.load(data)
        model.subgraphs[0].inputs = np.array([10_000], np.int32)
        return tflite_io.save(model)
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "header-only":
        return data[:100]
    if how == "empty":
        return b""
    return bytes(np.random.default_rng(1).integers(0, 256, len(data), dtype=np.uint8))


def test_inspect_refuses_out_of_range_index(
    capsys: pytest.CaptureFixture[str], tiny_converted: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "model.tflite"
    bad.write_bytes(_damage((tiny_converted / "model.tflite").read_bytes(), "bad-index"))
    code, _, err = run_cli(capsys, "inspect", str(bad))
    assert code == cli.EXIT_ERROR
    assert f"bridge: error: {bad}: subgraph 0: tensor index out of range in [10000]" in err


@pytest.mark.parametrize("how", ["truncated", "header-only", "empty", "garbage"])
@pytest.mark.parametrize("name", ["model.tflite", "model.opt.onnx"])
def test_inspect_refuses_damaged_file(
    capsys: pytest.CaptureFixture[str], tiny_converted: Path, tmp_path: Path, name: str, how: str
) -> None:
    bad = tmp_path / name
    bad.write_bytes(_damage((tiny_converted / name).read_bytes(), how))
    code, out, err = run_cli(capsys, "inspect", str(bad))
    assert code == cli.EXIT_ERROR and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("bridge: error:")
    if name.endswith(".onnx"):
        assert f"{bad} is not a valid ONNX model" in err
    else:
        assert f"{bad}: " in err and "TFLite flatbuffer" in err


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _damaged_copy(src: Path, dst: Path, name: str, how: str) -> Path:
    _copy(src, dst)
    (dst / name).write_bytes(_damage((src / name).read_bytes(), how))
    return dst


@pytest.mark.parametrize(
    ("name", "how", "expected"),
    [
        ("model.opt.onnx", "truncated", "model.opt.onnx is not a readable ONNX model"),
        ("model.opt.onnx", "garbage", "model.opt.onnx is not a readable ONNX model"),
        ("model.tflite", "garbage", "model.tflite is not a usable .tflite: not a TFLite"),
        ("model.tflite", "empty", "model.tflite is not a usable .tflite: not a TFLite"),
        ("report.json", "truncated", "report.json is corrupt"),
        ("verify.npz", "truncated", "verify.npz is corrupt"),
        ("verify.npz", "garbage", "verify.npz is corrupt"),
    ],
)
def test_verify_refuses_damaged_folder(
    capsys: pytest.CaptureFixture[str],
    tiny_converted: Path,
    tmp_path: Path,
    name: str,
    how: str,
    expected: str,
) -> None:
    folder = _damaged_copy(tiny_converted, tmp_path / "copy", name, how)
    code, _, err = run_cli(capsys, "verify", str(folder))
    assert code == cli.EXIT_ERROR
    assert err.startswith("bridge: error:") and expected in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("truncated", "model.tflite is not a usable .tflite: corrupt or truncated"),
        ("bad-index", "model.tflite is not a usable .tflite: subgraph 0: tensor index out of"),
    ],
)
def test_verify_of_broken_tflite_does_not_crash(
    tiny_converted: Path, tmp_path: Path, how: str, expected: str
) -> None:
    # LiteRT itself segfaults on these files: run in a child process so a regression shows
    # as a failed test, not a dead test run.
    folder = _damaged_copy(tiny_converted, tmp_path / "copy", "model.tflite", how)
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "-q", "verify", str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == cli.EXIT_ERROR, proc.stderr[-2000:]
    assert expected in proc.stderr


def test_verify_of_missing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "verify", str(tmp_path / "nowhere"))
    assert code == cli.EXIT_ERROR and "report.json not found; is this a bridge output" in err


def test_inspect_of_unknown_or_missing_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "missing.tflite"))
    assert code == cli.EXIT_ERROR and "missing.tflite not found" in err
    (tmp_path / "weights.bin").write_bytes(b"x")
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "weights.bin"))
    assert code == cli.EXIT_ERROR and "unknown file type; expected .tflite or .onnx" in err


# --- the output folder ----------------------------------------------------------------------


def test_unwritable_output_folder(tmp_path: Path) -> None:
    model, inputs = tiny_cnn()
    # /proc refuses new files even to root (a chmod-ed folder does not stop root).
    with pytest.raises(OutputDirError, match=r"cannot write to /proc .*choose a writable output"):
        bridge.convert(model, inputs, "/proc/bridge-out")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputDirError, match="exists and is not a folder; choose another -o"):
        bridge.convert(model, inputs, blocker)


def test_output_folder_under_a_file(tmp_path: Path) -> None:
    model, inputs = tiny_cnn()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    expected = rf"cannot write to {re.escape(str(blocker))} \(Not a directory\); choose a writable"
    with pytest.raises(OutputDirError, match=expected):
        bridge.convert(model, inputs, blocker / "out")
    assert blocker.read_text() == "not a folder"


def test_folder_with_another_model_needs_overwrite(tiny_converted: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_converted, tmp_path / "copy")
    before = snapshot(folder)
    other, inputs = tiny_cnn(seed=1)
    with pytest.raises(OutputDirError) as info:
        bridge.convert(other, inputs, folder)
    assert f"{folder} already holds a different model" in str(info.value)
    assert "pass overwrite=True (--overwrite)" in str(info.value)
    assert snapshot(folder) == before
    # The same model again is not "another model"; overwrite=True replaces a different one.
    same, inputs = tiny_cnn()
    bridge.convert(same, inputs, folder)
    (folder / "model.qdq.onnx").write_bytes(b"left over from an int8 conversion")
    conv = bridge.convert(other, inputs, folder, overwrite=True)
    report = json.loads((folder / "report.json").read_text())
    assert (
        report["fingerprint"]
        == conv.report["fingerprint"]
        != json.loads((tiny_converted / "report.json").read_text())["fingerprint"]
    )
    assert not (folder / "model.qdq.onnx").exists(), "a stale file from another model was kept"


# --- options --------------------------------------------------------------------------------


def test_unknown_option_and_mode(tmp_path: Path) -> None:
    model, inputs = tiny_cnn()
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['nhwc'\]; known: .*nhwc_inputs"):
        bridge.convert(model, inputs, tmp_path / "out", nhwc=True)
    with pytest.raises(ConfigError, match=r"quantize='int4' is not a mode; choose None or one of"):
        bridge.convert(model, inputs, tmp_path / "out", quantize="int4")
    with pytest.raises(ConfigError, match=r"model must be a torch\.nn\.Module, got function"):
        bridge.convert(lambda x: x, inputs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wrong_number_of_names(tmp_path: Path) -> None:
    model, inputs = tiny_cnn()
    with pytest.raises(ConfigError, match=r"2 input names given \(\['a', 'b'\]\) but the model"):
        bridge.convert(model, inputs, tmp_path / "out", input_names=["a", "b"])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"verify_samples": -1}, r"verify_samples must be an integer ≥ 0, got -1"),
        ({"verify_samples": 2.5}, r"verify_samples must be an integer ≥ 0, got 2\.5"),
        ({"opset": 5}, r"opset 5 is not supported: bridge converts with ONNX opset 9 to 23 \("),
        ({"opset": 24}, r"opset 24 is not supported: bridge converts with ONNX opset 9 to 23"),
        ({"observer": "minmx"}, r"unknown observer 'minmx'"),
        ({"io_dtype": "int4"}, r"io_dtype 'int4' is not supported; choose one of"),
        ({"weight_rounding": "ada"}, r"weight_rounding 'ada' is not supported; choose one of"),
        ({"seed": -3}, r"seed must be an integer ≥ 0, got -3"),
        ({"input_names": "image"}, r"input_names must be a list of names, not one string"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(f"{k}={x}" for k, x in v.items()),
)
def test_bad_option_values_are_refused_up_front(
    tmp_path: Path, options: dict, expected: str
) -> None:
    model, inputs = tiny_cnn()
    with pytest.raises(ConfigError, match=expected):
        bridge.convert(model, inputs, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


# --- models and inputs that torch.onnx.export cannot trace as given ---------------------------


def test_example_input_on_meta_device(tmp_path: Path) -> None:
    with pytest.raises(ShapeError) as info:
        bridge.convert(nn.Linear(8, 4), (torch.empty(1, 8, device="meta"),), tmp_path / "out")
    assert "example_inputs[0] is on the meta device, which holds no values" in str(info.value)
    assert "pass real CPU tensors" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_model_weights_on_meta_device(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(8, 4, device="meta"))
    with pytest.raises(ModelLoadError) as info:
        bridge.convert(model, (torch.randn(1, 8),), tmp_path / "out")
    assert "parameter '0.weight' is on the meta device" in str(info.value)
    assert "load the weights" in str(info.value)


def test_script_module_converts_and_verifies(tmp_path: Path) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(8, 4).eval()
    scripted = torch.jit.script(linear)
    x = torch.randn(2, 8)
    conv = bridge.convert(scripted, (x,), tmp_path / "out")
    floor = tolerances.floor("fp32", "torch_vs_tflite")
    sqnr = conv.report["parity"]["torch_vs_tflite"]["output_0"]["sqnr_db"]
    assert conv.passed and sqnr >= floor, conv.report["parity"]
    (got,) = _run_tflite(conv.tflite_path, x.numpy())
    np.testing.assert_allclose(got, linear(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def _run_tflite(path: Path, *arrays: np.ndarray) -> list[np.ndarray]:
    """LiteRT on `path` with `arrays` as its inputs, in order; its outputs in order."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), arrays, strict=True):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


class _HoldsScripted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), torch.jit.script(nn.Linear(8, 4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_scripted_submodule_in_plain_module_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as info:
        bridge.convert(_HoldsScripted(), (torch.randn(1, 8),), tmp_path / "out")
    assert "submodule 'body.1' is a TorchScript module inside a plain nn.Module" in str(info.value)
    assert "torch.jit.script(model)" in str(info.value)
