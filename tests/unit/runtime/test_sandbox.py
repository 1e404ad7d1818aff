"""A .tflite that crashes LiteRT natively becomes a RuntimeCrashError naming the op, never an abort.

The crashing fixtures are real, found by experiment: an IF operator whose then/else branch is
the main subgraph itself recurses while LiteRT prepares it until the stack overflows (SIGSEGV at
allocate_tensors(), every time); a CALL_ONCE into two subgraphs that CALL_ONCE each other passes
LiteRT's self-call check and recurses the same way at invoke(). Ops before them run fine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bridge import cli
from bridge.contract import IOContract, TensorSpec
from bridge.errors import ModelLoadError, RuntimeCrashError
from bridge.lower import integer, tflite_graph
from bridge.runtime import sandbox, tflite_io
from bridge.runtime.runners import LiteRTRunner
from tests.unit.lower.tflite_models import empty_model

F32 = np.dtype(np.float32)
CONTRACT = IOContract((TensorSpec("x", (1, 8), "float32"),), (TensorSpec("y", (1, 8), "float32"),))


def _model(relus_before: int, *, crash: bool, at: str = "allocate") -> bytes:
    """x ─RELU×n→ a ─IF (or RELU)→ b ─RELU→ y: the op at index n crashes when `crash`, in
    allocate_tensors(); with `at="invoke"`, a CALL_ONCE before the RELU crashes in invoke()."""
    s = tflite_io.schema()
    m = empty_model()
    if crash and at == "invoke":
        return _call_once_cycle(m, relus_before)
    x = prev = tflite_graph.add_tensor(m, "x", [1, 8], F32)
    ops: list[Any] = []
    for i in range(relus_before):
        out = tflite_graph.add_tensor(m, f"r{i}", [1, 8], F32)
        ops.append(tflite_graph.make_op(m, "RELU", [prev], [out]))
        prev = out
    b = tflite_graph.add_tensor(m, "b", [1, 8], F32)
    if crash:
        opts = s.IfOptionsT()
        opts.thenSubgraphIndex = opts.elseSubgraphIndex = 0  # recurses into itself
        cond = tflite_graph.add_tensor(m, "cond", [], np.dtype(np.bool_), data=np.array(True))
        ops.append(tflite_graph.make_op(m, "IF", [cond, prev], [b], options=("IfOptions", opts)))
    else:
        ops.append(tflite_graph.make_op(m, "RELU", [prev], [b]))
    y = tflite_graph.add_tensor(m, "y", [1, 8], F32)
    ops.append(tflite_graph.make_op(m, "RELU", [b], [y]))
    m.subgraphs[0].operators, m.subgraphs[0].inputs, m.subgraphs[0].outputs = ops, [x], [y]
    return tflite_io.save(m)


def _call_once_cycle(m: Any, relus_before: int) -> bytes:
    s = tflite_io.schema()
    for target in (2, 1):  # subgraph 1 calls 2, 2 calls 1
        sg = s.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs = [], [], []
        opts = s.CallOnceOptionsT()
        opts.initSubgraphIndex = target
        sg.operators = [
            tflite_graph.make_op(m, "CALL_ONCE", [], [], options=("CallOnceOptions", opts))
        ]
        m.subgraphs.append(sg)
    x = prev = tflite_graph.add_tensor(m, "x", [1, 8], F32)
    ops: list[Any] = []
    for i in range(relus_before):
        out = tflite_graph.add_tensor(m, f"r{i}", [1, 8], F32)
        ops.append(tflite_graph.make_op(m, "RELU", [prev], [out]))
        prev = out
    opts = s.CallOnceOptionsT()
    opts.initSubgraphIndex = 1
    ops.append(tflite_graph.make_op(m, "CALL_ONCE", [], [], options=("CallOnceOptions", opts)))
    y = tflite_graph.add_tensor(m, "y", [1, 8], F32)
    ops.append(tflite_graph.make_op(m, "RELU", [prev], [y]))
    m.subgraphs[0].operators, m.subgraphs[0].inputs, m.subgraphs[0].outputs = ops, [x], [y]
    return tflite_io.save(m)


def test_crash_in_invoke_is_a_typed_error_naming_the_op() -> None:
    with pytest.raises(RuntimeCrashError) as caught:
        LiteRTRunner(_model(2, crash=True, at="invoke"), CONTRACT)
    err = caught.value
    assert (err.op_index, err.op_type, err.stage) == (2, "CALL_ONCE", "invoke"), str(err)
    assert err.signal == "SIGSEGV" and "while running the .tflite at op #2 CALL_ONCE" in str(err)


@pytest.mark.parametrize("relus_before", [0, 1, 6])
def test_crash_is_a_typed_error_naming_the_op(relus_before: int) -> None:
    with pytest.raises(RuntimeCrashError) as caught:
        LiteRTRunner(_model(relus_before, crash=True), CONTRACT)
    err = caught.value
    assert (err.op_index, err.op_type, err.tensor) == (relus_before, "IF", "b"), str(err)
    assert err.signal == "SIGSEGV" and err.stage == "allocate", str(err)
    msg = str(err)
    assert "\n" not in msg
    assert f"op #{relus_before} IF" in msg and "'b'" in msg and "SIGSEGV" in msg
    assert "different mode" in msg and "file" in msg


def test_healthy_model_is_probed_once_then_runs_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    run_child = sandbox.run_child
    monkeypatch.setattr(sandbox, "run_child", lambda *a, **k: calls.append(1) or run_child(*a, **k))
    data = _model(2, crash=False)
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    out = LiteRTRunner(data, CONTRACT).run({"x": x})
    np.testing.assert_array_equal(out["y"], np.maximum(x, 0))
    assert len(calls) == 1
    LiteRTRunner(data, CONTRACT).run({"x": x})  # the same bytes: no second child
    assert len(calls) == 1


def test_resized_inputs_are_probed_with_the_real_feeds(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    run_child = sandbox.run_child
    monkeypatch.setattr(sandbox, "run_child", lambda *a, **k: calls.append(k) or run_child(*a, **k))
    data = _model(1, crash=False)
    runner = LiteRTRunner(data, CONTRACT)
    x = np.ones((3, 8), np.float32)
    contract = IOContract(
        (TensorSpec("x", (3, 8), "float32"),), (TensorSpec("y", (3, 8), "float32"),)
    )
    runner.contract = runner.tflite_contract = contract
    np.testing.assert_array_equal(runner.run({"x": x})["y"], x)
    assert len(calls) == 2 and calls[1]["feeds"] is not None


@pytest.fixture(scope="module")
def crashing_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real conversion folder (x [1, 8] → relu → y) whose model.tflite is then swapped for the
    crashing one with the same inputs and outputs."""
    import bridge

    out = tmp_path_factory.mktemp("sandbox") / "relu"
    bridge.convert(
        torch.nn.ReLU(), (torch.randn(1, 8),), out, input_names=["x"], output_names=["y"]
    )
    (out / "model.tflite").write_bytes(_model(1, crash=True))
    return out


@pytest.mark.parametrize("command", ["verify", "debug"])
def test_cli_on_a_crashing_folder_prints_one_line(
    command: str, crashing_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["-q", command, str(crashing_folder)])
    _, err = capsys.readouterr()
    assert code == cli.EXIT_ERROR, err
    assert len(err.strip().splitlines()) == 1 and "op #1 IF" in err and "SIGSEGV" in err, err


def test_cli_inspect_describes_a_crashing_folder_without_running_it(
    crashing_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["-q", "inspect", str(crashing_folder)]) == cli.EXIT_OK
    assert "IF" in capsys.readouterr().out


def test_convert_whose_tflite_crashes_raises_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import bridge
    from bridge import api

    lower = api._lower
    monkeypatch.setattr(
        api,
        "_lower",
        lambda *a, **k: dataclasses.replace(lower(*a, **k), data=_model(1, crash=True)),
    )
    out = tmp_path / "relu"
    with pytest.raises(RuntimeCrashError, match=r"op #1 IF \(output tensor 'b'\)"):
        bridge.convert(
            torch.nn.ReLU(), (torch.randn(1, 8),), out, input_names=["x"], output_names=["y"]
        )
    assert not (out / "model.tflite").exists()


def test_abort_message_names_signal_glibc_detail_stage_and_op() -> None:
    result = sandbox.ChildResult(-6, "release", "free(): double free detected in tcache 2")
    site = sandbox.crash_site.CrashSite(17, "UNIDIRECTIONAL_SEQUENCE_LSTM", "lstm_1/h")
    msg = sandbox.crash_message(result, site)
    assert result.crashed and result.how == "SIGABRT"
    assert msg.startswith(
        "LiteRT crashed (SIGABRT) [free(): double free detected in tcache 2] while releasing the "
        ".tflite at op #17 UNIDIRECTIONAL_SEQUENCE_LSTM (output tensor 'lstm_1/h')"
    ), msg
    assert not sandbox.ChildResult(3, "allocate", "").crashed  # a Python error: reported in-process
    assert sandbox.ChildResult(None, "invoke", "").how.startswith("no answer within")


def test_missing_or_garbage_file_is_still_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"missing\.tflite"):
        LiteRTRunner(tmp_path / "missing.tflite", CONTRACT)
    with pytest.raises(ModelLoadError, match="LiteRT cannot load"):
        LiteRTRunner(b"TFL3 is not enough", CONTRACT)


def test_a_crash_kills_only_the_forked_child_not_the_zygote() -> None:
    from bridge.runtime import zygote

    with pytest.raises(RuntimeCrashError):
        LiteRTRunner(_model(3, crash=True), CONTRACT)
    server = zygote._ZYGOTE
    assert server is not None and server.proc.poll() is None
    x = np.ones((1, 8), np.float32)
    np.testing.assert_array_equal(
        LiteRTRunner(_model(3, crash=False), CONTRACT).run({"x": x})["y"], x
    )
    assert zygote._ZYGOTE is server and server.proc.poll() is None


def test_without_a_zygote_a_one_shot_child_still_catches_the_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bridge.runtime import zygote

    def broken(*args: Any, **kwargs: Any) -> int:
        raise zygote.ZygoteError("cannot fork here")

    monkeypatch.setattr(zygote, "run", broken)
    with pytest.raises(RuntimeCrashError) as caught:
        LiteRTRunner(_model(4, crash=True, at="invoke"), CONTRACT)
    assert (caught.value.op_index, caught.value.stage) == (4, "invoke"), str(caught.value)


def test_the_lowerings_own_load_check_is_sandboxed_too() -> None:
    """integer._load_check loads every integer model before verification: a crash there is typed."""
    with pytest.raises(RuntimeCrashError) as caught:
        integer._load_check(_model(1, crash=True))
    assert (caught.value.op_index, caught.value.op_type) == (1, "IF"), str(caught.value)
