"""Prove that the .tflite keeps the imported QDQ model's scales: every integer activation the
lowering mapped to a QDQ tensor carries that tensor's (scale, zero point), and every int8
weight and int32/int64 bias carries the scales of one QDQ constant, float32 for float32 (a bias
whose QDQ scale is a whole multiple of s_in·s_w sits on TFLite's finer grid s_in·s_w, exactly;
a float bias, as a QAT export leaves it, is rounded to int32 on s_in·s_w).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from bridge.errors import LoweringError

_CONST_KINDS = {"int8": "weights", "int32": "biases", "int64": "biases"}


def tflite_qparams(data: bytes) -> dict[str, dict[str, Any]]:
    """TFLite tensor name → {"dtype", "scales", "zero_points", "constant"} for quantized ones."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = Interpreter(model_content=data, num_threads=1)
    out: dict[str, dict[str, Any]] = {}
    for d in interp.get_tensor_details():
        q = d["quantization_parameters"]
        if not len(q["scales"]):
            continue
        out[d["name"]] = {
            "dtype": np.dtype(d["dtype"]).name,
            "scales": np.asarray(q["scales"], np.float32),
            "zero_points": np.asarray(q["zero_points"], np.int64),
            "constant": _is_constant(interp, d["index"]),
        }
    return out


def _is_constant(interp: Any, index: int) -> bool:
    try:
        interp.get_tensor(index)
    except ValueError:
        return False
    return True


def compare(
    tflite: Mapping[str, Mapping[str, Any]],
    tensor_map: Mapping[str, str],
    tensors: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Count the TFLite tensors whose parameters equal their QDQ source's; list the others.

    Args:
        tflite: `tflite_qparams(data)`.
        tensor_map: lowering facts' TFLite tensor → QDQ tensor (activations).
        tensors: the import facts' QDQ tensor entries (scale, zero_point as stored, shifted).
    """
    acts, differ = 0, []
    for tfl_name, qdq_name in tensor_map.items():
        if tfl_name not in tflite or qdq_name not in tensors:
            continue
        mine, theirs = tflite[tfl_name], tensors[qdq_name]
        if _equal(mine["scales"], theirs["scale"]) and _equal(
            mine["zero_points"], theirs["zero_point"]
        ):
            acts += 1
        else:
            differ.append(f"{tfl_name} (from {qdq_name})")
    consts = [
        np.asarray(f["scale"], np.float64) for f in tensors.values() if f.get("kind") == "constant"
    ]
    grids = _float_bias_grids(tensors, consts)
    kept = {"weights": 0, "biases": 0, "biases_on_finer_grid": 0, "float_biases_rounded": 0}
    for name, t in tflite.items():
        kind = _CONST_KINDS.get(t["dtype"]) if t["constant"] else None
        if kind is None or (t["scales"].size < 2 and kind == "weights"):
            continue
        ratio = _best_ratio(t["scales"], consts, whole=kind == "biases")
        if ratio is None and kind == "biases" and _best_ratio(t["scales"], grids, whole=False):
            kept["float_biases_rounded"] += 1
            continue
        if ratio is None:
            differ.append(f"{name} ({t['dtype']} {kind} with scales of no QDQ constant)")
            continue
        kept[kind] += 1
        kept["biases_on_finer_grid"] += ratio != 1
    return {"activations": acts, **kept, "differ": differ}


def _float_bias_grids(
    tensors: Mapping[str, Mapping[str, Any]], consts: list[np.ndarray]
) -> list[np.ndarray]:
    """s_in·s_w for every activation scale and constant's scales: the grid a float bias is
    rounded to (a QAT export leaves biases float; TFLite holds them as int32 on that grid)."""
    acts = {
        float(np.float32(np.ravel(f["scale"])[0]))
        for f in tensors.values()
        if f.get("kind") == "activation"
    }
    return [np.float32(a) * c.astype(np.float32) for a in acts for c in consts]


def _best_ratio(scales: np.ndarray, consts: list[np.ndarray], *, whole: bool) -> int | None:
    """1 if `scales` equal some constant's scales, float32 for float32; for biases (`whole`)
    also k when that constant's scales are k × these (its values lie on this finer grid)."""
    mine = np.asarray(scales, np.float64)
    same = [c for c in consts if c.shape == mine.shape]
    if any(np.all(c.astype(np.float32) == mine.astype(np.float32)) for c in same):
        return 1  # an exact match wins over a multiple met earlier (a weight's s_w = k·s_in·s_w)
    for c in same if whole else []:
        k = c / mine
        if np.all(k >= 1) and np.all(np.abs(k - np.round(k)) <= 1e-5 * k):
            return round(float(np.max(k)))
    return None


def _equal(a: Any, b: Any) -> bool:
    a, b = np.ravel(a), np.ravel(b)
    return a.shape == b.shape and bool(np.all(a.astype(np.float32) == b.astype(np.float32)))


def require_kept(summary: Mapping[str, Any]) -> None:
    """Raise LoweringError if any integer tensor lost its QDQ parameters."""
    if summary["differ"]:
        raise LoweringError(
            f"the .tflite does not keep the QDQ model's scales on {len(summary['differ'])} "
            f"tensor(s), e.g. {summary['differ'][0]}; report this as a lowering bug with the "
            "QDQ model"
        )
