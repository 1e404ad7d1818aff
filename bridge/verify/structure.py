"""Structural audit of an integer .tflite: are the kernels really integer, and are the scales
ours? Returns data (counts and a list of problems), never a bare bool."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from bridge.modes import MODES
from bridge.runtime import tflite_io

#: Ops whose second input is a weight tensor and third (if any) a bias.
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
#: TRANSPOSE_CONV takes (output_shape, weights, input[, bias]).
DATA_INPUT = {"TRANSPOSE_CONV": 2}
WEIGHT_INPUT = {"TRANSPOSE_CONV": 1}
BIAS_INPUT = {"TRANSPOSE_CONV": 3}
#: A float constant with more elements than this counts as a float weight buffer.
FLOAT_CONST_MIN_ELEMENTS = 16
#: Relative difference allowed between a TFLite scale and the QDQ ONNX scale it carries.
SCALE_RTOL = 1e-6


def audit_integer(data: bytes, report: Mapping[str, Any]) -> dict[str, Any]:
    """Check an int8/int16x8 .tflite against its conversion report.

    Checks: every weighted op not listed as float has integer input and int8 weights; no float
    weight buffers remain outside listed float ops; QUANTIZE/DEQUANTIZE only at the boundary or
    next to listed float ops; TFLite scales and zero-points equal the QDQ ONNX's.
    """
    mode = report["mode"]
    model = tflite_io.load(data)
    sg = model.subgraphs[0]
    names = [tflite_io.tensor_name(t) for t in sg.tensors]
    float_tensors = {f.get("tensor") for f in report.get("lowering", {}).get("float_ops", [])}
    problems: list[str] = []
    counts: Counter[str] = Counter()
    float_op_inputs: set[int] = set()
    float_op_outputs: set[int] = set()
    for op in sg.operators:
        kind = tflite_io.op_name(model, op)
        ins = [int(t) for t in op.inputs]
        outs = [int(t) for t in op.outputs]
        is_float = any(names[t] in float_tensors for t in outs) or all(
            sg.tensors[t].type in (0, 1) for t in outs
        )
        if is_float and kind not in ("DEQUANTIZE",):
            float_op_inputs.update(ins)
            float_op_outputs.update(outs)
        if kind in WEIGHTED_OPS:
            counts[kind] += 1
            x = sg.tensors[ins[DATA_INPUT.get(kind, 0)]]
            w = sg.tensors[ins[WEIGHT_INPUT.get(kind, 1)]]
            if is_float:
                counts["float_" + kind] += 1
                continue
            if x.type != MODES.get(mode).tflite_activation_type:
                problems.append(f"{kind} {names[outs[0]]}: input is type {x.type}, not integer")
            if w.type != 9:
                problems.append(f"{kind} {names[outs[0]]}: weights are type {w.type}, not int8")
            problems += _bias(sg, op, kind, names[outs[0]])
    problems += _float_buffers(model, float_op_inputs)
    problems += _boundary(model, float_op_inputs, float_op_outputs)
    scale_checks, scale_problems = _scales(model, report)
    problems += scale_problems
    return {"ops": dict(counts), "scales_checked": scale_checks, "problems": problems}


def _bias(sg: Any, op: Any, kind: str, name: str) -> list[str]:
    """An integer bias has scale s_in·s_w per channel and zero point 0."""
    index = BIAS_INPUT.get(kind, 2)
    if len(op.inputs) <= index or int(op.inputs[index]) < 0:
        return []
    x = sg.tensors[int(op.inputs[DATA_INPUT.get(kind, 0)])]
    w = sg.tensors[int(op.inputs[WEIGHT_INPUT.get(kind, 1)])]
    b = sg.tensors[int(op.inputs[index])]
    if b.type not in (2, 4):
        return [f"{kind} {name}: bias is type {b.type}, not int32/int64"]
    if not (_has_scale(x) and _has_scale(w)):
        return [f"{kind} {name}: input or weights carry no scale, so the bias scale is unchecked"]
    want = np.float64(x.quantization.scale[0]) * np.asarray(w.quantization.scale, np.float64)
    got = np.asarray(b.quantization.scale if _has_scale(b) else [], np.float64)
    if got.shape != want.shape or not np.allclose(got, want, rtol=SCALE_RTOL, atol=0):
        return [f"{kind} {name}: bias scale is not s_in·s_w"]
    return []


def _has_scale(t: Any) -> bool:
    q = t.quantization
    return q is not None and q.scale is not None and len(q.scale) > 0


def _float_buffers(model: Any, allowed: set[int]) -> list[str]:
    sg = model.subgraphs[0]
    found = []
    for i, t in enumerate(sg.tensors):
        if t.type != 0 or i in allowed:
            continue
        arr = tflite_io.buffer_array(model, t)
        if arr is not None and arr.size > FLOAT_CONST_MIN_ELEMENTS:
            found.append(f"float32 constant {tflite_io.tensor_name(t)} ({arr.size} values)")
    return found


def _boundary(model: Any, float_in: set[int], float_out: set[int]) -> list[str]:
    """QUANTIZE reads a graph input or a float op's output; DEQUANTIZE feeds a graph output or
    a float op."""
    sg = model.subgraphs[0]
    graph_in = {int(t) for t in sg.inputs}
    graph_out = {int(t) for t in sg.outputs}
    problems = []
    for op in sg.operators:
        kind = tflite_io.op_name(model, op)
        src, dst = int(op.inputs[0]), int(op.outputs[0])
        name = tflite_io.tensor_name(sg.tensors[dst])
        if (
            kind == "QUANTIZE"
            and sg.tensors[src].type in (0, 1)
            and not (src in graph_in or src in float_out)
        ):
            problems.append(f"QUANTIZE {name} inside the graph, not after a float op")
        if (
            kind == "DEQUANTIZE"
            and tflite_io.buffer_array(model, sg.tensors[src]) is None
            and not (dst in graph_out or dst in float_in)
        ):
            problems.append(f"DEQUANTIZE {name} inside the graph, not before a float op")
    return problems


def _scales(model: Any, report: Mapping[str, Any]) -> tuple[int, list[str]]:
    """TFLite activation qparams equal the QDQ's for every mapped tensor; weight scale vectors
    each equal one QDQ weight's."""
    sg = model.subgraphs[0]
    qdq = report.get("quantization", {}).get("tensors", {})
    tensor_map = report.get("lowering", {}).get("tensor_map", {})
    weights = [
        np.asarray(e["scale"], np.float64) for e in qdq.values() if e.get("kind") == "weight"
    ]
    # weights onnx2tf multiplied by a constant it folded in: same levels, scale k·s (listed)
    by_dq = {e.get("dq"): e for e in qdq.values() if e.get("kind") == "weight"}
    rescaled = {
        r["tensor"]: np.asarray(by_dq[r["qdq_weight"]]["scale"], np.float64) * r["factor"]
        for r in report.get("lowering", {}).get("rescaled_weights", [])
        if r.get("qdq_weight") in by_dq
    }
    checked, problems = 0, []
    for t in sg.tensors:
        q = t.quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            continue
        name = tflite_io.tensor_name(t)
        scale = np.asarray(q.scale, np.float64)
        zero = np.asarray(q.zeroPoint, np.int64)
        onnx_name = tensor_map.get(name)
        entry = qdq.get(onnx_name) if onnx_name else None
        is_const = tflite_io.buffer_array(model, t) is not None
        if entry is not None and entry.get("kind") != "weight" and not is_const:
            checked += 1
            want = np.asarray(entry["scale"], np.float64)
            if want.shape != scale.shape or not np.allclose(scale, want, rtol=SCALE_RTOL, atol=0):
                problems.append(f"{name}: scale {scale[:3]} differs from QDQ {want[:3]}")
            elif not np.array_equal(zero, np.asarray(entry["zero_point"], np.int64)):
                problems.append(f"{name}: zero point {zero[:3]} differs from QDQ")
        elif t.type == 9 and is_const and scale.size > 1:
            checked += 1
            if not any(
                w.shape == scale.shape and np.allclose(scale, w, rtol=SCALE_RTOL, atol=0)
                for w in ([rescaled[name]] if name in rescaled else weights)
            ):
                problems.append(f"{name}: per-channel weight scales match no QDQ weight")
    return checked, problems
