"""Dead-code elimination: remove nodes and initializers that no graph output depends on.

Wraps onnx_ir's `RemoveUnusedNodesPass`, which never touches graph inputs or outputs and also
drops unused optional outputs (the mask of a `Dropout`, the running statistics of an
inference-mode `BatchNormalization`). The count is nodes + initializers + optional outputs
removed.
"""

from __future__ import annotations

import onnx
import onnx_ir.passes.common as ir_passes

from bridge.passes import _ir
from bridge.passes.base import PassResult


def eliminate_dead_code(model: onnx.ModelProto) -> PassResult:
    """Remove everything the graph outputs do not depend on."""
    irm = _ir.load(model)
    outputs_before = {node: len(node.outputs) for node in irm.graph}
    inits_before = len(irm.graph.initializers)
    ir_passes.RemoveUnusedNodesPass()(irm)
    kept = list(irm.graph)
    count = (
        len(outputs_before)
        - len(kept)
        + inits_before
        - len(irm.graph.initializers)
        + sum(outputs_before[node] - len(node.outputs) for node in kept)
    )
    return _ir.finish(model, irm, count)
