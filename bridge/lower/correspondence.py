"""Which .tflite tensor holds each ONNX tensor, and in which layout.

Built from onnx2tf's tensor correspondence report, then carried through our own rewrites
(`transposes.Moved`: a vanished tensor equals transpose(surviving tensor, perm)). Each entry:

    {"tflite": tensor name, "channel_last": bool, "fused": bool}

`channel_last` means the .tflite tensor is the ONNX tensor with its channel axis moved last.
`fused` marks an ONNX tensor whose .tflite tensor also stands for a later ONNX tensor, e.g. a
Conv output that onnx2tf fused with the following Relu: the values there are post-activation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.contract import CHANNEL_LAST, IOContract
from bridge.lower import graph_edit, tflite_io
from bridge.lower.layout import channel_first_perm
from bridge.lower.transposes import Moved


def build(
    records: Iterable[Mapping[str, Any]],
    moved: Moved,
    model: Any,
    contract: IOContract,
) -> dict[str, dict[str, Any]]:
    """ONNX tensor name → {"tflite", "channel_last", "fused"} for tensors in the final model."""
    sg = model.subgraphs[0]
    ranks = {tflite_io.tensor_name(t): len(graph_edit.shape_of(t)) for t in sg.tensors}
    found: dict[str, dict[str, Any]] = {}
    for spec in contract.inputs:
        found[spec.name] = {
            "tflite": spec.name,
            "channel_last": spec.layout == CHANNEL_LAST.get(spec.rank),
            "fused": False,
        }
    owners: dict[str, str] = {}
    for rec in records:
        if not rec.get("exists_in_final_model"):
            continue
        onnx_name, name = rec.get("onnx_output_name"), rec.get("resolved_tflite_tensor_name")
        if not onnx_name or not name:
            continue
        located = _follow(name, bool(rec.get("assume_channel_last_layout")), moved, ranks)
        if located is None or located[0] not in ranks:
            continue
        name, perm = located
        rank = ranks[name]
        if list(perm) == list(range(rank)):
            channel_last = False
        elif rank >= 3 and list(perm) == channel_first_perm(rank):
            channel_last = True
        else:
            continue
        if name in owners:
            found[owners[name]]["fused"] = True
        owners[name] = onnx_name
        found[onnx_name] = {"tflite": name, "channel_last": channel_last, "fused": False}
    return found


def _follow(
    name: str, channel_last: bool, moved: Moved, ranks: Mapping[str, int]
) -> tuple[str, tuple[int, ...]] | None:
    """Where `name` ended up: (tensor, perm) with ONNX value = transpose(tensor, perm)."""
    perm: tuple[int, ...] | None = None
    seen: set[str] = set()
    while name in moved and name not in seen:
        seen.add(name)
        new, step = moved[name]
        if perm is None:
            rank = len(step)
            perm = tuple(channel_first_perm(rank) if channel_last else range(rank))
        # onnx = transpose(old, perm) and old = transpose(new, step), so onnx axis i is
        # new axis step[perm[i]].
        perm = tuple(step[p] for p in perm)
        name = new
    if perm is None:
        if name not in ranks:
            return None
        rank = ranks[name]
        perm = tuple(channel_first_perm(rank) if channel_last and rank >= 3 else range(rank))
    return name, perm
