"""Which .tflite tensor holds each ONNX tensor, and in which layout.

Built from onnx2tf's tensor correspondence report, located on the freshly converted model
(`locate`), then carried through our own rewrites, which report vanished tensors in
`transposes.Moved` (tensors are tracked as objects because `layout.py` renames them). Entries:

    {"tflite": tensor name, "channel_last": bool, "fused": bool}

`channel_last` means the .tflite tensor is the ONNX tensor with its channel axis moved last.
`fused` marks an ONNX tensor whose .tflite tensor also stands for a later ONNX tensor, e.g. a
Conv output that onnx2tf fused with the following Relu: the values there are post-activation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import onnx

from bridge.contract import CHANNEL_LAST, IOContract
from bridge.lower import tflite_graph
from bridge.lower.floating.layout import channel_first_perm
from bridge.lower.floating.transposes import Moved
from bridge.runtime import tflite_io

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Located:
    """An ONNX tensor found in the converted model: its tensor object and layout relation.

    `perm` says ONNX value = transpose(tensor, perm).
    """

    onnx_name: str
    tensor: Any
    perm: tuple[int, ...]


def locate(
    records: Iterable[Mapping[str, Any]], model: Any, onnx_model: onnx.ModelProto
) -> list[Located]:
    """Resolve onnx2tf's report records to tensor objects of the main subgraph (in record order).

    A record is kept only if the .tflite tensor, transposed as the record says, has the ONNX
    tensor's inferred shape (onnx2tf maps some tensors, e.g. Constant outputs, to unrelated ones).
    """
    tensors = {tflite_io.tensor_name(t): t for t in model.subgraphs[0].tensors}
    shapes = onnx_shapes(onnx_model)
    found = []
    for rec in records:
        onnx_name, name = rec.get("onnx_output_name"), rec.get("resolved_tflite_tensor_name")
        if not rec.get("exists_in_final_model") or not onnx_name or name not in tensors:
            continue
        if rec.get("onnx_op_type") == "Constant" or onnx_name not in shapes:
            continue
        tensor = tensors[name]
        shape = tflite_graph.shape_of(tensor)
        cl = bool(rec.get("assume_channel_last_layout")) and len(shape) >= 3
        perm = tuple(channel_first_perm(len(shape))) if cl else tuple(range(len(shape)))
        if _same_shape([shape[p] for p in perm], shapes[onnx_name]):
            found.append(Located(onnx_name, tensor, perm))
    return found


def onnx_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Inferred shapes of the ONNX model's tensors (None for a symbolic dimension)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, ValueError) as e:
        log.debug("ONNX shape inference failed; no tensor correspondence: %s", e)
        return {}
    graph = inferred.graph
    shapes = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return shapes


def _same_shape(tflite: list[int], onnx_shape: tuple[int | None, ...]) -> bool:
    return len(tflite) == len(onnx_shape) and all(
        o is None or t in (o, -1) for t, o in zip(tflite, onnx_shape, strict=True)
    )


def build(
    located: Iterable[Located], moved: Moved, model: Any, contract: IOContract
) -> dict[str, dict[str, Any]]:
    """ONNX tensor name → {"tflite", "channel_last", "fused"} for tensors in the final model."""
    alive = {id(t) for t in model.subgraphs[0].tensors}
    found: dict[str, dict[str, Any]] = {
        s.name: {
            "tflite": s.name,
            "channel_last": s.layout == CHANNEL_LAST.get(s.rank),
            "fused": False,
        }
        for s in contract.inputs
    }
    owners: dict[int, str] = {}
    for loc in located:
        tensor, perm = _follow(loc.tensor, loc.perm, moved)
        if id(tensor) not in alive:
            continue
        rank = len(perm)
        if list(perm) == list(range(rank)):
            channel_last = False
        elif rank >= 3 and list(perm) == channel_first_perm(rank):
            channel_last = True
        else:
            continue
        if id(tensor) in owners:
            found[owners[id(tensor)]]["fused"] = True
        owners[id(tensor)] = loc.onnx_name
        found[loc.onnx_name] = {
            "tflite": tflite_io.tensor_name(tensor),
            "channel_last": channel_last,
            "fused": False,
        }
    return found


def _follow(tensor: Any, perm: tuple[int, ...], moved: Moved) -> tuple[Any, tuple[int, ...]]:
    """Follow `moved` from `tensor`: onnx = transpose(old, perm), old = transpose(new, step),
    so onnx axis i is new axis step[perm[i]]."""
    for _ in range(1000):  # chains are short; the bound only guards against a cycle
        step = moved.get(tensor)
        if step is None:
            break
        tensor, p = step
        perm = tuple(p[i] for i in perm)
    return tensor, perm
