"""Quantize the constant inputs of integer operators: weights, biases and other operands.

Weights become symmetric int8 with the QDQ model's per-channel scales along the TFLite
output-channel axis (CONV_2D OHWI → 0, DEPTHWISE_CONV_2D 1HWC → 3, FULLY_CONNECTED [O, I] → 0,
TRANSPOSE_CONV OHWI → 0). The float weights onnx2tf wrote are the dequantized QDQ weights, so
q = w / s[c] is an integer and is recovered exactly. Biases become int32 (int64 for int16
activations: `weights.BIAS_DTYPES`) with scale s_in · s_w[c], which is what the kernels assume;
in LiteRT 2.1.2, 16x8 DEPTHWISE_CONV_2D rejects an int32 bias, and CONV_2D, TRANSPOSE_CONV (and
the reference FULLY_CONNECTED) accept one but compute wrong results with it. Other constant
operands take their QDQ parameters (the output's, for scale-keeping ops); one that matches no
QDQ constant gets min/max parameters, reported in `computed`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import numpy_helper

from bridge.errors import LoweringError
from bridge.lower.integer import kernels
from bridge.lower.integer.assign import ActQ, Plan
from bridge.lower.integer.match import match_channels, match_channels_scaled, match_constant
from bridge.lower.integer.qdq import QdqModel
from bridge.lower.tflite_graph import Graph, quantization
from bridge.qparams import QParams
from bridge.quantize.weights import BIAS_DTYPES

#: TFLite TensorType codes by name.
TYPE_CODES = {"float": 0, "int8": 9, "int16": 7, "uint8": 3, "int32": 2, "int64": 4}
#: A recovered integer weight may sit this far from an integer (float32 rounding of q·s).
_INT_TOL = 1e-3


class ConstantWriter:
    """Writes quantized copies of constant inputs, once per (tensor, parameters)."""

    def __init__(self, graph: Graph, qdq: QdqModel, *, act_dtype: str) -> None:
        self.graph = graph
        self.act_dtype = act_dtype
        self.computed: list[dict[str, str]] = []
        self.rescaled: list[dict[str, Any]] = []
        self._cache: dict[tuple, int] = {}
        self._weights: dict[str, tuple[np.ndarray, int]] = {}
        self._consts: dict[str, np.ndarray] = {}
        self._qparams: dict[str, QParams] = {}
        for init in qdq.float_model.graph.initializer:
            qp = qdq.constants.get(init.name)
            if qp is None:
                continue
            self._qparams[init.name] = qp
            if qp.per_channel:
                self._weights[init.name] = (numpy_helper.to_array(init), int(qp.axis))
            else:
                self._consts[init.name] = numpy_helper.to_array(init)

    def quantize_inputs(self, op: Any, plan: Plan) -> None:
        """Point `op`'s float constant inputs at quantized copies."""
        graph = self.graph
        op_type = graph.op_type(op)
        k = kernels.kernel(op_type)
        if k is None:
            return
        w_scales: np.ndarray | None = None
        if k.weight is not None:
            pos, axis = k.weight
            w_idx = int(op.inputs[pos])
            if graph.is_constant(w_idx) and graph.tensor(w_idx).type == 0:
                op.inputs[pos] = self._once(("w", w_idx), lambda: self.weight(w_idx, axis))
            q = graph.tensor(int(op.inputs[pos])).quantization
            w_scales = None if q is None else np.asarray(q.scale, np.float64)
        for pos, t in enumerate(int(t) for t in op.inputs):
            if t < 0 or graph.tensor(t).type != 0 or not graph.is_constant(t):
                continue
            if k.bias is not None and pos == k.bias and w_scales is not None:
                s_in = plan.qparams[int(op.inputs[2 if op_type == "TRANSPOSE_CONV" else 0])].scale
                scale = s_in * w_scales
                op.inputs[pos] = self._once(
                    ("b", t, scale.tobytes()), lambda t=t, s=scale: self._bias(t, s)
                )
            else:
                qp = plan.qparams[int(op.outputs[0])] if k.same_scale else None
                op.inputs[pos] = self._once(("c", t, qp), lambda t=t, q=qp: self._constant(t, q))

    def _once(self, key: tuple, make: Any) -> int:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def weight(self, idx: int, axis: int) -> int:
        """A new symmetric int8 tensor for float weight `idx`, channels along `axis`.

        Raises:
            LoweringError: the matching QDQ weight is not symmetric int8, or the float values
                are not multiples of its scales.
        """
        graph = self.graph
        w = graph.constant(idx).astype(np.float64)
        name = graph.name(idx)
        qp = self._weight_qparams(w, axis)
        factor = 1.0
        if qp is None and (scaled := match_channels_scaled(w, axis, self._weights)):
            onnx_name, factor = scaled
            qp = self._qparams[onnx_name]
            self.rescaled.append({"tensor": name, "qdq_weight": onnx_name, "factor": factor})
        if qp is None:
            rows = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1))
            scale = rows.max(axis=1) / 127
            scale = np.where(scale > 0, scale, 1.0)
            self.computed.append(
                {"tensor": name, "reason": "weight matches no QDQ weight; symmetric max/127"}
            )
        else:
            scale = factor * np.asarray(qp.scale, np.float64)
            if qp.dtype != "int8" or np.any(qp.zero_point != 0):
                raise LoweringError(
                    f"weight {name!r} is quantized as {qp.dtype} with zero points "
                    f"{qp.zero_point[:4].tolist()}...; TFLite needs symmetric int8 weights"
                )
        wq = QParams(scale, 0, "int8", axis, narrow=True)
        steps = wq.steps(w)
        err = float(np.max(np.abs(steps - np.rint(steps)))) if steps.size else 0.0
        if qp is not None and err > _INT_TOL:
            raise LoweringError(
                f"weight {name!r} is not a multiple of its QDQ scales (off by {err:.3g} steps); "
                "the float lowering changed the weight values"
            )
        quant = quantization(wq.scale, wq.zero_point, axis=axis)
        return graph.add_tensor(
            name, graph.tensor(idx).shape, TYPE_CODES["int8"], data=wq.quantize(w), quant=quant
        )

    def is_qdq_weight(self, w: np.ndarray, axis: int) -> bool:
        """Whether `w` holds, channel by channel along `axis`, a per-channel QDQ weight."""
        return match_channels(w.astype(np.float64), axis, self._weights) is not None

    def _weight_qparams(self, w: np.ndarray, axis: int) -> QParams | None:
        """The QDQ parameters of the weight holding `w`'s values, channel by channel."""
        found = match_channels(w, axis, self._weights)
        if found is None:
            found = match_constant(w, self._consts)
        return None if found is None else self._qparams[found]

    def _bias(self, idx: int, scale: np.ndarray) -> int:
        graph = self.graph
        b = graph.constant(idx).astype(np.float64)
        s = np.broadcast_to(scale.astype(np.float32), b.shape)
        dtype = BIAS_DTYPES[self.act_dtype]
        q = QParams(np.where(s > 0, s, 1.0), 0, dtype, axis=0).quantize(b)
        quant = quantization(s, np.zeros(b.size, np.int64), axis=0)
        code = TYPE_CODES[dtype]
        return graph.add_tensor(graph.name(idx), graph.tensor(idx).shape, code, data=q, quant=quant)

    def _constant(self, idx: int, qp: ActQ | None) -> int:
        graph, act_dtype = self.graph, self.act_dtype
        value = graph.constant(idx).astype(np.float64)
        name = graph.name(idx)
        if qp is None:
            found = match_constant(value, self._consts)
            p = None if found is None else self._qparams[found]
            if p is not None and p.dtype == act_dtype:
                qp = ActQ(float(p.scale[0]), int(p.zero_point[0]))
        if qp is None:
            qp = computed_qparams(value, act_dtype)
            self.computed.append(
                {"tensor": name, "reason": "constant operand matches no QDQ constant; min/max"}
            )
        q = QParams(qp.scale, qp.zero_point, act_dtype).quantize(value)
        return graph.add_tensor(
            name,
            graph.tensor(idx).shape,
            TYPE_CODES[act_dtype],
            data=q,
            quant=quantization([qp.scale], [qp.zero_point]),
        )


def computed_qparams(value: np.ndarray, act_dtype: str) -> ActQ:
    """Per-tensor parameters covering `value` and 0: asymmetric int8, symmetric int16."""
    lo, hi = min(float(value.min()), 0.0), max(float(value.max()), 0.0)
    if act_dtype == "int16":
        return ActQ(max(abs(lo), abs(hi)) / 32767 or 1.0, 0)
    scale = (hi - lo) / 255 or 1.0
    return ActQ(scale, int(np.clip(round(-128 - lo / scale), -128, 127)))
