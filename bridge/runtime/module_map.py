"""Which ONNX tensor holds which torch module's output, and how sure we are of it.

The TorchScript exporter names every node after the chain of module calls it came from, e.g.
`/features/features.1/block/block.0/Conv` for module `features.1.block.0`: each part is the
module's qualified name from its last non-numeric atom on (`scope_part`), and only modules whose
forward ran appear (a ModuleList or ModuleDict never does: `layers.0.query` is
`/layers.0/query`). A module called more than once gets parts with call-counter suffixes that
can collide with other modules' names (`act_1`), so its scope is not trusted.

A module's output is bound to an ONNX tensor in one of three ways:

- by scope: the module ran once under an unambiguous scope, and exactly one runtime tensor
  produced inside the scope and read outside it has the shape of the module's output (or,
  when shapes do not tell, exactly one agrees with its value);
- by fold: the module has no node of its own (a BatchNorm folded into the Conv before it, a
  Dropout) and its only input is the output of a bound module: the ONNX tensor now holds its
  values, unless it already agrees with that module's;
- by search (ambiguous scopes only): exactly one scope output named after the module agrees
  with its value.

A binding is asserted, so that a mismatch becomes an export error, only when it is certain:
the values agree, or the module's inputs agree with the ONNX tensors entering its scope (the
same inputs give different outputs: this layer diverges; a fold inherits its producer's
inputs). Anything else is dropped, and the tensor simply has no torch value.

Values are compared on the first sample only; the bindings then hold for every sample.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from bridge.runtime.metrics import sqnr_db

log = logging.getLogger(__name__)

#: Shown in the report: at most this many unbound modules, with the reason.
MAX_LISTED = 20


def scope_part(qualname: str) -> str:
    """The exporter's part for one module call: "features.1.block.0" → "block.0"."""
    atoms = qualname.split(".")
    start = max((i for i, a in enumerate(atoms) if not a.isdigit()), default=0)
    return ".".join(atoms[start:])


def scope_path(qualname: str, called: Container[str] | None = None) -> str:
    """The exporter's scope of a module whose ancestors in `called` ran (None: all of them).

    "features.1.block.0" → "/features/features.1/block/block.0".
    """
    atoms = qualname.split(".")
    prefixes = [".".join(atoms[:end]) for end in range(1, len(atoms) + 1)]
    parts = [scope_part(p) for p in prefixes[:-1] if called is None or p in called]
    return "/" + "/".join([*parts, scope_part(qualname)])


@dataclass
class Call:
    """One module call seen by the hooks.

    Attributes:
        qualname: the module's qualified name.
        index: how many calls of the same module came before this one.
        chain: qualified names of the modules whose forward was running, outermost first,
            ending with this one.
        inputs: (id, value) of every tensor argument, as it was when the call started.
        outputs: (id, value) of every tensor in the output, flattened in order.
    """

    qualname: str
    index: int
    chain: tuple[str, ...]
    inputs: list[tuple[int, np.ndarray]] = field(default_factory=list)
    outputs: list[tuple[int, np.ndarray]] = field(default_factory=list)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(scope_part(q) for q in self.chain)


@dataclass(frozen=True)
class Binding:
    """Module call (qualname, index), output number `output` → ONNX `tensor`.

    Attributes:
        how: "scope", "fold" or "search".
        agrees: the values agreed on the sample the binding was made on.
    """

    qualname: str
    index: int
    output: int
    tensor: str
    how: str
    agrees: bool


class ScopeIndex:
    """The exported ONNX graph's nodes grouped by scope path.

    Args:
        exported: the ONNX model as exported, whose node names carry the module scopes.
    """

    def __init__(self, exported: onnx.ModelProto) -> None:
        graph = exported.graph
        self.nodes = [n for n in graph.node if n.op_type != "Constant"]
        self.scopes = [
            tuple(n.name.split("/")[1:-1]) if n.name.startswith("/") else () for n in self.nodes
        ]
        self.graph_outputs = {o.name for o in graph.output}
        constant = {i.name for i in graph.initializer}
        constant |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
        for n in graph.node:  # outputs computed from constants alone are constants too
            if all(not i or i in constant for i in n.input):
                constant.update(n.output)
        self.constant = constant
        self.readers: dict[str, list[int]] = defaultdict(list)
        for k, n in enumerate(self.nodes):
            for i in n.input:
                self.readers[i].append(k)
        self.by_prefix: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for k, parts in enumerate(self.scopes):
            for end in range(1, len(parts) + 1):
                self.by_prefix[parts[:end]].append(k)

    @property
    def has_scopes(self) -> bool:
        return bool(self.by_prefix)

    def members(self, path: tuple[str, ...]) -> list[int]:
        """Indices of the nodes inside scope `path`, in graph order."""
        return self.by_prefix.get(path, [])

    def outputs(self, path: tuple[str, ...]) -> list[str]:
        """Runtime tensors produced inside the scope and read outside it (or graph outputs)."""
        inside = set(self.members(path))
        return [
            o
            for k in inside
            for o in self.nodes[k].output
            if o
            and o not in self.constant
            and (o in self.graph_outputs or any(r not in inside for r in self.readers.get(o, ())))
        ]

    def inputs(self, path: tuple[str, ...]) -> list[str]:
        """Runtime tensors read inside the scope and produced outside it."""
        inside = set(self.members(path))
        made = {o for k in inside for o in self.nodes[k].output}
        names = [i for k in inside for i in self.nodes[k].input]
        return list(
            dict.fromkeys(i for i in names if i and i not in made and i not in self.constant)
        )

    def paths_named(self, part: str) -> list[tuple[str, ...]]:
        """Scope paths whose last part is `part` or `part` with a call-counter suffix."""
        pattern = re.compile(re.escape(part) + r"(_\d+)?")
        return [p for p in self.by_prefix if pattern.fullmatch(p[-1])]


def agree(a: np.ndarray, b: np.ndarray, floor_db: float) -> bool:
    """Same shape and the same values: exactly for integers, at `floor_db` SQNR for floats."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":
        return bool(np.array_equal(a, b))
    return sqnr_db(a.astype(np.float32), b.astype(np.float32)) >= floor_db


class _Resolver:
    """Turns the calls of one traced sample into bindings (see the module docstring)."""

    def __init__(
        self,
        index: ScopeIndex,
        reference: Mapping[str, np.ndarray],
        floor_db: float,
        calls: Sequence[Call],
    ) -> None:
        self.index, self.reference, self.floor_db = index, reference, floor_db
        counts = Counter(c.qualname for c in calls)
        self.multi = {q for q, n in counts.items() if n > 1}
        multi_parts = {scope_part(q) for q in self.multi}
        paths: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for c in calls:
            paths[c.path].add(c.qualname)
        suffixed = re.compile(r"(.+)_\d+")

        def clear(c: Call) -> bool:
            if any(q in self.multi for q in c.chain) or len(paths[c.path]) > 1:
                return False
            return not any(
                (m := suffixed.fullmatch(p)) and m.group(1) in multi_parts for p in c.path
            )

        self.clear = clear
        # tensor → [(binding, torch value)]; id of a torch output → (tensor, certain)
        self.claims: dict[str, list[tuple[Binding, np.ndarray]]] = defaultdict(list)
        self.owner: dict[int, tuple[str, bool]] = {}
        self.unbound: dict[str, str] = {}

    def add(self, call: Call) -> None:
        if not self.clear(call):
            self._search(call)
        elif self.index.members(call.path):
            self._scope(call)
        else:
            self._fold(call)

    def _drop(self, call: Call, reason: str) -> None:
        self.unbound.setdefault(call.qualname, reason)

    def _scope(self, call: Call) -> None:
        outs = [t for t in self.index.outputs(call.path) if t in self.reference]
        floats = [(i, v) for i, (_, v) in enumerate(call.outputs) if v.dtype.kind == "f"]
        anchored = self._anchored(call)
        for i, value in floats:
            fits = [t for t in outs if self.reference[t].shape == value.shape]
            rivals = [j for j, w in floats if w.shape == value.shape]
            if len(fits) != 1 or len(rivals) != 1:  # shapes alone do not tell: values must
                fits = [t for t in fits if agree(value, self.reference[t], self.floor_db)]
                if len(fits) != 1:
                    self._drop(call, f"{len(fits)} scope outputs match output {i}")
                    continue
            tensor = fits[0]
            agrees = agree(value, self.reference[tensor], self.floor_db)
            if not (agrees or anchored):
                self._drop(call, f"{tensor}: values and inputs disagree")
                continue
            self._claim(Binding(call.qualname, call.index, i, tensor, "scope", agrees), value)
            self.owner[call.outputs[i][0]] = (tensor, True)

    def _fold(self, call: Call) -> None:
        ins = [(k, v) for k, v in call.inputs if v.dtype.kind == "f"]
        outs = [(i, k, v) for i, (k, v) in enumerate(call.outputs) if v.dtype.kind == "f"]
        if len(ins) != 1 or len(outs) != 1 or ins[0][0] not in self.owner:
            self._drop(call, "no node of its own and no single bound input")
            return
        tensor, certain = self.owner[ins[0][0]]
        i, out_id, value = outs[0]
        ref = self.reference.get(tensor)
        if ref is None or ref.shape != value.shape:
            self._drop(call, f"folded into {tensor} of another shape")
            return
        agrees = agree(value, ref, self.floor_db)
        if not agrees and any(b.agrees for b, _ in self.claims[tensor]):
            # the tensor already holds its producer's values: this module is not folded in
            self._drop(call, f"{tensor} already holds its producer's output")
            return
        if not agrees and not certain:
            self._drop(call, f"{tensor}: folded values disagree, producer unsure")
            self.claims.pop(tensor, None)
            self.owner[out_id] = (tensor, False)
            return
        # the tensor now holds this module's values, not its producer's
        self.claims[tensor] = []
        self._claim(Binding(call.qualname, call.index, i, tensor, "fold", agrees), value)
        self.owner[out_id] = (tensor, certain or agrees)

    def _search(self, call: Call) -> None:
        part = scope_part(call.qualname)
        outs = {t for p in self.index.paths_named(part) for t in self.index.outputs(p)}
        found = False
        for i, (out_id, value) in enumerate(call.outputs):
            if value.dtype.kind != "f":
                continue
            hits = [
                t
                for t in sorted(outs)
                if t in self.reference and agree(value, self.reference[t], self.floor_db)
            ]
            if len(hits) == 1:
                self._claim(Binding(call.qualname, call.index, i, hits[0], "search", True), value)
                self.owner[out_id] = (hits[0], True)
                found = True
        if not found:
            self._drop(call, "called more than once or ambiguous scope, no unique match")

    def _claim(self, binding: Binding, value: np.ndarray) -> None:
        self.claims[binding.tensor].append((binding, value))

    def _anchored(self, call: Call) -> bool:
        """Some tensor argument agrees with a tensor entering the scope, and none contradicts."""
        ext = [self.reference[t] for t in self.index.inputs(call.path) if t in self.reference]
        seen = contradicted = 0
        for _, arg in call.inputs:
            fits = [e for e in ext if e.shape == arg.shape]
            if not fits:
                continue
            if any(agree(arg, e, self.floor_db) for e in fits):
                seen += 1
            else:
                contradicted += 1
        return seen > 0 and contradicted == 0

    def bindings(self) -> list[Binding]:
        """One binding per tensor: an agreeing claim, else certain claims that agree together."""
        out = []
        for tensor, claims in self.claims.items():
            if not claims:
                continue
            good = [b for b, _ in claims if b.agrees]
            if good:
                out.append(good[0])
                continue
            first = claims[0][1]
            if all(agree(v, first, self.floor_db) for _, v in claims[1:]):
                out.append(claims[0][0])
            else:
                log.debug("torch modules disagree on %s; not compared", tensor)
        return out


def resolve(
    calls: Sequence[Call],
    index: ScopeIndex,
    reference: Mapping[str, np.ndarray],
    floor_db: float,
) -> tuple[list[Binding], dict[str, str]]:
    """Bindings for the traced `calls` (in completion order) and the unbound modules' reasons.

    Args:
        calls: every module call of one sample, children before their parents.
        index: the exported graph's scopes.
        reference: ONNX tensor (and graph input) → its ONNX Runtime value on the same sample.
        floor_db: values agree at or above this SQNR (the export floor).
    """
    resolver = _Resolver(index, reference, floor_db, calls)
    for call in calls:
        resolver.add(call)
    bindings = resolver.bindings()
    bound = {b.qualname for b in bindings}
    unbound = {q: r for q, r in resolver.unbound.items() if q not in bound}
    return bindings, unbound
