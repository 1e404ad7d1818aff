"""verify.report_files: a conversion's files, verify.npz and the three reports staged and
swapped in at once; report.json holds numpy values as plain JSON; a folder holding a different
model is refused and left as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.errors import OutputDirError
from bridge.outdir import FILES
from bridge.verify.report_files import commit_folder, json_default, write_reports


def _report(fingerprint: str = "f1") -> dict[str, Any]:
    return {
        "fingerprint": fingerprint,
        "model": "Tiny",
        "mode": "fp32",
        "layout": "nchw",
        "passed": True,
        "scale": np.float32(0.5),
        "shape": np.array([1, 8]),
        "path": Path("/x/model.tflite"),
    }


def _write(tmp: Path) -> list[str]:
    (tmp / FILES["tflite"]).write_bytes(b"TFL3 stand-in")
    return [FILES["tflite"]]


def test_json_default_converts_numpy_and_paths() -> None:
    assert json_default(np.array([[1, 2]])) == [[1, 2]]
    assert json_default(np.int64(7)) == 7 and isinstance(json_default(np.int64(7)), int)
    assert json_default(Path("a/b")) == "a/b"
    with pytest.raises(TypeError, match="not JSON-serialisable: set"):
        json_default({1})


def test_write_reports_writes_three_files_report_json_last(tmp_path: Path) -> None:
    names = write_reports(tmp_path, _report())
    assert names == [FILES["markdown"], FILES["html"], FILES["report"]]
    data = json.loads((tmp_path / FILES["report"]).read_text())
    assert data["scale"] == 0.5 and data["shape"] == [1, 8] and data["path"] == "/x/model.tflite"
    assert (tmp_path / FILES["markdown"]).read_text().startswith("# bridge report: Tiny [fp32")
    assert (tmp_path / FILES["html"]).read_text().lstrip().lower().startswith("<!doctype html")


def test_commit_folder_swaps_everything_in_and_keeps_user_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / FILES["onnx"]).write_text("stale export")
    samples = {"x/0": np.arange(4, dtype=np.float32)}
    paths = commit_folder(out, _report(), write=_write, samples=samples, overwrite=True)
    assert list(paths)[-1] == FILES["report"]
    assert set(paths) == {FILES[k] for k in ("tflite", "samples", "markdown", "html", "report")}
    assert all(p.parent == out and p.is_file() for p in paths.values())
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / FILES["onnx"]).exists()  # a bridge file the new run did not write
    with np.load(out / FILES["samples"]) as z:
        np.testing.assert_array_equal(z["x/0"], samples["x/0"])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left


def test_commit_folder_refuses_a_folder_holding_another_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    commit_folder(out, _report("f1"), write=_write, samples={}, overwrite=False)
    before = (out / FILES["report"]).read_text()
    with pytest.raises(OutputDirError, match="already holds a different model"):
        commit_folder(out, _report("f2"), write=_write, samples={}, overwrite=False)
    assert (out / FILES["report"]).read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    commit_folder(out, _report("f2"), write=_write, samples={}, overwrite=True)
    assert json.loads((out / FILES["report"]).read_text())["fingerprint"] == "f2"
