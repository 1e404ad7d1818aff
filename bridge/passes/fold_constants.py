"""Constant folding (freezing): evaluate every node whose inputs are all constants.

Wraps onnxscript's constant folder, which evaluates nodes with the ONNX reference
implementation, resolves `Shape`/`Size` of statically shaped tensors, and turns inference-mode
`Dropout` and single-input `Concat` into `Identity`. Folded values and `Constant` nodes become
initializers, and nodes the folding leaves without readers are removed with it (the folder
may leave such a node holding a graph output's old name). The count is the number of original
nodes no longer in the graph. `QuantizeLinear`, `DequantizeLinear` and `ConstantOfShape` are
kept (quantization parameters and model size), except a small `ConstantOfShape` with a constant
shape, which is folded first: torch exports every `F.pad` as a ConstantOfShape → Concat →
Reshape → Slice → Transpose → Cast chain computing the pads, and leaving it unfolded leaves
the lowering with dynamic shapes.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir.passes.common as ir_passes
import onnxscript.optimizer
from onnx import numpy_helper

from bridge.passes import _ir
from bridge.passes.base import PassResult

#: Fold a node only if none of its constant inputs has more elements than this. Weights of a
#: few million elements are still folded (for example weight-normalisation arithmetic).
INPUT_SIZE_LIMIT = 1 << 24
#: Do not store a folded tensor larger than this unless it replaces at least as many elements.
OUTPUT_SIZE_LIMIT = 1 << 24
#: A ConstantOfShape with at most this many elements is folded to an initializer.
CONSTANT_OF_SHAPE_LIMIT = 4096


def fold_constants(model: onnx.ModelProto) -> PassResult:
    """Replace constant subgraphs by initializers."""
    model, small = _fold_small_constant_of_shape(model)
    irm = _ir.load(model)
    before = list(irm.graph)
    onnxscript.optimizer.fold_constants(
        irm,
        onnx_shape_inference=True,
        input_size_limit=INPUT_SIZE_LIMIT,
        output_size_limit=OUTPUT_SIZE_LIMIT,
    )
    ir_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(irm)
    ir_passes.RemoveUnusedNodesPass()(irm)
    remaining = set(irm.graph)
    count = small + sum(1 for node in before if node not in remaining)
    return _ir.finish(model, irm, count)


def _fold_small_constant_of_shape(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with small constant-shaped ConstantOfShape nodes made initializers."""
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    folds = {}
    for i, node in enumerate(graph.node):
        if node.op_type != "ConstantOfShape" or node.input[0] not in consts:
            continue
        shape = [int(d) for d in np.ravel(consts[node.input[0]])]
        if int(np.prod(shape, dtype=np.int64)) > CONSTANT_OF_SHAPE_LIMIT:
            continue
        value = next(
            (numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"),
            np.zeros(1, np.float32),
        )
        folds[i] = numpy_helper.from_array(
            np.full(shape, np.ravel(value)[0], value.dtype), node.output[0]
        )
    if not folds:
        return model, 0
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for i in sorted(folds, reverse=True):
        del copy.graph.node[i]
    copy.graph.initializer.extend(folds.values())
    return copy, len(folds)
