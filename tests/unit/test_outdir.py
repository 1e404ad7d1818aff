from __future__ import annotations

import fcntl
import json
import os
import sys
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


def _bridge_files(target: Path) -> None:
    target.mkdir()
    for n, text in (("report.json", json.dumps({"fingerprint": "old"})), ("model.onnx", "old")):
        (target / n).write_text(text)


def _commit_new(target: Path, **kwargs: object) -> dict[str, Path]:
    with outdir.staging(target) as tmp:
        (tmp / "report.json").write_text(json.dumps({"fingerprint": "new"}))
        (tmp / "model.tflite").write_text("new")
        return outdir.commit(
            tmp, target, ["model.tflite", "report.json"], replaces=BRIDGE_FILES, **kwargs
        )


BRIDGE_FILES = ("report.json", "model.onnx", "model.tflite")


def test_staging_sits_beside_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    _bridge_files(target)
    with outdir.staging(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bridge-staging-")
        assert sorted(os.listdir(target)) == ["model.onnx", "report.json"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_commit_replaces_bridge_files_and_keeps_the_users(tmp_path: Path) -> None:
    target = tmp_path / "out"
    _bridge_files(target)
    (target / "notes.txt").write_text("mine")
    (target / "data").mkdir()
    (target / "data" / "x.bin").write_text("mine too")
    (target / ".bridge-staging-old").mkdir()  # left inside by an older bridge
    _commit_new(target)
    assert sorted(os.listdir(target)) == ["data", "model.tflite", "notes.txt", "report.json"]
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "data" / "x.bin").read_text() == "mine too"
    assert json.loads((target / "report.json").read_text())["fingerprint"] == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_commit_swaps_the_folder_in_one_rename(tmp_path: Path) -> None:
    target = tmp_path / "out"
    _bridge_files(target)
    events: list[str] = []
    hook_on = [True]

    def hook(event: str, args: tuple) -> None:
        inside = str(args[0]).startswith(f"{target}/") if args else False
        if hook_on[0] and (event == "bridge.outdir.exchange" or inside):
            events.append(event)

    sys.addaudithook(hook)
    try:
        _commit_new(target)
    finally:
        hook_on[0] = False
    # no file inside the folder is removed or replaced: it is exchanged whole
    assert [e for e in events if e in ("os.rename", "os.remove", "bridge.outdir.exchange")] == [
        "bridge.outdir.exchange"
    ], events


def test_commit_falls_back_to_a_backup_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outdir, "_renameat2", lambda: None)
    target = tmp_path / "out"
    _bridge_files(target)
    _commit_new(target)
    assert json.loads((target / "report.json").read_text())["fingerprint"] == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_commit_rechecks_the_target_under_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "out"
    refused = pytest.raises(OutputDirError, match=r"already holds a different model")
    with refused, outdir.staging(target) as tmp:
        (tmp / "report.json").write_text(json.dumps({"fingerprint": "new"}))
        _bridge_files(target)  # another conversion committed meanwhile
        outdir.commit(tmp, target, ["report.json"], fingerprint="new", overwrite=False)
    assert json.loads((target / "report.json").read_text())["fingerprint"] == "old"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_sweep_removes_dead_staging_and_restores_a_lost_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    _bridge_files(target)
    backup = tmp_path / ".out.bridge-backup-999999-abc"
    target.rename(backup)  # a fallback commit died between its two renames
    dead = tmp_path / ".out.bridge-staging-999999-def"
    dead.mkdir()
    live = tmp_path / ".out.bridge-staging-1-ghi"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a conversion still staging here
        outdir.check_target(target, fingerprint="old", overwrite=False)
        assert sorted(os.listdir(tmp_path)) == [live.name, "out"]
    finally:
        os.close(fd)
    assert json.loads((target / "report.json").read_text())["fingerprint"] == "old"


def test_refuses_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path / "out")
    for path in (Path("."), Path("..")):
        with pytest.raises(OutputDirError, match="current folder"):
            outdir.check_target(path, fingerprint="x", overwrite=True)
