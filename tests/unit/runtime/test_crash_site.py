"""runtime.crash_site: copies of a .tflite truncated after op k, and the bisection that finds
the first op whose copy crashes in about log2(ops) runs (the predicate stands in for LiteRT)."""

from __future__ import annotations

import math

import numpy as np

from bridge.runtime import tflite_io
from bridge.runtime.crash_site import CrashSite, locate, site, truncated
from tests.unit.runtime.tiny_tflite import relu_chain

N = 12


def _ops(data: bytes) -> int:
    return len(tflite_io.load(data).subgraphs[0].operators)


def _output_name(data: bytes) -> str:
    sg = tflite_io.load(data).subgraphs[0]
    return tflite_io.tensor_name(sg.tensors[int(sg.outputs[0])])


def test_truncated_keeps_ops_up_to_k_and_outputs_op_k() -> None:
    model = tflite_io.load(relu_chain(N))
    cut = truncated(model, 4)
    assert _ops(cut) == 5 and _output_name(cut) == "r4"
    sg = model.subgraphs[0]
    assert len(sg.operators) == N and list(sg.outputs) == [N]  # the model is left unchanged
    assert tflite_io.tensor_name(sg.tensors[int(sg.outputs[0])]) == f"r{N - 1}"


def test_truncated_copy_runs_and_equals_the_chain_up_to_there() -> None:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=truncated(tflite_io.load(relu_chain(N)), 2))
    interp.allocate_tensors()
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_array_equal(got, np.maximum(x, 0))


def test_locate_finds_the_first_crashing_op_in_log2_runs() -> None:
    for bad in (0, 5, N - 1):
        runs: list[int] = []

        def crashes(data: bytes, bad: int = bad, runs: list[int] = runs) -> bool:
            runs.append(_ops(data))
            return _ops(data) > bad

        assert locate(relu_chain(N), crashes) == CrashSite(bad, "RELU", f"r{bad}")
        assert runs[0] == N  # the whole graph first
        assert len(runs) <= 1 + math.ceil(math.log2(N))


def test_locate_gives_none_when_nothing_to_blame() -> None:
    assert locate(relu_chain(N), lambda data: False) is None
    assert locate(b"not a flatbuffer", lambda data: True) is None
    assert locate(relu_chain(0), lambda data: True) is None


def test_site_names_op_type_and_first_output() -> None:
    model = tflite_io.load(relu_chain(3))
    assert site(model, 1) == CrashSite(1, "RELU", "r1")
    model.subgraphs[0].operators[2].outputs = np.asarray([-1], np.int32)
    assert site(model, 2) == CrashSite(2, "RELU", None)
