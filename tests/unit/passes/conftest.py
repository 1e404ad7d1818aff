"""Tiny ONNX graph builders and ONNX Runtime helpers for the pass tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bridge.artifact import OnnxArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.runtime.feeds import random_feeds
from bridge.runtime.runners import OrtRunner

Shape = Sequence[int | str]  # a str is a symbolic dim


def _value_info(name: str, shape: Shape, dtype: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def build_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Shape],
    outputs: Mapping[str, Shape],
    inits: Mapping[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
) -> onnx.ModelProto:
    """A float32 model; `inputs` and `outputs` map names to shapes."""
    graph = helper.make_graph(
        list(nodes),
        "g",
        [_value_info(n, s, TensorProto.FLOAT) for n, s in inputs.items()],
        [_value_info(n, s, TensorProto.FLOAT) for n, s in outputs.items()],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def contract_of(model: onnx.ModelProto) -> IOContract:
    """The contract a model's own graph I/O describes (static shapes, dtypes from the graph)."""

    def spec(vi: onnx.ValueInfoProto) -> TensorSpec:
        t = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return TensorSpec(vi.name, shape, dtype)

    inits = {t.name for t in model.graph.initializer}
    return IOContract(
        tuple(spec(i) for i in model.graph.input if i.name not in inits),
        tuple(spec(o) for o in model.graph.output),
    )


def ort_outputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """ONNX Runtime outputs on seeded standard-normal feeds."""
    contract = contract_of(model)
    return OrtRunner(model, contract).run(random_feeds(contract, seed=seed))


def max_abs_diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def io_names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    return [i.name for i in model.graph.input], [o.name for o in model.graph.output]


def artifact_of(model: onnx.ModelProto) -> OnnxArtifact:
    return OnnxArtifact(model, contract_of(model))


def rand(*shape: int, seed: int = 0, low: float | None = None) -> np.ndarray:
    """Seeded float32 data; with `low`, uniform in [low, low + 1)."""
    rng = np.random.default_rng(seed)
    if low is not None:
        return (low + rng.random(shape)).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture
def g() -> Callable[..., object]:
    """The builders, as one namespace: g.model(...), g.ort(...), g.ops(...), ..."""

    class Graphs:
        model = staticmethod(build_model)
        node = staticmethod(helper.make_node)
        ort = staticmethod(ort_outputs)
        diff = staticmethod(max_abs_diff)
        ops = staticmethod(op_types)
        io = staticmethod(io_names)
        artifact = staticmethod(artifact_of)
        contract = staticmethod(contract_of)
        rand = staticmethod(rand)

    return Graphs
