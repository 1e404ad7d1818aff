"""Two conversions in parallel processes, into different folders, do not interfere: both
succeed, share no temporary paths (a shared TMPDIR is left empty) and give identical files.
Into one folder, without overwrite, exactly one of two different models is written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import bridge
from bridge import cli
from tests.reliability.conftest import snapshot, staging_leftovers

REPO = Path(__file__).resolve().parents[2]
MODEL_FILES = ("model.onnx", "model.opt.onnx", "model.tflite", "verify.npz")


def test_parallel_conversions_do_not_interfere(tmp_path: Path) -> None:
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(shared_tmp)}
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "-q", "convert", "zoo:digits_cnn", "-o", str(o)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for o in outs
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == cli.EXIT_OK, err[-2000:]
    a, b = (snapshot(o) for o in outs)
    for name in MODEL_FILES:
        assert a[name] == b[name], f"{name} differs between the two parallel conversions"
    assert sorted(os.listdir(shared_tmp)) == [], "temporary files were left behind"
    assert staging_leftovers(tmp_path, *outs) == []


#: Converts tiny_cnn(seed=argv[2]) into argv[1] without overwrite; prints READY once its files
#: are staged and waits for a line on stdin before committing; prints the fingerprint written.
RACER = textwrap.dedent(
    """
    import sys
    import bridge
    from bridge import outdir
    from bridge.errors import BridgeError
    from tests.reliability.conftest import tiny_cnn

    real_commit = outdir.commit

    def commit(*args, **kwargs):
        print("READY", flush=True)
        sys.stdin.readline()
        return real_commit(*args, **kwargs)

    outdir.commit = commit
    model, inputs = tiny_cnn(seed=int(sys.argv[2]))
    try:
        result = bridge.convert(model, inputs, sys.argv[1])
    except BridgeError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(result.report["fingerprint"], flush=True)
    """
)


def test_two_models_into_one_folder_one_wins(tmp_path: Path) -> None:
    target = tmp_path / "out"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(target), seed],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("0", "1")
    ]
    for p in procs:  # both passed check_target and staged their files
        assert p.stdout is not None and p.stdout.readline().strip() == "READY"
    results = [p.communicate("go\n", timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], results
    (winner_out, _), (_, loser_err) = sorted(
        results, key=lambda r: r[0].strip() == "", reverse=False
    )
    assert "OutputDirError" in loser_err and "already holds a different model" in loser_err
    report = json.loads((target / "report.json").read_text())
    onnx_bytes = (target / "model.onnx").read_bytes()
    assert report["fingerprint"] == winner_out.strip()
    assert hashlib.sha256(onnx_bytes).hexdigest()[:16] == report["fingerprint"]
    assert bridge.verify(target)["passed"]
    assert staging_leftovers(tmp_path, target) == []
