"""Give back graph outputs that onnx2tf fused away.

When an ONNX graph output `y` also feeds an activation (`y → Relu → ...`), onnx2tf 2.6.9 fuses
the activation into `y`'s producer (ADD with fused RELU) and leaves the output tensor `y` with no
producer: LiteRT then fails at run time ("Tensor data is null") or, worse, returns garbage.
This rewrite un-fuses: the producer writes `y` again with no fused activation, and a standalone
activation op computes the tensor the fused op used to write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.errors import LoweringError
from bridge.lower import graph_edit, tflite_io

#: TFLite ActivationFunctionType → the standalone builtin op that computes it.
ACTIVATION_OPS = {1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}


def restore_fused_outputs(model: Any, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Un-fuse every subgraph output that has no producer; return the outputs restored.

    `records` is onnx2tf's tensor correspondence report, which says which TFLite tensor an ONNX
    tensor was rewritten to ("embedding" → "/Relu_output_0").

    Raises:
        LoweringError: an output has no producer and no fused activation explains why.
    """
    sg = model.subgraphs[0]
    restored: list[str] = []
    resolved = {r.get("onnx_output_name"): r.get("resolved_tflite_tensor_name") for r in records}
    index_of = {tflite_io.tensor_name(t): i for i, t in enumerate(sg.tensors)}
    for out in [int(t) for t in sg.outputs]:
        producers = graph_edit.producers(sg)
        if out in producers or out in {int(t) for t in sg.inputs}:
            continue
        name = tflite_io.tensor_name(sg.tensors[out])
        fused_tensor = index_of.get(resolved.get(name, ""), -1)
        index = producers.get(fused_tensor, -1)
        op = sg.operators[index] if index >= 0 else None
        fused = getattr(op.builtinOptions, "fusedActivationFunction", 0) if op else 0
        if fused not in ACTIVATION_OPS:
            raise LoweringError(
                f"the lowered .tflite leaves output {name!r} with no producer and no fused "
                "activation explains it; onnx2tf dropped it. Return a copy of that tensor "
                "(e.g. y.clone() * 1) from the model and convert again"
            )
        op.builtinOptions.fusedActivationFunction = 0
        op.outputs[0] = out
        act = graph_edit.make_op(model, ACTIVATION_OPS[fused], [out], [fused_tensor])
        sg.operators.insert(index + 1, act)
        restored.append(name)
    return restored
