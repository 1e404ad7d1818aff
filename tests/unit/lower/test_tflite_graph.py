"""tflite_graph, the lowering's one TFLite editor: `Graph` queries, added tensors and ops that
LiteRT runs, opcode reuse, rewiring, and pruning of what became unused."""

from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from bridge.lower import tflite_graph
from bridge.lower.tflite_graph import quantization
from bridge.runtime import tflite_io
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB
from tests.unit.lower.graph_builders import F32, add_op, new_graph, op_types, run

RNG = np.random.default_rng(0)
W = RNG.standard_normal((3, 4)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)
X = RNG.standard_normal((2, 4)).astype(np.float32)


def _linear():
    """x [2,4] ─FULLY_CONNECTED(W, b)→ y [2,3]."""
    g = new_graph()
    x = g.add_tensor("x", [2, 4], F32)
    w = g.add_tensor("w", W.shape, F32, data=W)
    b = g.add_tensor("b", B.shape, F32, data=B)
    y = g.add_tensor("y", [2, 3], F32)
    fc = g.new_op("FULLY_CONNECTED", [x, w, b], [y], 1)
    g.ops.append(fc)
    g.sg.inputs, g.sg.outputs = [x], [y]
    return g, fc, {"x": x, "w": w, "b": b, "y": y}


def test_added_ops_and_constants_run_in_litert() -> None:
    g, _, _ = _linear()
    (y,) = run(g, X)
    assert sqnr_db(X @ W.T + B, y) >= FP32_MIN_SQNR_DB


def test_queries() -> None:
    g, fc, t = _linear()
    np.testing.assert_array_equal(g.constant(t["w"]), W)
    assert g.constant(t["x"]) is None and g.constant(-1) is None
    assert g.is_constant(t["b"]) and not g.is_constant(t["y"])
    assert g.is_float_activation(t["x"]) and not g.is_float_activation(t["w"])
    assert g.producers() == {t["y"]: fc}
    assert g.consumers()[t["x"]] == [fc] and t["y"] not in g.consumers()
    assert g.name(t["w"]) == "w" and g.op_type(fc) == "FULLY_CONNECTED"
    assert (g.inputs, g.outputs) == ([t["x"]], [t["y"]])


def test_opcodes_are_reused_per_type_and_version() -> None:
    g = new_graph()
    relu1, relu1_again, relu2 = g.opcode("RELU", 1), g.opcode("RELU", 1), g.opcode("RELU", 2)
    assert relu1 == relu1_again != relu2
    assert len(g.model.operatorCodes) == 2


def test_replace_input_then_commit_prunes_tensors_buffers_and_opcodes() -> None:
    g, fc, t = _linear()
    relu_in = g.add_tensor("r", [2, 4], F32)
    add_op(g, "RELU", [t["x"]], [relu_in])
    g.ops.insert(0, g.ops.pop())
    g.replace_input(t["x"], relu_in, only=[fc])
    unused_const = g.add_tensor("dead", [5], F32, data=np.ones(5, np.float32))
    g.opcode("TANH", 1)  # an opcode no operator uses
    assert unused_const == 5 and len(g.model.buffers) == 4
    (y,) = run(g, X)
    assert sqnr_db(np.maximum(X, 0) @ W.T + B, y) >= FP32_MIN_SQNR_DB
    assert sqnr_db(X @ W.T + B, y) < FP32_MIN_SQNR_DB  # the RELU is really read
    assert op_types(g) == ["RELU", "FULLY_CONNECTED"]
    assert len(g.sg.tensors) == 5 and len(g.model.buffers) == 3  # dead tensor and its buffer
    assert sorted(g.op_type(op) for op in g.ops) == ["FULLY_CONNECTED", "RELU"]
    assert len(g.model.operatorCodes) == 2  # TANH went


def test_set_constant_retypes_in_a_fresh_buffer() -> None:
    g, _, t = _linear()
    before = g.tensor(t["w"]).buffer
    q = quantization([0.5, 0.25, 0.125], [0, 0, 0], axis=0)
    levels = np.arange(-6, 6, dtype=np.int8).reshape(W.shape)
    g.set_constant(t["w"], levels, 9, q)
    assert g.tensor(t["w"]).buffer != before and g.tensor(t["w"]).type == 9
    assert g.tensor(t["w"]).quantization is q
    np.testing.assert_array_equal(g.constant(t["w"]), levels)


def test_quantization_table() -> None:
    q = quantization([0.5, 2.0], [3, -1], axis=3)
    assert q.scale.dtype == np.float32 and q.scale.tolist() == [0.5, 2.0]
    assert q.zeroPoint.dtype == np.int64 and q.zeroPoint.tolist() == [3, -1]
    assert q.quantizedDimension == 3


def test_opcode_index_raises_a_shared_version_where_graph_keeps_one_per_version() -> None:
    g = new_graph()
    m = g.model
    first = tflite_graph.opcode_index(m, "RELU", version=1)
    assert tflite_graph.opcode_index(m, "RELU", version=3) == first
    assert m.operatorCodes[first].version == 3 and len(m.operatorCodes) == 1
    assert tflite_graph.opcode_index(m, "RELU", version=2) == first  # never lowered
    assert m.operatorCodes[first].version == 3
    assert g.opcode("RELU", 2) != first and len(m.operatorCodes) == 2


def test_free_functions_build_a_graph_litert_runs() -> None:
    """x ─TRANSPOSE(0,2,1)→ a ─RELU→ y, built with add_tensor/transpose_op/make_op."""
    m = new_graph().model
    x = tflite_graph.add_tensor(m, "x", [1, 2, 3], np.dtype(np.float32))
    a = tflite_graph.add_tensor(m, "a", [1, 3, 2], np.dtype(np.float32))
    y = tflite_graph.add_tensor(m, "y", [1, 3, 2], np.dtype(np.float32))
    sg = m.subgraphs[0]
    sg.operators = [
        tflite_graph.transpose_op(m, x, a, [0, 2, 1]),
        tflite_graph.make_op(m, "RELU", [a], [y]),
    ]
    sg.inputs, sg.outputs = [x], [y]
    assert tflite_graph.producers(sg) == {a: 0, y: 1}
    assert tflite_graph.consumers(sg)[a] == [1]
    perm = int(sg.operators[0].inputs[1])
    assert tflite_graph.const_array(m, perm).tolist() == [0, 2, 1]
    assert tflite_graph.const_array(m, x) is None
    x_val = RNG.standard_normal((1, 2, 3)).astype(np.float32)
    interp = Interpreter(model_content=tflite_io.save(m))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x_val)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_array_equal(got, np.maximum(x_val.transpose(0, 2, 1), 0))


def test_remove_ops_then_prune_tensors_remaps_every_index() -> None:
    m = new_graph().model
    f32 = np.dtype(np.float32)
    x, dead, y = (tflite_graph.add_tensor(m, n, [4], f32) for n in ("x", "dead", "y"))
    sg = m.subgraphs[0]
    sg.operators = [
        tflite_graph.make_op(m, "RELU", [x], [dead]),
        tflite_graph.make_op(m, "TANH", [x], [y]),
    ]
    sg.inputs, sg.outputs = [x], [y]
    tflite_graph.remove_ops(sg, {0})
    tflite_graph.prune_tensors(m)
    assert [tflite_io.tensor_name(t) for t in sg.tensors] == ["x", "y"]
    assert sg.operators[0].inputs.tolist() == [0] and sg.operators[0].outputs.tolist() == [1]
    assert sg.outputs.tolist() == [1]


def test_replace_input_by_index_and_shape_of() -> None:
    m = new_graph().model
    f32 = np.dtype(np.float32)
    a = tflite_graph.add_tensor(m, "a", [1, 4], f32, shape_signature=[-1, 4])
    b, y = (tflite_graph.add_tensor(m, n, [1, 4], f32) for n in ("b", "y"))
    sg = m.subgraphs[0]
    sg.operators = [tflite_graph.make_op(m, "ADD", [a, a], [y])]
    tflite_graph.replace_input(sg, a, b, op_indices=[0])
    assert sg.operators[0].inputs.tolist() == [b, b]
    assert tflite_graph.shape_of(sg.tensors[a]) == [-1, 4]
    assert tflite_graph.shape_of(sg.tensors[b]) == [1, 4]


def test_drop_metadata_empties_its_buffer() -> None:
    m = new_graph().model
    md = tflite_io.schema().MetadataT()
    md.name, md.buffer = b"reduced_precision_support", tflite_graph.add_buffer(m, b"fp16")
    m.metadata = [md]
    assert tflite_graph.drop_metadata(m, "reduced_precision_support")
    assert m.metadata is None and m.buffers[md.buffer].data is None
    assert not tflite_graph.drop_metadata(m, "reduced_precision_support")
