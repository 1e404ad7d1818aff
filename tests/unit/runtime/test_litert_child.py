"""runtime.litert_child: the sandbox's child loads, allocates and invokes a .tflite, announcing
each stage; seeded feeds of the declared shapes and dtypes; stored samples in numeric order;
a Python-level LiteRT error exits EXIT_ERROR; the --serve zygote forks one child per request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bridge.runtime import litert_child
from bridge.runtime.litert_child import EXIT_ERROR, INVOKES, main, random_feeds, stored_feeds
from tests.unit.runtime.tiny_tflite import relu_chain


def _detail(index: int, shape: list[int], dtype: type) -> dict:
    return {"index": index, "shape": np.array(shape), "dtype": dtype}


def test_random_feeds_fit_each_declared_dtype_and_shape() -> None:
    details = [
        _detail(0, [1, 3], np.float32),
        _detail(1, [2, -1], np.int8),
        _detail(2, [4], np.int64),
        _detail(3, [0], np.bool_),
        _detail(4, [64], np.uint8),
    ]
    feeds = random_feeds(details)
    assert {i: (f.shape, f.dtype) for i, f in feeds.items()} == {
        0: ((1, 3), np.float32),
        1: ((2, 1), np.int8),  # unknown and zero dims become 1
        2: ((4,), np.int64),
        3: ((1,), np.bool_),
        4: ((64,), np.uint8),
    }
    assert not np.any(feeds[2]) and not np.any(feeds[3])  # zero ids and masks are always valid
    assert feeds[4].max() > 127  # the whole uint8 range, not only int8's
    again = random_feeds(details)
    assert all(np.array_equal(feeds[i], again[i]) for i in feeds)


def test_stored_feeds_are_in_numeric_sample_order(tmp_path: Path) -> None:
    path = tmp_path / "feeds.npz"
    np.savez(path, **{"10/0": np.full(2, 10.0), "2/0": np.full(2, 2.0), "2/1": np.zeros(1)})
    samples = stored_feeds(str(path))
    assert [s[0][0] for s in samples] == [2.0, 10.0]
    assert sorted(samples[0]) == [0, 1] and sorted(samples[1]) == [0]


def test_main_runs_every_stage_on_stored_and_random_feeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(relu_chain(2))
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, **{"0/0": np.ones((1, 8), np.float32), "1/0": np.ones((3, 8), np.float32)})
    assert main([str(model), str(feeds), "1", "0"]) == 0
    stages = capsys.readouterr().out.split()[1::2]
    # sample 1 has batch 3: the input is resized and allocated again
    assert stages == ["load", "allocate"] + ["invoke"] * INVOKES + ["allocate"] + [
        "invoke"
    ] * INVOKES + ["release"]
    assert main([str(model), "-", "1", "1"]) == 0


def test_a_python_level_litert_error_exits_exit_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "missing.tflite"), "-", "1", "0"]) == EXIT_ERROR
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "stage load" and out[1].startswith("error ValueError: ")


def test_serve_forks_a_child_per_request_and_reports_its_status(tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(relu_chain(1))
    requests = [
        {"argv": [str(m), "-", "1", "0"], "out": str(tmp_path / f"{k}.out"), "err": os.devnull}
        for m, k in ((model, "a"), (tmp_path / "nope", "b"))
    ]
    proc = subprocess.run(
        [sys.executable, litert_child.__file__, "--serve"],
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [list(a) for a in answers] == [["pid"], ["status"], ["pid"], ["status"]]
    assert [answers[1]["status"], answers[3]["status"]] == [0, EXIT_ERROR]
    assert (tmp_path / "a.out").read_text().split()[-1] == "release"
    assert "error " in (tmp_path / "b.out").read_text()
