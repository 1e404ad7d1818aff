"""Give back graph outputs that onnx2tf fused away.

onnx2tf 2.6.9 fuses an activation (Relu, Clip, Tanh) into its producer (ADD with fused RELU)
and can leave a graph output tensor `y` with no producer: LiteRT then fails at run time
("Tensor data is null") or, worse, returns garbage. Its correspondence report says which TFLite
tensor `t` (the fused op's output, post-activation) the ONNX tensor `y` was rewritten to, and
which ONNX op made `y`. Two cases:

- `y` is the activation's *input* (`y = a + b; z = relu(y)`, both used): `t` holds relu(y), not
  y. Un-fuse: the producer writes `y` again with no fused activation, and a standalone
  activation op computes `t` from it.
- `y` is the activation's *output* (`y = relu(a·b)` also feeds a layout no-op such as a
  transpose of unit axes, which onnx2tf drops and renames): `t` already holds y's values. Copy
  them: `y = RESHAPE(t)` to y's own shape, and the fused op keeps its activation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bridge.errors import LoweringError
from bridge.lower import tflite_graph
from bridge.runtime import tflite_io

#: TFLite ActivationFunctionType → the standalone builtin op that computes it.
ACTIVATION_OPS = {1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
#: ONNX ops onnx2tf fuses into their producer as one of `ACTIVATION_OPS`.
FUSABLE_ONNX = frozenset({"Relu", "Clip", "Tanh"})


def restore_fused_outputs(model: Any, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Give every subgraph output that has no producer one again; return the outputs restored.

    `records` is onnx2tf's tensor correspondence report, which says which TFLite tensor an ONNX
    tensor was rewritten to ("embedding" → "/Relu_output_0") and the ONNX op that made it.

    Raises:
        LoweringError: an output has no producer and no fused activation explains why.
    """
    sg = model.subgraphs[0]
    restored: list[str] = []
    by_name = {r.get("onnx_output_name"): r for r in records}
    index_of = {tflite_io.tensor_name(t): i for i, t in enumerate(sg.tensors)}
    for out in [int(t) for t in sg.outputs]:
        producers = tflite_graph.producers(sg)
        if out in producers or out in {int(t) for t in sg.inputs}:
            continue
        if tflite_io.holds_data(model, sg.tensors[out]):
            continue  # a constant output (detection anchors): LiteRT returns its data
        name = tflite_io.tensor_name(sg.tensors[out])
        record = by_name.get(name, {})
        fused_tensor = index_of.get(record.get("resolved_tflite_tensor_name", ""), -1)
        index = producers.get(fused_tensor, -1)
        op = sg.operators[index] if index >= 0 else None
        fused = getattr(op.builtinOptions, "fusedActivationFunction", 0) if op else 0
        if fused not in ACTIVATION_OPS:
            raise LoweringError(
                f"the lowered .tflite leaves output {name!r} with no producer and no fused "
                "activation explains it; onnx2tf dropped it. Return a copy of that tensor "
                "(e.g. y.clone() * 1) from the model and convert again"
            )
        if record.get("onnx_op_type") in FUSABLE_ONNX:
            sg.operators.insert(index + 1, _copy_op(model, fused_tensor, out, name))
        else:
            op.builtinOptions.fusedActivationFunction = 0
            op.outputs[0] = out
            act = tflite_graph.make_op(model, ACTIVATION_OPS[fused], [out], [fused_tensor])
            sg.operators.insert(index + 1, act)
        restored.append(name)
    return restored


def _copy_op(model: Any, src: int, dst: int, name: str) -> Any:
    """RESHAPE writing `dst` = `src` in `dst`'s shape (a copy when the shapes agree)."""
    sg = model.subgraphs[0]
    shape = [int(d) for d in sg.tensors[dst].shape]
    if int(np.prod(shape)) != int(np.prod([int(d) for d in sg.tensors[src].shape])):
        raise LoweringError(
            f"output {name!r} lost its producer to a fused activation and has shape {shape}, "
            f"but the fused tensor {tflite_io.tensor_name(sg.tensors[src])!r} has "
            f"{list(sg.tensors[src].shape)}; this is a lowering bug, please report it with "
            "the model"
        )
    target = tflite_graph.add_tensor(
        model, f"{name}_shape", [len(shape)], np.dtype(np.int32), data=np.array(shape)
    )
    opts = tflite_io.schema().ReshapeOptionsT()
    opts.newShape = shape
    return tflite_graph.make_op(
        model, "RESHAPE", [src, target], [dst], options=("ReshapeOptions", opts)
    )
