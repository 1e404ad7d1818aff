"""Outputs are all-or-nothing: a failed parity check, a crash or a Ctrl-C leaves the output
folder as it was, and every model file that is written passed its parity check."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import bridge
from bridge.errors import ParityError
from bridge.verify import tolerances
from tests.reliability.conftest import snapshot, staging_leftovers, tiny_cnn

REPO = Path(__file__).resolve().parents[2]

#: The child converts tiny_cnn(seed=1) into argv[1] and stops at argv[2]:
#: "staged" (every file written to the staging folder, nothing committed yet) or "commit"
#: (two files already renamed into place). It prints READY there and waits for SIGINT.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    # Ctrl-C as in a terminal, whatever the test runner's worker left ignored (SIG_IGN is
    # inherited across exec, and Python then never raises KeyboardInterrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import bridge
    from bridge import outdir
    from tests.reliability.conftest import tiny_cnn

    target, phase = sys.argv[1], sys.argv[2]

    def ready(wait):
        print("READY", flush=True)
        time.sleep(wait)

    if phase == "staged":
        real_commit = outdir.commit

        def commit(*args, **kwargs):
            ready(60)  # SIGINT arrives while everything sits in the staging folder
            return real_commit(*args, **kwargs)

        outdir.commit = commit
    else:
        real_replace, moved = os.replace, []

        def replace(src, dst):
            real_replace(src, dst)
            moved.append(dst)
            if len(moved) == 2:
                ready(2)  # SIGINT arrives half-way through the renames

        os.replace = replace
    model, inputs = tiny_cnn(seed=1)
    try:
        bridge.convert(model, inputs, target, overwrite=True)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(130)
    print("FINISHED", flush=True)
    """
)


def _interrupt(target: Path, phase: str) -> tuple[int, str]:
    """Run CHILD, send SIGINT once it is READY; returns (exit code, its stdout)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target), phase],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        pytest.fail(f"child did not reach {phase}: {line!r} {proc.communicate()[1][-2000:]}")
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err or "KeyboardInterrupt" in err, err[-2000:]
    return proc.returncode, line + out


@pytest.fixture
def existing(tiny_converted: Path, tmp_path: Path) -> Path:
    """A folder holding a previous, verified conversion of tiny_cnn(seed=0)."""
    folder = tmp_path / "existing"
    shutil.copytree(tiny_converted, folder)
    return folder


def test_parity_failure_writes_nothing(
    existing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        tolerances.FLOORS, "fp32", {**tolerances.FLOORS["fp32"], "ort_vs_tflite": 500.0}
    )
    model, inputs = tiny_cnn(seed=1)
    before = snapshot(existing)
    for target in (tmp_path / "new" / "out", existing):
        with pytest.raises(ParityError) as info:
            bridge.convert(model, inputs, target, overwrite=True)
        report = info.value.report
        assert not report["passed"] and report["parity"]["ort_vs_tflite"]["output_0"]["sqnr_db"]
        assert "nothing was written" in str(info.value) and "ort_vs_tflite" in str(info.value)
    assert not (tmp_path / "new").exists()
    assert snapshot(existing) == before
    assert staging_leftovers(existing, tmp_path) == []


def test_crash_while_writing_leaves_folder_as_it_was(
    existing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.verify import report as report_module

    def broken(report: dict) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(report_module, "render_markdown", broken)
    before = snapshot(existing)
    model, inputs = tiny_cnn(seed=1)
    with pytest.raises(OSError, match="disk full"):
        bridge.convert(model, inputs, existing, overwrite=True)
    assert snapshot(existing) == before
    assert staging_leftovers(existing) == []


def test_sigint_while_staged_leaves_existing_folder_unchanged(existing: Path) -> None:
    before = snapshot(existing)
    code, out = _interrupt(existing, "staged")
    assert code == 130 and "INTERRUPTED" in out, out
    assert snapshot(existing) == before
    assert staging_leftovers(existing) == []


def test_sigint_while_staged_creates_no_folder(tmp_path: Path) -> None:
    target = tmp_path / "fresh" / "out"
    code, out = _interrupt(target, "staged")
    assert code == 130 and "INTERRUPTED" in out, out
    assert not target.exists()
    assert staging_leftovers(tmp_path, tmp_path / "fresh") == []


def test_sigint_during_commit_finishes_the_commit(existing: Path) -> None:
    old = json.loads((existing / "report.json").read_text())["fingerprint"]
    code, out = _interrupt(existing, "commit")
    assert code == 130 and "INTERRUPTED" in out, out  # delivered after the commit
    report = json.loads((existing / "report.json").read_text())
    assert report["fingerprint"] != old and report["passed"]
    assert staging_leftovers(existing) == []
    assert bridge.verify(existing)["passed"]  # the folder is the whole new conversion


def test_every_written_model_file_was_verified(tiny_converted: Path, tmp_path: Path) -> None:
    report = json.loads((tiny_converted / "report.json").read_text())
    # model.opt.onnx ⇄ torch and ⇄ tflite; model.onnx ⇄ model.opt.onnx through each pass.
    assert set(report["parity"]) == {"torch_vs_ort", "ort_vs_tflite", "torch_vs_tflite"}
    for entry in report["passes"]:
        if entry["count"]:
            assert entry["min_sqnr_db"] >= tolerances.PASS_MIN_SQNR_DB, entry
    # "dynamic" quantizes weights in a QDQ model that no runtime pair checks: not written.
    model, inputs = tiny_cnn()
    conv = bridge.convert(model, inputs, tmp_path / "dyn", quantize="dynamic")
    assert conv.qdq_path is None and not (tmp_path / "dyn" / "model.qdq.onnx").exists()
    assert conv.passed and (tmp_path / "dyn" / "model.tflite").exists()
