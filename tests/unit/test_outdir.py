from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge import outdir
from bridge.errors import OutputDirError


def test_refuses_a_folder_holding_another_model(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps({"fingerprint": "aaa"}))
    outdir.check_target(tmp_path, fingerprint="aaa", overwrite=False)
    with pytest.raises(OutputDirError, match=r"already holds a different model.*--overwrite"):
        outdir.check_target(tmp_path, fingerprint="bbb", overwrite=False)
    outdir.check_target(tmp_path, fingerprint="bbb", overwrite=True)


def test_refuses_unwritable() -> None:
    # /proc refuses new files even to root, unlike a chmod-ed folder.
    with pytest.raises(OutputDirError, match="cannot write to /proc"):
        outdir.check_target(Path("/proc/bridge-out"), fingerprint="x", overwrite=False)


def test_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputDirError, match="not a folder"):
        outdir.check_target(f, fingerprint="x", overwrite=False)


def test_staging_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), outdir.staging(target) as tmp:
        (tmp / "model.tflite").write_bytes(b"half")
        raise RuntimeError("crash mid-way")
    assert list(tmp_path.iterdir()) == []


def test_commit_moves_report_last(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with outdir.staging(target) as tmp:
        for n in ("report.json", "model.tflite"):
            (tmp / n).write_text(n)
        placed = outdir.commit(tmp, target, ["report.json", "model.tflite"])
    assert list(placed) == ["model.tflite", "report.json"]
    assert sorted(p.name for p in target.iterdir()) == ["model.tflite", "report.json"]
