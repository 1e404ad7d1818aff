"""Hold a .tflite's inputs and outputs to the I/O contract: names, order, shapes and dtypes.

`match_io` fixes what can be fixed without changing the maths (order, and names when onnx2tf
renamed a tensor whose shape still identifies it); `check_io` then compares every input and
output with the contract and raises `LoweringError` listing each difference.
`write_signature` makes the single "serving_default" signature list the contract's tensors in
order, so signature runners see the same names and order as the subgraph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from bridge.contract import IOContract, TensorSpec
from bridge.errors import LoweringError
from bridge.lower import tflite_graph
from bridge.runtime import tflite_io

#: (contract dtype, .tflite dtype) pairs that are accepted: the runners cast at the boundary.
COMPATIBLE_DTYPES = {("int64", "int32")}


def match_io(model: Any, contract: IOContract) -> None:
    """Reorder (and where unambiguous, rename) the main subgraph's inputs and outputs in place.

    Raises:
        LoweringError: the counts differ, or a contract tensor has no counterpart.
    """
    sg = model.subgraphs[0]
    sg.inputs = _match(sg, list(sg.inputs), contract.inputs, "input")
    sg.outputs = _match(sg, list(sg.outputs), contract.outputs, "output")


def pin_static_outputs(model: Any, contract: IOContract) -> list[str]:
    """Give outputs the contract's static dims where onnx2tf left them dynamic (-1).

    A Reshape to [-1, C] makes onnx2tf mark the batch of everything after it dynamic even when
    the model's batch is fixed; the interpreter computes the same concrete shape at run time, so
    only the declared signature changes. Returns the names of the outputs pinned.
    """
    sg = model.subgraphs[0]
    pinned = []
    for t, spec in zip(sg.outputs, contract.outputs, strict=False):
        tensor = sg.tensors[int(t)]
        shape = tflite_graph.shape_of(tensor)
        if len(shape) != spec.rank or not any(
            got == -1 and want is not None for want, got in zip(spec.shape, shape, strict=True)
        ):
            continue
        signature = [-1 if want is None else want for want in spec.shape]
        tensor.shape = np.asarray(spec.concrete_shape(), dtype=np.int32)
        tensor.shapeSignature = np.asarray(signature, dtype=np.int32) if -1 in signature else None
        pinned.append(spec.name)
    return pinned


def _match(sg: Any, current: list[int], specs: Sequence[TensorSpec], kind: str) -> np.ndarray:
    if len(current) != len(specs):
        have = [tflite_io.tensor_name(sg.tensors[t]) for t in current]
        raise LoweringError(
            f"the .tflite has {len(current)} {kind}s {have}, the contract has {len(specs)}: "
            f"{[s.name for s in specs]}"
        )
    by_name = {tflite_io.tensor_name(sg.tensors[t]): int(t) for t in current}
    wanted = {s.name for s in specs}
    spare = [t for n, t in by_name.items() if n not in wanted]
    for spec in (s for s in specs if s.name not in by_name):
        fits = [t for t in spare if _shape_fits(spec, tflite_graph.shape_of(sg.tensors[t]))]
        if len(fits) != 1:
            raise LoweringError(
                f"the .tflite has no {kind} named {spec.name!r} and no unique unnamed "
                f"{kind} of shape {spec.shape}; its {kind}s are {sorted(by_name)}"
            )
        spare.remove(fits[0])
        sg.tensors[fits[0]].name = spec.name
        by_name[spec.name] = fits[0]
    return np.asarray([by_name[s.name] for s in specs], dtype=np.int32)


def _shape_fits(spec: TensorSpec, shape: Sequence[int]) -> bool:
    """Equal shapes, where a symbolic (None) contract dimension must be dynamic (-1) too."""
    if len(shape) != spec.rank:
        return False
    return all(
        got == (-1 if want is None else want) for want, got in zip(spec.shape, shape, strict=True)
    )


def _dtype_fits(spec: TensorSpec, tensor: Any) -> bool:
    got = tflite_io.TENSOR_DTYPES.get(tensor.type)
    if got is None:
        return False
    return got == np.dtype(spec.dtype) or (spec.dtype, got.name) in COMPATIBLE_DTYPES


def io_problems(model: Any, contract: IOContract) -> list[str]:
    """Every way the main subgraph's inputs and outputs differ from `contract` (empty if none)."""
    sg = model.subgraphs[0]
    problems = []
    for kind, indices, specs in (
        ("input", sg.inputs, contract.inputs),
        ("output", sg.outputs, contract.outputs),
    ):
        if len(indices) != len(specs):
            problems.append(f"{len(indices)} {kind}s, contract has {len(specs)}")
            continue
        for pos, (t, spec) in enumerate(zip(indices, specs, strict=True)):
            tensor = sg.tensors[t]
            name, shape = tflite_io.tensor_name(tensor), tflite_graph.shape_of(tensor)
            got = tflite_io.TENSOR_DTYPES.get(tensor.type, tensor.type)
            if name != spec.name:
                problems.append(f"{kind} {pos} is {name!r}, contract says {spec.name!r}")
            if not _shape_fits(spec, shape):
                problems.append(f"{kind} {spec.name!r} has shape {shape}, contract {spec.shape}")
            if not _dtype_fits(spec, tensor):
                problems.append(f"{kind} {spec.name!r} has dtype {got}, contract {spec.dtype}")
    return problems


def check_io(model: Any, contract: IOContract, *, source: onnx.ModelProto | None = None) -> None:
    """Raise LoweringError unless the .tflite's I/O equals the contract's.

    With `source` (the ONNX model lowered), an output whose shape onnx2tf changed is named
    with the ONNX node that computes it and a workaround.
    """
    problems = io_problems(model, contract)
    if problems:
        raise LoweringError(
            "the lowered .tflite does not keep the I/O contract: "
            + "; ".join(problems)
            + ". "
            + _advice(model, contract, source)
        )


def _advice(model: Any, contract: IOContract, source: onnx.ModelProto | None) -> str:
    """What the user can do about the first output whose shape differs from the contract."""
    sg = model.subgraphs[0]
    tensors = [sg.tensors[t] for t in sg.outputs]
    shapes = {tflite_io.tensor_name(t): tflite_graph.shape_of(t) for t in tensors}
    bad = [s for s in contract.outputs if s.name in shapes and not _shape_fits(s, shapes[s.name])]
    producer = None
    if bad and source is not None:
        producer = next((n for n in source.graph.node if bad[0].name in n.output), None)
    if producer is None:
        return "This is a lowering bug; please report it with the model."
    return (
        f"onnx2tf changed the layout of output {bad[0].name!r}, computed by ONNX node "
        f"{producer.name!r} ({producer.op_type}). To work around it, return that "
        f"{producer.op_type}'s input from the model instead and apply the {producer.op_type} "
        "to the .tflite's output after inference; please also report the model (a lowering bug)"
    )


def write_signature(model: Any, contract: IOContract, *, key: str = "serving_default") -> None:
    """Replace the signature defs by one that lists the contract's inputs and outputs in order."""
    s = tflite_io.schema()
    sg = model.subgraphs[0]
    sig = s.SignatureDefT()
    sig.signatureKey = key
    sig.subgraphIndex = 0
    sig.inputs, sig.outputs = [], []
    for target, indices, specs in (
        (sig.inputs, sg.inputs, contract.inputs),
        (sig.outputs, sg.outputs, contract.outputs),
    ):
        for t, spec in zip(indices, specs, strict=True):
            tm = s.TensorMapT()
            tm.name = spec.name
            tm.tensorIndex = int(t)
            target.append(tm)
    model.signatureDefs = [sig]
