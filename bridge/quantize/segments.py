"""Run an ONNX graph in segments, editing chosen tensors between them.

Sequential post-training methods (bias correction, range search) need the *quantized* model's
value of a layer's output with every upstream layer already fixed, then change that layer and
carry on. Re-running the whole model once per layer costs layers × passes; instead the graph is
cut after each chosen node into consecutive pieces (ONNX graphs are topologically sorted, so a
contiguous run of nodes is a valid sub-model) and each piece runs once per sample in ONNX
Runtime. Between pieces, a callback sees the cut node's output for every sample and may replace
it; the pieces after it read the replaced value. The cost is one forward pass per sample.

Constant nodes (every input an initializer: the DequantizeLinear of a weight or a bias, a
Constant) are copied into each piece that reads them, so their outputs are never carried over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from bridge.errors import ModelLoadError
from bridge.quantize.plan import elem_types

log = logging.getLogger(__name__)

#: Callback: (cut node index, its first output's values, one array per sample) → new values.
Edit = Callable[[int, list[np.ndarray]], list[np.ndarray]]


class SegmentedGraph:
    """`model` cut after the nodes `cuts` (indices into its graph's nodes).

    Args:
        model: an ONNX model without subgraphs (If/Loop/Scan bodies).
        cuts: node indices; each cut node's first output is handed to the edit callback.
            Nodes after the last cut are not run.

    Raises:
        ValueError: a node has a subgraph, or a cut index is out of range.
    """

    def __init__(self, model: onnx.ModelProto, cuts: Sequence[int]) -> None:
        graph = model.graph
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for n in graph.node
            for a in n.attribute
        ):
            raise ValueError("graphs with subgraphs (If/Loop/Scan) cannot be cut into segments")
        nodes = list(graph.node)
        self.cuts = sorted(set(cuts))
        if self.cuts and not 0 <= self.cuts[0] <= self.cuts[-1] < len(nodes):
            raise ValueError(
                f"cut indices {self.cuts[0]}..{self.cuts[-1]} outside 0..{len(nodes) - 1}"
            )
        self.model = model
        inits = {t.name: t for t in graph.initializer}
        const_nodes = _constant_nodes(nodes, set(inits))
        producer = {t: i for i, n in enumerate(nodes) for t in n.output if t}
        types = elem_types(model)
        pieces: list[list[int]] = []
        current: list[int] = []
        cut_set = set(self.cuts)
        for i in range(self.cuts[-1] + 1 if self.cuts else 0):
            if i in const_nodes:
                continue
            current.append(i)
            if i in cut_set:
                pieces.append(current)
                current = []
        last_use: dict[str, int] = {}
        for k, piece in enumerate(pieces):
            for i in piece:
                for t in nodes[i].input:
                    if t and t in producer and producer[t] not in const_nodes:
                        last_use[t] = k
        self._specs: list[_Piece] = []
        for k, piece in enumerate(pieces):
            consts = _closure(piece, nodes, const_nodes, producer)
            made = {t for i in piece for t in nodes[i].output if t}
            reads = [t for i in piece for t in nodes[i].input if t]
            ins = list(dict.fromkeys(t for t in reads if t not in made and t not in inits))
            ins = [t for t in ins if t not in producer or producer[t] not in const_nodes]
            cut_out = nodes[piece[-1]].output[0]
            outs = [t for t in dict.fromkeys(made) if last_use.get(t, -1) > k or t == cut_out]
            used_inits = {t for i in [*consts, *piece] for t in nodes[i].input if t in inits}
            sub = helper.make_graph(
                [nodes[i] for i in [*consts, *piece]],
                f"segment_{k}",
                [
                    helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.FLOAT), None)
                    for t in ins
                ],
                [onnx.ValueInfoProto(name=t) for t in outs],
                [inits[t] for t in sorted(used_inits)],
            )
            sub_model = helper.make_model(sub, opset_imports=list(model.opset_import))
            sub_model.ir_version = model.ir_version
            sub_model.functions.extend(model.functions)
            self._specs.append(_Piece(piece[-1], ins, outs, sub_model, last_use))

    def run(self, samples: Sequence[Mapping[str, np.ndarray]], edit: Edit) -> None:
        """Run every piece over all `samples` (graph input name → array), calling `edit` after
        each with the cut node's output per sample; later pieces read what `edit` returns.

        Raises:
            ModelLoadError: ONNX Runtime cannot load or run a piece.
        """
        live: dict[str, list[np.ndarray]] = {}
        for name in {t for s in samples for t in s}:
            live[name] = [np.asarray(s[name]) for s in samples]
        for k, spec in enumerate(self._specs):
            session = _session(spec.model, k)
            results: dict[str, list[np.ndarray]] = {t: [] for t in spec.outputs}
            for j in range(len(samples)):
                feeds = {t: live[t][j] for t in spec.inputs}
                try:
                    values = session.run(spec.outputs, feeds)
                except Exception as e:  # onnxruntime raises untyped errors
                    raise ModelLoadError(f"ONNX Runtime failed on segment {k}: {e}") from e
                for t, v in zip(spec.outputs, values, strict=True):
                    results[t].append(v)
            cut_out = spec.outputs_cut
            results[cut_out] = edit(spec.cut, results[cut_out])
            live.update(results)
            for t in [t for t in live if spec.last_use.get(t, len(self._specs)) <= k]:
                del live[t]


class _Piece:
    """One segment: its cut node, input and output names, the sub-model."""

    def __init__(
        self,
        cut: int,
        inputs: list[str],
        outputs: list[str],
        model: onnx.ModelProto,
        last_use: Mapping[str, int],
    ) -> None:
        self.cut = cut
        self.inputs = inputs
        self.outputs = outputs
        self.model = model
        self.last_use = last_use
        self.outputs_cut = model.graph.node[-1].output[0]


def _session(model: onnx.ModelProto, index: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise ModelLoadError(f"ONNX Runtime cannot load segment {index}: {e}") from e


def _constant_nodes(nodes: Sequence[onnx.NodeProto], inits: set[str]) -> set[int]:
    """Nodes computed from initializers (and other constant nodes) only."""
    const: set[int] = set()
    known = set(inits)
    for i, n in enumerate(nodes):
        if all(not t or t in known for t in n.input):
            const.add(i)
            known.update(t for t in n.output if t)
    return const


def _closure(
    piece: Sequence[int],
    nodes: Sequence[onnx.NodeProto],
    const_nodes: set[int],
    producer: Mapping[str, int],
) -> list[int]:
    """The constant nodes `piece` reads, directly or through other constant nodes, in order."""
    need: set[int] = set()
    stack = [t for i in piece for t in nodes[i].input if t]
    while stack:
        t = stack.pop()
        j = producer.get(t)
        if j is not None and j in const_nodes and j not in need:
            need.add(j)
            stack.extend(x for x in nodes[j].input if x)
    return sorted(need)
