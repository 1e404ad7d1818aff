"""Shape inference: fill `value_info` with every tensor's type and shape.

Runs `onnx.shape_inference` with data propagation, so shapes computed from `Shape` → `Gather`
→ `Concat` chains become static. Later passes (no-op reshape removal, MatMul → Gemm) and the
lowering read these shapes. The count is the number of tensors whose type or shape is new or
changed.
"""

from __future__ import annotations

import onnx

from bridge.errors import PassError
from bridge.passes.base import PassResult


def infer_shapes(model: onnx.ModelProto) -> PassResult:
    """Infer types and shapes of all intermediate tensors and graph outputs."""
    try:
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=False, data_prop=True
        )
    except onnx.shape_inference.InferenceError as e:
        raise PassError(
            f"infer_shapes: ONNX shape inference rejects the model ({e}); the model has "
            "inconsistent types or shapes; check the export or drop 'infer_shapes' from the passes"
        ) from e
    before = _typed_values(model.graph)
    after = _typed_values(inferred.graph)
    count = sum(1 for name, vi in after.items() if before.get(name) != vi)
    if count == 0:
        return PassResult(model, False, 0)
    return PassResult(inferred, True, count)


def _typed_values(graph: onnx.GraphProto) -> dict[str, bytes]:
    entries = [*graph.value_info, *graph.output]
    return {vi.name: vi.type.SerializeToString(deterministic=True) for vi in entries}
