"""Two conversions in parallel processes, into different folders, do not interfere: both
succeed, share no temporary paths (a shared TMPDIR is left empty) and give identical files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bridge import cli
from tests.reliability.conftest import snapshot

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
    assert not list(tmp_path.glob("**/.bridge-staging-*"))
