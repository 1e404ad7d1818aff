"""Find which ONNX tensor each TFLite tensor holds, by value.

onnx2tf renames, transposes and re-creates tensors while lowering, and its correspondence
report misses many of them (36 of 64 on MobileNetV2). Values do not lie: we run the float ONNX
graph (ONNX Runtime, every node output exposed) and the float TFLite (LiteRT, every tensor kept)
on the same input, and a TFLite tensor holds ONNX tensor X when both have the same number of
elements and the same sorted values, up to float32 summation-order noise. Sorting makes the
test blind to layout (NCHW ⇄ NHWC, reshapes), which is exactly what lowering changes.

Weights are matched the same way, one output channel at a time, so that the per-channel scales
of the QDQ model follow their channels into the TFLite layout.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import onnx

from bridge.contract import IOContract
from bridge.runtime.feeds import random_feeds
from bridge.runtime.runners import LiteRTRunner, OrtRunner

log = logging.getLogger(__name__)

#: Two tensors hold the same values when their sorted values differ by at most this fraction of
#: the largest magnitude. ORT and LiteRT sum in different orders (≈1e-6 relative in float32, a
#: little more through deep nets); distinct tensors of a random-input network differ by O(1).
MATCH_RTOL = 1e-3


def float_values(
    onnx_model: onnx.ModelProto,
    tflite: bytes,
    *,
    contract: IOContract,
    tflite_contract: IOContract,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """Run both float models on one seeded random input.

    Returns:
        (ONNX node output name → value, TFLite tensor index → value) for float32 tensors.
    """
    feeds = match_feeds(contract, seed=seed)
    names = [o for n in onnx_model.graph.node for o in n.output if o]
    ort = OrtRunner(onnx_model, contract, extra_outputs=names)
    onnx_vals = {**feeds, **ort.run(feeds)}
    onnx_vals = {
        k: v for k, v in onnx_vals.items() if isinstance(v, np.ndarray) and v.dtype == np.float32
    }
    with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": it is, here
        warnings.simplefilter("ignore", UserWarning)
        lite = LiteRTRunner(
            tflite, tflite_contract, user_contract=contract, preserve_all_tensors=True
        )
    lite.run(feeds)
    interp = lite.interpreter
    tfl_vals: dict[int, np.ndarray] = {}
    for d in interp.get_tensor_details():
        if d["dtype"] != np.float32:
            continue
        try:
            tfl_vals[d["index"]] = np.array(interp.get_tensor(d["index"]))
        except ValueError:  # tensors without data (optional inputs) cannot be read
            continue
    return onnx_vals, tfl_vals


def match_feeds(contract: IOContract, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for matching: standard-normal floats, integers in {0, 1}.

    0 and 1 are valid for any index, mask or flag input, where `random_feeds`' 0-9 are not:
    an attention mask of 9 becomes a bias of +80000, whose softmax sends float32 noise past
    MATCH_RTOL (all-MiniLM-L6-v2: 5 tensors unmatched, distance 1.3e-3; with 0/1: 1.7e-6).
    """
    feeds = random_feeds(contract, seed=seed)
    return {k: v if v.dtype.kind == "f" else (v % 2).astype(v.dtype) for k, v in feeds.items()}


def _distance(a_sorted: np.ndarray, b_sorted: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(b_sorted))), 1e-12) if b_sorted.size else 1.0
    return float(np.max(np.abs(a_sorted - b_sorted))) / scale if a_sorted.size else 0.0


def match_activations(
    tfl_vals: Mapping[int, np.ndarray],
    onnx_vals: Mapping[str, np.ndarray],
    *,
    candidates: set[int] | None = None,
) -> dict[int, list[str]]:
    """TFLite tensor index → the ONNX tensors with the same values, best match first.

    Args:
        tfl_vals: TFLite activations by tensor index.
        onnx_vals: ONNX activations by name.
        candidates: restrict to these TFLite tensors (default: all in `tfl_vals`).
    """
    by_size: dict[int, list[tuple[str, np.ndarray]]] = defaultdict(list)
    for name, v in onnx_vals.items():
        if np.all(np.isfinite(v)):
            by_size[v.size].append((name, np.sort(v, axis=None)))
    out: dict[int, list[str]] = {}
    for idx, v in tfl_vals.items():
        if candidates is not None and idx not in candidates:
            continue
        group = by_size.get(v.size)
        if not group or not np.all(np.isfinite(v)):
            continue
        mine = np.sort(v, axis=None)
        scored = sorted((_distance(mine, ref), name) for name, ref in group)
        hits = [name for d, name in scored if d <= MATCH_RTOL]
        if hits:
            out[idx] = hits
    return out


def _rows(w: np.ndarray, axis: int) -> np.ndarray:
    """The tensor as [channels, rest], each row sorted."""
    return np.sort(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1), axis=1)


def match_channels(
    weight: np.ndarray,
    axis: int,
    onnx_weights: Mapping[str, tuple[np.ndarray, int]],
) -> str | None:
    """The ONNX weight whose channel c holds the values of TFLite channel c along `axis`.

    Args:
        weight: a TFLite filter.
        axis: its output-channel axis in the TFLite layout.
        onnx_weights: name → (dequantized ONNX weight, its output-channel axis).

    Returns:
        The matching ONNX name, or None.
    """
    mine = _rows(weight, axis)
    for name, (ref, ref_axis) in onnx_weights.items():
        if ref.size != weight.size or ref.shape[ref_axis] != weight.shape[axis]:
            continue
        if _distance(mine, _rows(ref, ref_axis)) <= 1e-6:
            return name
    return None


def match_constant(value: np.ndarray, onnx_consts: Mapping[str, np.ndarray]) -> str | None:
    """The ONNX constant with the same sorted values as `value`, or None."""
    mine = np.sort(value, axis=None).astype(np.float64)
    for name, ref in onnx_consts.items():
        if ref.size == value.size and _distance(mine, np.sort(ref, axis=None)) <= 1e-6:
            return name
    return None


def match_channels_scaled(
    weight: np.ndarray,
    axis: int,
    onnx_weights: Mapping[str, tuple[np.ndarray, int]],
) -> tuple[str, float] | None:
    """The ONNX weight that `weight` equals times one positive factor k, and k.

    onnx2tf folds a constant multiplier into a conv (HardSigmoid's 1/6 after a squeeze-excite
    conv): the TFLite filter is then k × the QDQ weight, the same int8 levels at scale k·s.
    """
    mine = _rows(weight, axis)
    for name, (ref, ref_axis) in onnx_weights.items():
        if ref.size != weight.size or ref.shape[ref_axis] != weight.shape[axis]:
            continue
        theirs = _rows(ref, ref_axis)
        norm = float(np.sum(theirs * theirs))
        if norm == 0.0:
            continue
        k = float(np.sum(mine * theirs)) / norm
        if k > 0 and _distance(mine, k * theirs) <= 1e-6:
            return name, k
    return None
