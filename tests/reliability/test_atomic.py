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
from bridge import outdir
from bridge.errors import ParityError
from bridge.runtime import tolerances
from tests.reliability.conftest import snapshot, staging_leftovers, tiny_cnn

REPO = Path(__file__).resolve().parents[2]
MODEL_FILES = ("model.onnx", "model.opt.onnx", "model.tflite", "verify.npz")

#: The child converts tiny_cnn(seed=1) into argv[1] (with overwrite) and stops at argv[2]:
#: "staged" (every file written to the staging folder, nothing committed yet: it prints READY
#: and waits), "pause" (it prints READY and waits 2 s just before commit step argv[3]) or "kill"
#: (it SIGKILLs itself just before commit step argv[3]). The commit steps are the renames and
#: folder removals of the commit, in order, as seen by an audit hook. argv[4] "fallback" takes
#: renameat2 away; "cli" runs `bridge convert` on tiny_cnn (seed 0) instead.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    # Ctrl-C as in a terminal, whatever the test runner's worker left ignored (SIG_IGN is
    # inherited across exec, and Python then never raises KeyboardInterrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import bridge
    from bridge import cli, outdir
    from tests.reliability.conftest import tiny_cnn

    target, phase, step, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    STEPS = ("os.rename", "shutil.rmtree", "bridge.outdir.exchange")
    seen, active = [], []

    def ready(wait):
        print("READY", flush=True)
        time.sleep(wait)

    def hook(event, args):
        if not active or event not in STEPS:
            return
        seen.append(event)
        if len(seen) == step and phase == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if len(seen) == step and phase == "pause":
            ready(2)  # a signal arrives just before this step of the commit

    real_commit = outdir.commit

    def commit(*args, **kwargs):
        if phase == "staged":
            ready(60)  # a signal arrives while everything sits in the staging folder
        active.append(True)
        return real_commit(*args, **kwargs)

    outdir.commit = commit
    sys.addaudithook(hook)
    if how == "fallback":
        outdir._renameat2 = lambda: None
    if how == "cli":
        sys.exit(cli.main(["-q", "convert", "tests.reliability.conftest:tiny_cnn",
                           "-o", target, "--overwrite"]))
    model, inputs = tiny_cnn(seed=1)
    try:
        bridge.convert(model, inputs, target, overwrite=True)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(130)
    print("FINISHED", flush=True)
    """
)


def _child(
    target: Path, phase: str, step: int = 0, how: str = "api", sig: int | None = None
) -> tuple[int, str, str]:
    """Run CHILD, send `sig` once it is READY; returns (exit code, its stdout, its stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target), phase, str(step), how],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = ""
    if sig is not None:
        line = proc.stdout.readline()
        if line.strip() != "READY":
            proc.kill()
            pytest.fail(f"child did not reach {phase}: {line!r} {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err or "KeyboardInterrupt" in err, err[-2000:]
    return proc.returncode, line + out, err


def _which_model(folder: Path, **refs: Path) -> str | None:
    """The name of the reference conversion whose model files and fingerprint `folder` holds."""
    snap = snapshot(folder)
    if "report.json" not in snap:
        return None
    fingerprint = json.loads((folder / "report.json").read_text())["fingerprint"]
    for name, ref in refs.items():
        want = snapshot(ref)
        same = all(snap.get(f) == want[f] for f in MODEL_FILES)
        if same and fingerprint == json.loads((ref / "report.json").read_text())["fingerprint"]:
            return name
    return None


@pytest.fixture
def existing(tiny_converted: Path, tmp_path: Path) -> Path:
    """A folder holding a previous, verified conversion of tiny_cnn(seed=0)."""
    folder = tmp_path / "existing"
    shutil.copytree(tiny_converted, folder)
    return folder


@pytest.fixture(scope="module")
def new_converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What CHILD writes: a verified conversion of tiny_cnn(seed=1)."""
    model, inputs = tiny_cnn(seed=1)
    out = tmp_path_factory.mktemp("tiny1") / "out"
    bridge.convert(model, inputs, out)
    return out


def test_parity_failure_writes_nothing(
    existing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(tolerances.FLOORS["fp32"], "ort_vs_tflite", 500.0)
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
    from bridge.verify import report_files

    def broken(report: dict) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(report_files, "render_markdown", broken)
    before = snapshot(existing)
    model, inputs = tiny_cnn(seed=1)
    with pytest.raises(OSError, match="disk full"):
        bridge.convert(model, inputs, existing, overwrite=True)
    assert snapshot(existing) == before
    assert staging_leftovers(existing, existing.parent) == []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, -15)])
def test_signal_while_staged_leaves_existing_folder_unchanged(
    existing: Path, sig: int, code: int
) -> None:
    before = snapshot(existing)
    got, out, err = _child(existing, "staged", sig=sig)
    assert got == code, out + err[-2000:]
    assert snapshot(existing) == before
    assert staging_leftovers(existing, existing.parent) == []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, -15)])
def test_signal_while_staged_creates_no_folder(tmp_path: Path, sig: int, code: int) -> None:
    target = tmp_path / "fresh" / "out"
    got, out, err = _child(target, "staged", sig=sig)
    assert got == code, out + err[-2000:]
    assert not target.exists() and not target.parent.exists()
    assert staging_leftovers(tmp_path) == []


def test_sigkill_while_staged_leaves_folder_as_it_was_and_next_run_sweeps(
    existing: Path, new_converted: Path
) -> None:
    before = snapshot(existing)
    code, out, err = _child(existing, "staged", sig=signal.SIGKILL)
    assert code == -signal.SIGKILL, out + err[-2000:]
    assert snapshot(existing) == before  # nothing inside the folder
    assert staging_leftovers(existing.parent), "the staging folder should sit beside it"
    model, inputs = tiny_cnn(seed=1)
    bridge.convert(model, inputs, existing, overwrite=True)
    assert staging_leftovers(existing, existing.parent) == []
    assert _which_model(existing, new=new_converted) == "new"


@pytest.mark.parametrize(
    ("how", "step"), [("api", 1), ("api", 2), ("fallback", 1), ("fallback", 2), ("fallback", 3)]
)
def test_sigkill_during_commit_leaves_a_complete_model(
    existing: Path, tiny_converted: Path, new_converted: Path, how: str, step: int
) -> None:
    code, out, err = _child(existing, "kill", step, how)
    assert code == -signal.SIGKILL, out + err[-2000:]
    refs = {"old": tiny_converted, "new": new_converted}
    now = _which_model(existing, **refs)
    # with renameat2 the folder is whole at every instant; the fallback may leave it
    # missing (its old version in a backup) until the next run
    assert now is not None or (how == "fallback" and not existing.exists()), snapshot(existing)
    outdir.check_target(existing, fingerprint="next run", overwrite=True)
    assert _which_model(existing, **refs) == (now or "old")
    assert staging_leftovers(existing, existing.parent) == []


def test_sigint_during_commit_finishes_the_commit(existing: Path) -> None:
    old = json.loads((existing / "report.json").read_text())["fingerprint"]
    code, out, err = _child(existing, "pause", 1, sig=signal.SIGINT)
    assert code == 130 and "INTERRUPTED" in out, out + err[-2000:]  # delivered after the commit
    report = json.loads((existing / "report.json").read_text())
    assert report["fingerprint"] != old and report["passed"]
    assert staging_leftovers(existing, existing.parent) == []
    assert bridge.verify(existing)["passed"]  # the folder is the whole new conversion


def test_sigint_during_commit_is_reported_truthfully(
    tmp_path: Path, tiny_converted: Path, new_converted: Path
) -> None:
    target = tmp_path / "existing"
    shutil.copytree(new_converted, target)
    code, out, err = _child(target, "pause", 1, "cli", sig=signal.SIGINT)
    assert code == 130, out + err[-2000:]
    assert _which_model(target, new=tiny_converted) == "new"
    assert "unchanged" not in err and f"{target} holds the new model" in err, err[-2000:]


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
