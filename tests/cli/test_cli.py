"""The command line: exit codes, one-line errors, the parity table, verify and inspect."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge import cli
from bridge.runtime import tolerances


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["-q", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "digits"
    assert cli.main(["-q", "convert", "zoo:digits_cnn", "-o", str(out)]) == cli.EXIT_OK
    return out


def test_convert_prints_parity_table(converted: Path) -> None:
    report = json.loads((converted / "report.json").read_text())
    assert report["passed"] and report["model"] == "digits_cnn"
    assert {"torch_vs_ort", "ort_vs_tflite", "torch_vs_tflite"} <= set(report["parity"])
    assert (converted / "model.tflite").exists() and (converted / "model.opt.onnx").exists()


def test_convert_output_lists_pairs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "convert", "zoo:digits_cnn", "-o", str(tmp_path / "d"), "--fp16")
    assert code == cli.EXIT_OK
    assert "torch ⇄ tflite" in out and "PASS" in out and "FAIL" not in out
    assert "[fp16, NCHW]" in out


def test_verify_and_inspect(capsys: pytest.CaptureFixture[str], converted: Path) -> None:
    code, out, _ = run(capsys, "verify", str(converted))
    assert code == cli.EXIT_OK and "ort ⇄ tflite" in out and "verified" in out
    code, out, _ = run(capsys, "inspect", str(converted / "model.tflite"))
    assert code == cli.EXIT_OK and "CONV_2D" in out and "input image: [1, 1, 28, 28]" in out
    code, out, _ = run(capsys, "inspect", str(converted / "model.opt.onnx"))
    assert code == cli.EXIT_OK and "ONNX opset" in out
    code, out, _ = run(capsys, "inspect", str(converted))  # the folder: its model.tflite
    assert code == cli.EXIT_OK and "CONV_2D" in out


def test_corrupt_tflite_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], converted: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes((converted / "model.tflite").read_bytes()[:200])
    code, _, err = run(capsys, "inspect", str(bad))
    assert code == cli.EXIT_ERROR
    assert (err.startswith("bridge: error:") and "bad.tflite" not in err) or "TFLite" in err
    assert len(err.strip().splitlines()) == 1


def test_parity_failure_exits_3_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(tolerances.FLOORS["fp32"], "torch_vs_tflite", 1000.0)
    out = tmp_path / "never"
    code, _, err = run(capsys, "convert", "zoo:digits_cnn", "-o", str(out))
    assert code == cli.EXIT_PARITY
    assert "torch_vs_tflite" in err and "nothing was written" in err and "FAIL" in err
    assert not out.exists() or not any(out.iterdir())


def test_factory_module_and_input_flags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tinynet.py").write_text(
        textwrap.dedent("""
        import torch
        def build():
            return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    """)
    )
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "convert", "tinynet:build", "-o", "o1")
    assert code == cli.EXIT_ERROR and "--input" in err
    code, _, err = run(capsys, "convert", "tinynet:build", "--input", "x:1xq", "-o", "o1")
    assert code == cli.EXIT_ERROR and "1xq" in err
    code, out, _ = run(
        capsys, "convert", "tinynet:build", "--input", "x:2x8", "--output-name", "y", "-o", "o1"
    )
    assert code == cli.EXIT_OK and "PASS" in out
    code, _, err = run(capsys, "convert", "nosuchmodule:build", "-o", "o2")
    assert code == cli.EXIT_ERROR and "nosuchmodule" in err


def test_refuses_folder_with_other_model(
    capsys: pytest.CaptureFixture[str], converted: Path
) -> None:
    code, _, err = run(capsys, "convert", "zoo:kws_conv1d", "-o", str(converted))
    assert code == cli.EXIT_ERROR and "--overwrite" in err


def test_console_script_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "convert"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == cli.EXIT_USAGE and "-o/--output" in proc.stderr


def test_output_path_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "model.tflite"
    blocker.write_bytes(b"someone else's file")
    code, out, err = run(capsys, "convert", "zoo:digits_cnn", "-o", str(blocker))
    assert code == cli.EXIT_ERROR and out == ""
    assert (
        err
        == f"bridge: error: output path {blocker} exists and is not a folder; choose another -o\n"
    )
    assert blocker.read_bytes() == b"someone else's file"


def test_calibration_folder_without_images(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "labels.csv").write_text("a,1\n")
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "convert", "zoo:digits_cnn", "-o", str(out), "--quantize", "int8",
        "--calibration", str(images),
    )  # fmt: skip
    assert code == cli.EXIT_ERROR and len(err.strip().splitlines()) == 1
    assert f"bridge: error: image folder {images} holds no images (.png, .jpg" in err
    assert not out.exists()


def test_verify_of_a_file_instead_of_a_folder(
    capsys: pytest.CaptureFixture[str], converted: Path
) -> None:
    code, _, err = run(capsys, "verify", str(converted / "model.tflite"))
    assert code == cli.EXIT_ERROR and "is not a folder" in err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((), {"weight_rounding": "gptq", "equalize": True, "bias_correction": True}),
        (
            ("--weight-rounding", "nearest", "--no-equalize", "--no-bias-correction"),
            {"weight_rounding": "nearest", "equalize": False, "bias_correction": False},
        ),
    ],
)
def test_quantization_flags_reach_the_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: tuple[str, ...], expected: dict
) -> None:
    out = tmp_path / "int8"
    argv = ["convert", "zoo:digits_cnn", "-o", str(out), "--quantize", "int8"]
    code, _, err = run(capsys, *argv, "--calibration", "random:16", *flags)
    assert code == cli.EXIT_OK, err
    config = json.loads((out / "report.json").read_text())["quantization"]["config"]
    assert {k: config[k] for k in expected} == expected
    factors = json.loads((out / "report.json").read_text())["quantization"].get("equalization")
    assert bool(factors) is expected["equalize"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "def build():\n    raise ValueError('no weights at /data/w.pt')\n",
            "cannot build {mod}:build: ValueError: no weights at /data/w.pt",
        ),
        (
            "raise RuntimeError('CUDA not available')\ndef build(): pass\n",
            "cannot build {mod}:build: RuntimeError: CUDA not available",
        ),
        ("def build(:\n    pass\n", "cannot build {mod}:build: SyntaxError: invalid syntax"),
    ],
    ids=["factory-raises", "import-raises", "syntax-error"],
)
def test_factory_that_fails_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    source: str,
    expected: str,
) -> None:
    mod = "broken_" + request.node.callspec.id.replace("-", "_")
    (tmp_path / f"{mod}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "convert", f"{mod}:build", "--input", "x:1x8", "-o", "o")
    assert code == cli.EXIT_ERROR and out == ""
    assert err.startswith(f"bridge: error: {expected.format(mod=mod)}"), err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_data_dependent_branch_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "branchy.py").write_text(
        textwrap.dedent("""
        import torch
        class Net(torch.nn.Module):
            def forward(self, x):
                if x.max() > 6.0:
                    return x.clamp(max=6.0)
                return x * 2
        def build():
            return Net()
    """)
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "convert", "branchy:build", "--input", "x:1x8", "-o", "o")
    assert code == cli.EXIT_ERROR and out == "", err
    assert len(err.strip().splitlines()) == 1, err
    assert f"into a Python bool at {tmp_path / 'branchy.py'}:5 (`if x.max() > 6.0:`)" in err
    assert not (tmp_path / "o").exists()
