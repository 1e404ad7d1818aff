"""`bridge convert MODULE:FACTORY --qat -o OUT`: a trained FX or PT2E QAT model → int8 .tflite
with its learned scales, or a one-line refusal."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bridge.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main

FACTORIES = textwrap.dedent(
    """
    import torch
    from bridge import qat_qconfig_mapping
    from tests.unit.importqdq.test_qat import TinyCnn, _qat, _synthetic

    def fx():
        x, y = _synthetic(256)
        return _qat(qat_qconfig_mapping(), x, y, steps=20), (torch.from_numpy(x[:1]),)

    def pt2e():
        from tests.unit.importqdq.test_qat_pt2e import _pt2e
        x, y = _synthetic(256)
        return _pt2e(TinyCnn(), x, y, steps=20), (torch.from_numpy(x[:1]),)

    def plain():
        return TinyCnn(), (torch.zeros(1, 1, 28, 28),)
    """
)


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> str:
    """A module of QAT factories in the current directory; returns its (unique) name."""
    name = f"qatnets_{request.node.name.split('[')[0]}"
    (tmp_path / f"{name}.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)
    return name


@pytest.mark.parametrize("kind", ["fx", "pt2e"])
def test_qat_flag_converts_with_learned_scales(
    kind: str, factories: str, tmp_path: Path, capsys
) -> None:
    if kind == "pt2e":
        pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")
    out = tmp_path / "out"
    argv = ["-q", "convert", f"{factories}:{kind}", "--qat", "-o", str(out)]
    argv += ["--output-name", "logits"]
    assert main(argv) == EXIT_OK, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "PASS" in printed and "FAIL" not in printed and "[int8, NCHW]" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["qat"]
    assert report["parity"]["fakequant_vs_tflite"]["logits"]["passed"]
    assert report["source"]["path"].startswith(f"torch {kind.upper()} QAT model")


def test_qat_flag_on_a_float_model_is_one_line(factories: str, tmp_path: Path, capsys) -> None:
    argv = ["-q", "convert", f"{factories}:plain", "--qat", "-o", str(tmp_path / "o")]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("bridge: error: TinyCnn is not a QAT model") and "\n" not in err
    assert "prepare_qat_fx" in err and "prepare_qat_pt2e" in err
    assert not (tmp_path / "o").exists()


def test_qat_flag_excludes_other_modes(factories: str, tmp_path: Path, capsys) -> None:
    argv = ["convert", f"{factories}:fx", "--qat", "--quantize", "int8", "-o", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err
