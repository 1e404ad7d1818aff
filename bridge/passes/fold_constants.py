"""Constant folding (freezing): evaluate every node whose inputs are all constants.

Wraps onnxscript's constant folder, which evaluates nodes with the ONNX reference
implementation, resolves `Shape`/`Size` of statically shaped tensors, and turns inference-mode
`Dropout` and single-input `Concat` into `Identity`. Folded values and `Constant` nodes become
initializers, and nodes the folding leaves without readers are removed with it (the folder
may leave such a node holding a graph output's old name). The count is the number of original
nodes no longer in the graph. `QuantizeLinear`, `DequantizeLinear` and `ConstantOfShape` are
kept (quantization parameters and model size).
"""

from __future__ import annotations

import onnx
import onnx_ir.passes.common as ir_passes
import onnxscript.optimizer

from bridge.passes import _ir
from bridge.passes.base import PassResult

#: Fold a node only if none of its constant inputs has more elements than this. Weights of a
#: few million elements are still folded (for example weight-normalisation arithmetic).
INPUT_SIZE_LIMIT = 1 << 24
#: Do not store a folded tensor larger than this unless it replaces at least as many elements.
OUTPUT_SIZE_LIMIT = 1 << 24


def fold_constants(model: onnx.ModelProto) -> PassResult:
    """Replace constant subgraphs by initializers."""
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
    count = sum(1 for node in before if node not in remaining)
    return _ir.finish(model, irm, count)
