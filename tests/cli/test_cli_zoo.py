"""Every zoo model converts through the command line too, in fp32 and fp16, at the floors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge import cli
from bridge.runtime import tolerances
from tests.parity.conftest import zoo_params


@pytest.mark.parametrize("flag", [[], ["--fp16"]], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", zoo_params(pytest))
def test_zoo_model_through_cli(
    name: str, flag: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / name
    assert cli.main(["-q", "convert", f"zoo:{name}", "-o", str(out), *flag]) == cli.EXIT_OK
    printed = capsys.readouterr().out
    assert "FAIL" not in printed and "verified" in printed
    report = json.loads((out / "report.json").read_text())
    mode = report["mode"]
    assert mode == ("fp16" if flag else "fp32")
    for pair in tolerances.pairs(mode):
        for c in report["parity"][pair].values():
            assert c["sqnr_db"] >= tolerances.floor(mode, pair)
