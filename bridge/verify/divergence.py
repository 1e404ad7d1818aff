"""The first diverging layer of a per-layer comparison, the layers to blame, and why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx

from bridge.modes import MODES
from bridge.runtime import tolerances

#: Stop walking upstream for the layers to blame after this many nodes.
MAX_SUSPECTS = 64
#: A tensor below a quantized link's floor, while the outputs meet it, diverges only if it lost
#: this much SQNR against its inputs in one layer (a tenfold noise power: a fault such as a bad
#: range loses tens of dB). Accumulated noise loses little per layer: at most 3.4 dB where
#: MiniLM's per-token states sink 2 dB below the dynamic floor that mean pooling then recovers.
LAYER_DROP_DB = 10.0


def first_divergence(
    layers: Mapping[str, Any],
    model: onnx.ModelProto,
    quant: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The first row (graph order) where a judged link misses its floor, explained; or None.

    On a link whose error accumulates (quantized values) and on which every graph output meets
    its floor, an intermediate tensor below the floor diverges only if it lost at least
    LAYER_DROP_DB against its inputs: otherwise it carries the noise of many layers, which the
    later layers average out (see `accumulated`).
    """
    judged = [k for k in layers["links"] if k["kind"] and k["floor"] is not None]
    outputs = {o.name for o in model.graph.output}
    excused = excused_links(layers, outputs)
    for row in layers["rows"]:
        missed = [
            k
            for k in judged
            if k["pair"] in row["metrics"]
            and row["metrics"][k["pair"]]["sqnr_db"] < k["floor"]
            and not within_steps(row["metrics"][k["pair"]], layers.get("mode", ""), k["pair"])
            and not (
                k["pair"] in excused
                and row["tensor"] not in outputs
                and accumulated(model, row, k["pair"], layers["rows"])
            )
        ]
        if not missed:
            continue
        link = missed[0]
        m = row["metrics"][link["pair"]]
        suspects, upstream = _suspects(model, row["tensor"], link["pair"], layers["rows"])
        layer = _blame(row, link["kind"], suspects)
        found = {
            "tensor": row["tensor"],
            "node": row["node"],
            "op": row["op"],
            "index": row["index"],
            "layer": layer[0],
            "layer_op": layer[1],
            "suspects": [s[0] for s in suspects],
            "pair": link["pair"],
            "kind": link["kind"],
            "also": [k["pair"] for k in missed[1:]],
            "sqnr_db": m["sqnr_db"],
            "floor": link["floor"],
            "max_abs": m["max_abs"],
            "lsb_max": m["lsb_max"],
            "value_range": row["range"],
            "input_sqnr_db": upstream,
        }
        if link["kind"] == "quantization":
            found["quantization"] = _quant_fact(quant.get(row["tensor"]))
        found["explanation"] = explain(found, layers.get("labels", {}))
        return found
    return None


def within_steps(metrics: Mapping[str, Any], mode: str, pair: str) -> bool:
    """A quantized tensor whose error on an "lsb" pair (QDQ ⇄ .tflite) is within the gate's
    rms budget of output steps, whatever its SQNR (`tolerances.lsb_floor_db`, per layer)."""
    rms = metrics.get("lsb_rms")
    if rms is None or MODES.get(mode).rule(pair) != "lsb":
        return False
    return rms <= tolerances.MAX_RMS_LSB[mode]


def accumulated(
    model: onnx.ModelProto, row: Mapping[str, Any], pair: str, rows: list[dict[str, Any]]
) -> bool:
    """`row` lost less than LAYER_DROP_DB on `pair` against its nearest compared inputs."""
    _, upstream = _suspects(model, row["tensor"], pair, rows)
    return upstream is not None and upstream - row["metrics"][pair]["sqnr_db"] < LAYER_DROP_DB


def excused_links(layers: Mapping[str, Any], outputs: set[str]) -> set[str]:
    """Links that accumulate error and on which every graph output meets its floor (in dB, or
    in output steps on an "lsb" pair, as the gate judges it)."""
    excused = set()
    mode = layers.get("mode", "")
    for k in layers["links"]:
        if not (k.get("accumulates") and k["kind"] and k["floor"] is not None):
            continue
        got = [
            r["metrics"][k["pair"]]
            for r in layers["rows"]
            if r["tensor"] in outputs and k["pair"] in r["metrics"]
        ]
        if got and all(m["sqnr_db"] >= k["floor"] or within_steps(m, mode, k["pair"]) for m in got):
            excused.add(k["pair"])
    return excused


def _blame(row: Mapping[str, Any], kind: str, suspects: list[tuple[str, str]]) -> tuple[str, str]:
    """The layer to name: a quantized tensor carries its own error; otherwise the first layer
    after the last agreeing tensors. A torch value is bound to the output of a module whose
    inputs agree (see bridge.runtime.module_map), so an export error lies inside that module's
    scope: the first suspect there."""
    if kind == "quantization" or not suspects:
        return row["node"], row["op"]
    if kind == "export":
        scope = row["node"].rsplit("/", 1)[0] + "/"
        inside = [s for s in suspects if s[0].startswith(scope)]
        return (inside or suspects)[0]
    return suspects[0]


def _quant_fact(fact: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not fact:
        return None
    keys = ("range", "observed_range", "scale", "zero_point", "dtype", "observer")
    return {k: fact.get(k) for k in keys if k in fact}


def _suspects(
    model: onnx.ModelProto, tensor: str, pair: str, rows: list[dict[str, Any]]
) -> tuple[list[tuple[str, str]], float | None]:
    """Nodes between `tensor` and the nearest upstream tensors compared on `pair`, in graph
    order: the layers that may have caused the divergence seen at `tensor`, and the lowest SQNR
    on those upstream tensors (None if there are none). Every row before the first divergence
    agrees, so any compared upstream tensor is a good one. Nodes that compute no float tensor
    (shape arithmetic) are left out."""
    sqnr = {
        r["tensor"]: r["metrics"][pair]["sqnr_db"]
        for r in rows
        if pair in r["metrics"] and r["tensor"] != tensor
    }
    floats = {r["tensor"] for r in rows}
    producer = {o: (i, n) for i, n in enumerate(model.graph.node) for o in n.output}
    seen: dict[int, onnx.NodeProto] = {}
    boundary: list[float] = []
    stack = [tensor]
    while stack and len(seen) < MAX_SUSPECTS:
        t = stack.pop()
        if t not in producer:
            continue
        i, node = producer[t]
        if i in seen or node.op_type == "Constant":
            continue
        seen[i] = node
        for u in node.input:
            if u in sqnr:
                boundary.append(sqnr[u])
            elif u:
                stack.append(u)
    nodes = [
        (seen[i].name or seen[i].output[0], seen[i].op_type)
        for i in sorted(seen)
        if floats.intersection(seen[i].output)
    ]
    return nodes, (min(boundary) if boundary else None)


def explain(found: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """One paragraph: which layer, which link, what it means and what to look at."""
    ref, cand = found["pair"].split("_vs_")
    where = f"layer {short_name(found['layer'])} ({found['layer_op']})"
    if found["tensor"] != found["layer"]:
        where += f", seen at tensor {found['tensor']}"
    head = (
        f"first diverging {where}: {labels.get(cand, cand)} vs {labels.get(ref, ref)} "
        f"SQNR {found['sqnr_db']:.1f} dB < {found['floor']:.0f} dB (max abs {found['max_abs']:.3g}"
        + (f", {found['lsb_max']:.1f} LSB" if found.get("lsb_max") is not None else "")
        + ")"
        + (
            f", down from {found['input_sqnr_db']:.1f} dB on its inputs."
            if found.get("input_sqnr_db") is not None
            else "."
        )
    )
    kind = found["kind"]
    if kind == "export":
        return head + " Export error: the ONNX model already disagrees with torch here."
    if kind == "conversion":
        return head + (
            f" Conversion error: the .tflite disagrees with the ONNX model it was lowered from "
            f"({labels.get(ref, ref)}), while the layers before agree."
        )
    if kind == "end-to-end":
        return head + (
            " Quantization and conversion errors add up here: the quantized ONNX model and the "
            ".tflite each stay within their own floor, but together the .tflite is too far "
            "from the float ONNX model. Compare both links in the per-layer table."
        )
    text = head + (
        " Quantization error: the quantized ONNX model disagrees with the float one here and "
        "the .tflite follows it."
    )
    q = found.get("quantization") or {}
    vr = found.get("value_range")
    if q.get("range"):
        text += f" Quantization range [{q['range'][0]:.4g}, {q['range'][1]:.4g}]"
        if q.get("observed_range"):
            obs = q["observed_range"]
            text += f" (observer {q.get('observer', '')} saw [{obs[0]:.4g}, {obs[1]:.4g}])"
        if vr:
            text += f"; on the verification samples the tensor spans [{vr[0]:.4g}, {vr[1]:.4g}]"
        text += "."
    return text


def short_name(node: str) -> str:
    """ "/features/features.1/block/block.0/Conv" → "features.1/block.0/Conv"."""
    parts = [p for p in node.split("/") if p]
    keep = [
        p
        for i, p in enumerate(parts)
        if i + 1 == len(parts) or not parts[i + 1].startswith(p + ".")
    ]
    return "/".join(keep) or node
