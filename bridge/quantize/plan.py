"""The quantization plan: which nodes, tensors and constants are quantized, and how.

Derived from the graph, the rules table and the config only (no data), so calibration knows
which tensors to observe and the QDQ writer knows where to put QuantizeLinear/DequantizeLinear.

- A node is quantized when its op has an integer rule for the activation dtype, it is not
  excluded, and it has float data inputs; a "same"-scale node (reshape, pool, ...) also needs
  a quantized compute node somewhere along its inputs or outputs. Float nodes with float data
  are listed with a reason; integer-only nodes (shape arithmetic) are ignored.
- Activations: the float, non-constant data inputs and outputs of quantized nodes, except the
  output of a Conv/Gemm/MatMul/Add/Sub/Mul that only feeds a fusable Relu/Clip (TFLite fuses it).
- Shared-scale groups: a "same" op joins its output with its first data input; Concat/Max/Min
  join every data input with the output. Fixed-qparams outputs impose their qparams on the group.
- Symmetric tensors: activations a rule lists in `symmetric_inputs` (MatMul's input 1) need
  zero point 0; their whole group is quantized symmetrically.
- Fused patterns (`bridge.quantize.patterns`): a GELU chain is one quantized node (its input and
  output get QDQ, nothing inside); MatMul(W) + Add(b) is one linear layer whose product is not
  rounded and whose bias is int32 with scale s_in·s_w, as in TFLite's FULLY_CONNECTED.
- Float islands: a cheap op (`rules.FLOAT_ABSORBED_OPS`) whose every reader is float stays
  float, since its int8 result would be dequantized at once (a transformer's residual stream).
- Weight-only layers (data-dependent, so only when the observers are given): a linear layer
  whose every reader is float and whose output int8 cannot hold (`rules.WEIGHT_ONLY_OPS`) runs
  float on int8 per-channel weights, with a float bias; the float islands are then re-grown.
- Tables: the constant 2-D table of a float Gather is an int8 weight, one scale per row
  (`rules.INT8_TABLE_OPS`).
- Graph outputs are always quantized (a float op's output too): an int8 model has int8 outputs,
  which `io_dtype="int8"` hands out and the output-LSB parity check measures. Graph inputs are
  quantized whoever reads them when `io_dtype` is an integer type.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from bridge.qparams import qrange
from bridge.quantize.config import QuantConfig
from bridge.quantize.observers import Observer
from bridge.quantize.patterns import Match, find_patterns
from bridge.quantize.rules import (
    FLOAT_ABSORBED_OPS,
    INT8_TABLE_OPS,
    UNLISTED_REASON,
    WEIGHT_ONLY_MIN_LEVELS,
    WEIGHT_ONLY_OPS,
    WEIGHT_ONLY_REASON,
    OpRule,
    fusable_activation,
    rule_for,
    weight_axis,
)

log = logging.getLogger(__name__)

#: Ops whose constant weights dynamic mode quantizes.
DYNAMIC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
EXCLUDED = "excluded by QuantConfig.exclude_nodes"
ISOLATED_MOVE = "moves data between float ops only; no quantized neighbour"
ABSORBED = (
    "only float ops read its output: an int8 result would be dequantized at once, a rounding "
    "that buys no integer kernel (rules.FLOAT_ABSORBED_OPS)"
)


@dataclass(frozen=True)
class WeightUse:
    """A constant weight (and maybe its bias) of one node: a quantized one, or a float one
    that computes on the dequantized int8 weight (weight-only layers, Gather tables)."""

    node: str
    weight: str
    axis: int | None
    bias: str | None = None
    source: str | None = None  # the activation whose scale is s_in in the bias scale
    bias_node: str | None = None  # the node reading the bias, when not `node` (MatMul + Add)

    @property
    def bias_reader(self) -> str:
        """The node whose input is the bias."""
        return self.bias_node or self.node


@dataclass
class QuantPlan:
    """What the QDQ writer does; every list keeps graph order."""

    node_names: list[str]
    quantized: dict[int, OpRule] = field(default_factory=dict)  # node index → rule
    activations: list[str] = field(default_factory=list)
    constants: list[str] = field(default_factory=list)  # constant data inputs to quantize
    weights: list[WeightUse] = field(default_factory=list)
    fixed: dict[str, tuple[float, int]] = field(default_factory=dict)
    groups: list[list[str]] = field(default_factory=list)  # tensors sharing one scale
    fused: list[dict[str, str]] = field(default_factory=list)
    float_nodes: list[dict[str, str]] = field(default_factory=list)
    data_inputs: dict[int, list[str]] = field(default_factory=dict)  # node index → data inputs
    symmetric: set[str] = field(default_factory=set)  # tensors that need zero point 0
    patterns: list[dict[str, object]] = field(default_factory=list)  # fused patterns applied
    inside: set[int] = field(default_factory=set)  # nodes inside an applied fused pattern
    weight_only: list[int] = field(default_factory=list)  # float nodes with int8 weights

    def group_of(self) -> dict[str, list[str]]:
        """Tensor name → the group (list of tensor names) it shares a scale with."""
        return {t: g for g in self.groups for t in g}


def node_names(graph: onnx.GraphProto) -> list[str]:
    """Each node's name, or "<op>_<index>" for unnamed ones (unique)."""
    names: list[str] = []
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        names.append(name)
    return names


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs that are not graph inputs, as numpy arrays."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name not in inputs}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            attr = {a.name: a for a in node.attribute}
            if "value" in attr:
                values[node.output[0]] = numpy_helper.to_array(attr["value"].t)
            elif "value_float" in attr:
                values[node.output[0]] = np.array(attr["value_float"].f, np.float32)
            elif "value_floats" in attr:
                values[node.output[0]] = np.array(attr["value_floats"].floats, np.float32)
    return values


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor shape inference knows (inputs, outputs, value_info)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # shape inference fails on some custom ops; types then stay unknown
        log.debug("shape inference failed (%s); unknown tensors count as float", e)
        inferred = model
    g = inferred.graph
    return {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*g.input, *g.output, *g.value_info]
        if vi.type.tensor_type.elem_type
    }


def float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names whose known element type is float32 (unknown types count as float)."""
    g = model.graph
    types = elem_types(model)
    types.update({t.name: t.data_type for t in g.initializer})
    for name, value in constant_values(model).items():
        types[name] = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    names = {t for n in g.node for t in [*n.input, *n.output] if t} | set(types)
    unknown = (0, onnx.TensorProto.UNDEFINED)
    return {t for t in names if types.get(t, 0) in (onnx.TensorProto.FLOAT, *unknown)}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def build_plan(
    model: onnx.ModelProto,
    config: QuantConfig,
    *,
    available: Collection[str] | None = None,
    observers: Mapping[str, Observer] | None = None,
) -> QuantPlan:
    """Plan the quantization of `model` under `config`.

    Args:
        model: the float ONNX model.
        config: the quantization config.
        available: activation tensors that have statistics; a node needing another stays float
            (None: those of `observers`; without them, assume all do, as when planning what to
            calibrate).
        observers: the calibration statistics, for the choices that depend on data (the
            weight-only linear layers); None plans as if every such layer were int8.
    """
    if config.activation_dtype is None:  # weights only (dynamic)
        return _dynamic_plan(model, config)
    if available is None and observers is not None:
        available = observers.keys()
    forced: dict[str, str] = {}
    while True:
        plan = _plan(model, config, forced, observers)
        if available is None:
            return plan
        acts = set(plan.activations)
        missing = {}
        for i in plan.quantized:
            node = model.graph.node[i]
            for t in [*plan.data_inputs[i], *node.output]:
                if t in acts and t not in available and t not in plan.fixed:
                    missing[plan.node_names[i]] = f"no calibration statistics for {t!r}"
        if not missing:
            # a float op's graph output without statistics stays float
            keep = {t for t in acts if t in available or t in plan.fixed}
            plan.activations = [t for t in plan.activations if t in keep]
            groups = [[t for t in g if t in keep or t not in acts] for g in plan.groups]
            plan.groups = [g for g in groups if g]
            return plan
        forced.update(missing)


@dataclass(frozen=True)
class _Facts:
    """What planning reads about the graph, computed once per plan."""

    graph: onnx.GraphProto
    consts: dict[str, np.ndarray]
    floats: set[str]
    consumers: dict[str, list[int]]  # tensor → indices of the nodes reading it
    matches: list[Match]
    gelu: dict[int, Match]  # last node of a GELU chain → its match
    owner: dict[int, int]  # node inside a GELU chain → the chain's last node


def _facts(model: onnx.ModelProto) -> _Facts:
    graph = model.graph
    consts = constant_values(model)
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        for t in node.input:
            if t:
                consumers[t].append(i)
    matches = find_patterns(graph, consts)
    gelu = {m.nodes[-1]: m for m in matches if m.pattern.name == "gelu_erf"}
    owner = {k: m.nodes[-1] for m in gelu.values() for k in m.nodes[:-1]}
    return _Facts(graph, consts, float_tensors(model), consumers, matches, gelu, owner)


def _plan(
    model: onnx.ModelProto,
    config: QuantConfig,
    forced: Mapping[str, str],
    observers: Mapping[str, Observer] | None,
) -> QuantPlan:
    g = _facts(model)
    plan = QuantPlan(node_names(g.graph))
    act_dtype = config.activation_dtype or "int8"
    _choose_nodes(plan, g, config, forced, act_dtype)
    internal, biases = _settle_float_nodes(plan, g, observers, act_dtype)
    acts, const_inputs, uf = _link_tensors(plan, g, act_dtype)
    _plan_all_weights(plan, g, biases)
    dropped = _fuse_activations(plan, g, uf) | internal
    kept = {t: None for t in acts if t not in dropped}
    kept.update(dict.fromkeys(_io_tensors(g, config)))
    plan.activations = list(kept)
    plan.constants = list(const_inputs)
    by_root: dict[str, list[str]] = defaultdict(list)
    for t in [*plan.activations, *plan.constants]:
        by_root[uf.find(t)].append(t)
    plan.groups = list(by_root.values())
    return plan


def _choose_nodes(
    plan: QuantPlan, g: _Facts, config: QuantConfig, forced: Mapping[str, str], act_dtype: str
) -> None:
    """Sort every node with float data into plan.quantized (with its data inputs) or
    plan.float_nodes (with its reason)."""
    for i, node in enumerate(g.graph.node):
        if i in g.owner:
            continue  # inside a fused op: only its input and output are quantized
        name = plan.node_names[i]
        op_type = node.op_type
        rule = rule_for(op_type, node)
        data = _data_inputs(node, rule, g.consts)
        if i in g.gelu:
            op_type, rule, data = "Gelu", rule_for("Gelu"), [g.gelu[i].data]
            reason = _chain_reason(g.gelu[i], plan.node_names, config, forced, act_dtype)
        else:
            reason = forced.get(name) or _float_reason(node, name, rule, config, act_dtype)
        float_data = [t for t in data if t in g.floats]
        float_out = [t for t in node.output if t and t in g.floats]
        if not float_data or not float_out or op_type == "Constant":
            continue  # integer arithmetic, constants: not ours to quantize
        if reason is not None or rule is None:
            plan.float_nodes.append({"node": name, "op": op_type, "reason": str(reason)})
            continue
        plan.quantized[i] = rule
        plan.data_inputs[i] = float_data


def _settle_float_nodes(
    plan: QuantPlan, g: _Facts, observers: Mapping[str, Observer] | None, act_dtype: str
) -> tuple[set[str], dict[int, tuple[str, str]]]:
    """Drop isolated moves, grow float islands, pick weight-only layers, apply the patterns;
    returns the patterns' internal tensors and folded biases (see _apply_patterns)."""
    graph, consumers, owner = g.graph, g.consumers, g.owner
    # fused ops have kernels of their own; those of FLOAT_ABSORBED_OPS may still stay float
    tails = {m.nodes[-1] for m in g.matches if m.pattern.rule_op not in FLOAT_ABSORBED_OPS}
    _drop_isolated_moves(plan, graph, plan.data_inputs, consumers)
    _absorb_into_float(plan, graph, consumers, owner, tails)
    coarse = _coarse_outputs(observers, act_dtype)
    if _keep_weight_only(plan, graph, consumers, owner, g.matches, g.consts, coarse):
        _absorb_into_float(plan, graph, consumers, owner, tails)  # what fed them may follow
    return _apply_patterns(plan, g.matches, g.gelu)


def _link_tensors(
    plan: QuantPlan, g: _Facts, act_dtype: str
) -> tuple[dict[str, None], dict[str, None], _UnionFind]:
    """The quantized nodes' activations and constant inputs (ordered sets) and their
    shared-scale groups; records fixed-qparams outputs and symmetric inputs on the plan."""
    acts: dict[str, None] = {}
    const_inputs: dict[str, None] = {}
    uf = _UnionFind()
    for i, rule in plan.quantized.items():
        node, data = g.graph.node[i], plan.data_inputs[i]
        for t in data:
            (const_inputs if t in g.consts else acts)[t] = None
        outs = [t for t in node.output if t and t in g.floats]
        acts.update(dict.fromkeys(outs))
        if rule.output == "same":
            linked = data if rule.share_inputs else data[:1]
            for t in [*linked, *outs]:
                uf.union(t, outs[0])
        if rule.output == "fixed":
            for t in outs:
                plan.fixed[t] = rule.fixed[act_dtype]
        for k in rule.symmetric_inputs:
            if k < len(node.input) and node.input[k] in data:
                plan.symmetric.add(node.input[k])
    return acts, const_inputs, uf


def _plan_all_weights(plan: QuantPlan, g: _Facts, biases: Mapping[int, tuple[str, str]]) -> None:
    """Weights of quantized nodes, then of weight-only layers (no int32 bias), then tables."""
    for i, rule in plan.quantized.items():
        _plan_weights(plan, i, g.graph.node[i], rule, g.consts, biases.get(i))
    for i in plan.weight_only:  # float arithmetic on int8 weights: no int32 bias
        node = g.graph.node[i]
        _plan_weights(plan, i, node, rule_for(node.op_type, node), g.consts, no_bias=True)
    _plan_tables(plan, g.graph, g.consts)


def _fuse_activations(plan: QuantPlan, g: _Facts, uf: _UnionFind) -> set[str]:
    """Outputs that only feed a fusable activation (TFLite fuses it): recorded in plan.fused
    and returned, since they get no QDQ of their own."""
    outputs = {o.name for o in g.graph.output}
    fused: set[str] = set()
    for i, rule in plan.quantized.items():
        out = g.graph.node[i].output[0]
        users = g.consumers.get(out, [])
        if (
            rule.fuses_activation
            and out not in outputs
            and out not in uf.parent
            and len(users) == 1
            and users[0] in plan.quantized
            and fusable_activation(g.graph.node[users[0]], g.consts)
        ):
            fused.add(out)
            plan.fused.append({"node": plan.node_names[i], "activation": plan.node_names[users[0]]})
    return fused


def _io_tensors(g: _Facts, config: QuantConfig) -> list[str]:
    """Graph outputs computed by a node (int8 models have int8 outputs, whoever computes them)
    and, for integer I/O, float graph inputs (whoever reads them)."""
    graph = g.graph
    io = [
        o.name
        for o in graph.output
        if o.name in g.floats and any(o.name in n.output for n in graph.node)
    ]
    if config.io_dtype != "float32":
        io += [i.name for i in graph.input if i.name in g.floats and i.name not in g.consts]
    return io


def _chain_reason(
    match: Match,
    names: list[str],
    config: QuantConfig,
    forced: Mapping[str, str],
    act_dtype: str,
) -> str | None:
    """Why a fused chain stays float: a node of it is excluded or forced, or its rule says so."""
    for k in match.nodes:
        if names[k] in forced:
            return forced[names[k]]
        if names[k] in config.exclude_nodes:
            return EXCLUDED
    rule = rule_for(match.pattern.rule_op)
    if rule is None:
        return UNLISTED_REASON
    if act_dtype == "int16" and not rule.int16:
        return rule.reason or f"TFLite has no 16x8 {match.pattern.tflite_op} kernel"
    return None


def _apply_patterns(
    plan: QuantPlan, matches: list[Match], gelu: Mapping[int, Match]
) -> tuple[set[str], dict[int, tuple[str, str]]]:
    """Record the fused patterns that apply; return their internal tensors and, per MatMul node
    index, the (bias, Add node name) folded into it."""
    internal: set[str] = set()
    biases: dict[int, tuple[str, str]] = {}
    for m in matches:
        if m.nodes[-1] in gelu:
            if m.nodes[-1] not in plan.quantized:
                continue
        else:  # matmul_bias: both nodes quantized, the MatMul's weight constant
            mm, add = m.nodes
            if mm not in plan.quantized or add not in plan.quantized:
                continue
            if m.data not in plan.data_inputs[mm] or m.bias is None:
                continue
            plan.data_inputs[add] = list(m.internal)
            biases[mm] = (m.bias, plan.node_names[add])
        internal.update(m.internal)
        plan.inside.update(m.nodes[:-1])
        plan.patterns.append(m.to_dict(plan.node_names))
    return internal, biases


def _absorb_into_float(
    plan: QuantPlan,
    graph: onnx.GraphProto,
    consumers: Mapping[str, list[int]],
    owner: Mapping[int, int],
    tails: Collection[int],
) -> None:
    """Keep float a cheap node (rules.FLOAT_ABSORBED_OPS) whose outputs only float nodes read
    (rule 2), repeated until nothing changes. A node inside a fused chain reads on behalf of
    the chain's last node (`owner`); a graph output counts as a quantized reader; the last
    nodes of the other fused chains (`tails`) are not cheap ops."""
    outputs = {o.name for o in graph.output}
    changed = True
    while changed:
        changed = False
        for i in sorted(plan.quantized, reverse=True):
            node = graph.node[i]
            if node.op_type not in FLOAT_ABSORBED_OPS or i in tails:
                continue
            outs = [t for t in node.output if t]
            readers = [owner.get(c, c) for t in outs for c in consumers.get(t, [])]
            if not readers or any(t in outputs for t in outs):
                continue
            if any(r in plan.quantized for r in readers):
                continue
            del plan.quantized[i]
            name = plan.node_names[i]
            plan.float_nodes.append({"node": name, "op": node.op_type, "reason": ABSORBED})
            changed = True


def _keep_weight_only(
    plan: QuantPlan,
    graph: onnx.GraphProto,
    consumers: Mapping[str, list[int]],
    owner: Mapping[int, int],
    matches: list[Match],
    consts: Mapping[str, np.ndarray],
    coarse: Callable[[str], bool],
) -> bool:
    """Run float, on int8 weights, a linear layer (rules.WEIGHT_ONLY_OPS, with the bias Add of
    its matmul_bias pattern) whose output only float nodes read, is no graph output and is
    `coarse` on an int8 grid (rules.WEIGHT_ONLY_REASON). Call after `_absorb_into_float`, which
    decides those readers. Returns whether any layer was kept so."""
    outputs = {o.name for o in graph.output}
    before = len(plan.weight_only)
    bias_add = {m.nodes[0]: m.nodes[-1] for m in matches if m.pattern.name == "matmul_bias"}
    for i in sorted(plan.quantized):
        node, rule = graph.node[i], plan.quantized.get(i)
        if rule is None or node.op_type not in WEIGHT_ONLY_OPS or rule.weight is None:
            continue
        w = consts.get(node.input[rule.weight]) if rule.weight < len(node.input) else None
        if w is None or w.dtype != np.float32 or w.ndim != 2:
            continue  # FULLY_CONNECTED takes a constant 2-D weight
        chain = [i]
        if bias_add.get(i) in plan.quantized:
            chain.append(bias_add[i])
        outs = [t for t in graph.node[chain[-1]].output if t]
        readers = [owner.get(c, c) for t in outs for c in consumers.get(t, [])]
        if not readers or any(t in outputs for t in outs) or not all(map(coarse, outs)):
            continue
        if any(r in plan.quantized for r in readers):
            continue
        for k in chain:
            del plan.quantized[k]
            name = plan.node_names[k]
            plan.float_nodes.append(
                {"node": name, "op": graph.node[k].op_type, "reason": WEIGHT_ONLY_REASON}
            )
        plan.weight_only.append(i)
    return len(plan.weight_only) > before


def _plan_tables(plan: QuantPlan, graph: onnx.GraphProto, consts: Mapping[str, np.ndarray]) -> None:
    """Plan the constant 2-D table of every float Gather (rules.INT8_TABLE_OPS) as an int8
    weight with one scale per row (the rows the Gather picks)."""
    for i, node in enumerate(graph.node):
        if node.op_type not in INT8_TABLE_OPS or i in plan.quantized or not node.input:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        table = consts.get(node.input[0])
        if axis != 0 or table is None or table.dtype != np.float32 or table.ndim != 2:
            continue
        plan.weights.append(WeightUse(plan.node_names[i], node.input[0], 0))


def _coarse_outputs(
    observers: Mapping[str, Observer] | None, act_dtype: str
) -> Callable[[str], bool]:
    """Whether a tensor's median magnitude spans fewer than rules.WEIGHT_ONLY_MIN_LEVELS steps
    of the int8 grid over its range (False without statistics)."""

    def coarse(t: str) -> bool:
        obs = None if observers is None else observers.get(t)
        levels = None if obs is None else median_levels(obs, act_dtype)
        return levels is not None and levels < WEIGHT_ONLY_MIN_LEVELS

    return coarse


def median_levels(observer: Observer, dtype: str) -> float | None:
    """The median |value| in steps of the `dtype` grid over the observer's range, from its
    histogram (None for an observer without one): how many levels a typical value keeps."""
    hist = getattr(observer, "hist", None)
    if hist is None or hist.counts.sum() <= 0:
        return None
    lo, hi = observer.range(dtype)
    qmin, qmax = qrange(dtype)
    step = (max(hi, 0.0) - min(lo, 0.0)) / (qmax - qmin)
    if step <= 0.0:
        return None
    size = np.abs(hist.centers)
    order = np.argsort(size)
    cum = np.cumsum(hist.counts[order])
    median = size[order][int(np.searchsorted(cum, cum[-1] / 2))]
    return float(median / step)


def _drop_isolated_moves(
    plan: QuantPlan,
    graph: onnx.GraphProto,
    data_of: Mapping[int, list[str]],
    consumers: Mapping[str, list[int]],
) -> None:
    """Keep a "same"-scale node (reshape, transpose, pool, ...) quantized only when it reaches
    a quantized compute node through its inputs or outputs: data movement between float ops
    (a transpose before an LSTM, an expand of a constant) has nothing to gain from a QDQ."""
    producer = {t: i for i, n in enumerate(graph.node) for t in n.output}
    moves = {i for i, r in plan.quantized.items() if r.output == "same"}
    keep = set(plan.quantized) - moves
    changed = True
    while changed:
        changed = False
        for i in sorted(moves - keep):
            ins = (producer.get(t) for t in data_of[i])
            outs = (c for t in graph.node[i].output for c in consumers.get(t, []))
            if any(j in keep for j in ins) or any(j in keep for j in outs):
                keep.add(i)
                changed = True
    for i in sorted(moves - keep):
        del plan.quantized[i]
        node = graph.node[i]
        plan.float_nodes.append(
            {"node": plan.node_names[i], "op": node.op_type, "reason": ISOLATED_MOVE}
        )


def _data_inputs(
    node: onnx.NodeProto, rule: OpRule | None, consts: Mapping[str, np.ndarray]
) -> list[str]:
    """Data input tensor names: the rule's, plus a weight input that is not a constant."""
    if rule is None:
        return [t for t in node.input if t]
    idx = rule.data_inputs(node)
    w = rule.weight
    if w is not None and w < len(node.input) and node.input[w]:
        if node.input[w] in consts:
            idx = [k for k in idx if k != w]
        elif w not in idx:
            idx = [*idx, w]
    return [node.input[k] for k in idx]


def _float_reason(
    node: onnx.NodeProto, name: str, rule: OpRule | None, config: QuantConfig, act_dtype: str
) -> str | None:
    if rule is None:
        return UNLISTED_REASON
    if rule.is_float:
        return rule.reason
    if name in config.exclude_nodes or node.name in config.exclude_nodes:
        return EXCLUDED
    if act_dtype == "int16" and not rule.int16:
        return rule.reason or f"TFLite has no 16x8 {node.op_type} kernel"
    if rule.output == "fixed" and act_dtype not in rule.fixed:
        return f"TFLite has no {act_dtype} {node.op_type} kernel"
    return None


def _plan_weights(
    plan: QuantPlan,
    i: int,
    node: onnx.NodeProto,
    rule: OpRule,
    consts: Mapping[str, np.ndarray],
    folded_bias: tuple[str, str] | None = None,
    *,
    no_bias: bool = False,
) -> None:
    """Plan the node's constant weight, and its bias (or `folded_bias`: (bias, reader node));
    `no_bias`: the weight only (its node runs float)."""
    w_idx = rule.weight
    if w_idx is None or w_idx >= len(node.input) or node.input[w_idx] not in consts:
        return
    w = consts[node.input[w_idx]]
    if w.dtype != np.float32:
        return
    axis = weight_axis(rule, w.ndim)
    bias, bias_node = folded_bias or (_bias_input(node, rule, consts, w, axis), None)
    if no_bias:
        bias, bias_node = None, None
    source = node.input[0] if bias else None
    name = plan.node_names[i]
    plan.weights.append(WeightUse(name, node.input[w_idx], axis, bias, source, bias_node))


def _bias_input(
    node: onnx.NodeProto,
    rule: OpRule,
    consts: Mapping[str, np.ndarray],
    w: np.ndarray,
    axis: int | None,
) -> str | None:
    """The bias input quantized as int32, or None when it must stay float."""
    b_idx = rule.bias
    if b_idx is None or b_idx >= len(node.input) or node.input[b_idx] not in consts:
        return None
    b = consts[node.input[b_idx]]
    channels = w.shape[axis] if axis is not None else 1
    if b.dtype != np.float32 or b.ndim != 1 or b.size % channels:
        return None
    attrs = {a.name: a.f for a in node.attribute if a.type == onnx.AttributeProto.FLOAT}
    if node.op_type == "Gemm" and (attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
        return None  # TFLite's FC computes A·B + C; alpha/beta must be folded first
    return node.input[b_idx]


def _dynamic_plan(model: onnx.ModelProto, config: QuantConfig) -> QuantPlan:
    """Dynamic mode: constant float weights of Conv/ConvTranspose/Gemm/MatMul only."""
    plan = QuantPlan(node_names(model.graph))
    consts = constant_values(model)
    for i, node in enumerate(model.graph.node):
        name = plan.node_names[i]
        if node.op_type not in DYNAMIC_OPS:
            continue
        if name in config.exclude_nodes or node.name in config.exclude_nodes:
            plan.float_nodes.append({"node": name, "op": node.op_type, "reason": EXCLUDED})
            continue
        rule = rule_for(node.op_type, node)
        if rule is None or rule.weight is None or rule.weight >= len(node.input):
            continue
        w_name = node.input[rule.weight]
        if w_name in consts and consts[w_name].dtype == np.float32:
            plan.weights.append(WeightUse(name, w_name, weight_axis(rule, consts[w_name].ndim)))
    return plan
