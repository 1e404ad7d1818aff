"""Intermediate torch tensors, named after the ONNX tensors that hold the same values.

The TorchScript exporter names every node after the module scope it came from, e.g.
`/features/features.1/block/block.0/block.0.0/Conv` for module `features.1.block.0.0`: each path
component is the module's qualified name from its last non-numeric part on. A leaf module's
output is the output of the last node in its scope. A leaf module with no node of its own (a
BatchNorm the exporter folded into the Conv before it, a Dropout) takes over the ONNX tensor of
the module whose output it consumed, because that tensor now holds its values.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from bridge.contract import IOContract

log = logging.getLogger(__name__)


def scope_path(qualname: str) -> str:
    """The exporter's scope path of a module.

    "features.1.block.0" → "/features/features.1/block/block.0".
    """
    atoms = qualname.split(".")
    parts = []
    for end in range(1, len(atoms) + 1):
        prefix = atoms[:end]
        start = max((i for i, a in enumerate(prefix) if not a.isdigit()), default=0)
        parts.append(".".join(prefix[start:]))
    return "/" + "/".join(parts)


def scope_outputs(exported: onnx.ModelProto, qualnames: list[str]) -> dict[str, str | None]:
    """Module qualified name → output of the last non-Constant node in its scope (None: no node)."""
    by_scope = {scope_path(q): q for q in qualnames}
    found: dict[str, str | None] = dict.fromkeys(qualnames)
    for node in exported.graph.node:
        if node.op_type == "Constant" or not node.output:
            continue
        parts = node.name.split("/")[1:-1]
        for end in range(1, len(parts) + 1):
            q = by_scope.get("/" + "/".join(parts[:end]))
            if q is not None:
                found[q] = node.output[0]
    return found


class TorchLayers:
    """Runs a torch module with forward hooks on its leaf modules.

    Args:
        module: the torch.nn.Module that was exported.
        contract: its I/O contract (input order).
        exported: the ONNX model as exported (before graph passes), whose node names carry the
            module scopes.
    """

    def __init__(self, module: Any, contract: IOContract, exported: onnx.ModelProto) -> None:
        self.module = module
        self.contract = contract
        leaves = [
            (q, m) for q, m in module.named_modules() if q and next(m.children(), None) is None
        ]
        self._leaves = leaves
        self._scope = scope_outputs(exported, [q for q, _ in leaves])
        if not any(self._scope.values()):
            log.warning("no ONNX node names carry module scopes; torch layers are not compared")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """ONNX tensor name → the torch value of the module output it holds, for one sample."""
        import torch

        events: list[tuple[str, list[int], Any]] = []
        alive: list[Any] = []  # keeps every hooked tensor alive so that no id() is reused

        def hook(name: str):
            def record(_m: Any, args: tuple, out: Any) -> None:
                alive.extend([*args, out])
                ins = [id(a) for a in args if isinstance(a, torch.Tensor)]
                if isinstance(out, torch.Tensor):
                    events.append((name, ins, (id(out), out.detach().clone())))
                else:
                    events.append((name, ins, None))

            return record

        handles = [m.register_forward_hook(hook(q)) for q, m in self._leaves]
        threads = torch.get_num_threads()
        try:
            args = [
                torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.contract.input_names
            ]
            # one sample on one thread: torch's thread pool crawls on a loaded machine
            torch.set_num_threads(1)
            with torch.inference_mode():
                self.module(*args)
        finally:
            torch.set_num_threads(threads)
            for h in handles:
                h.remove()
        return self._assign(events)

    def _assign(self, events: list[tuple[str, list[int], Any]]) -> dict[str, np.ndarray]:
        calls = Counter(name for name, _, _ in events)
        owner: dict[int, str | None] = {}  # id of an output tensor → the ONNX tensor it holds
        values: dict[str, np.ndarray] = {}
        for name, ins, out in events:
            if out is None or calls[name] > 1:  # a module called twice has no single output
                continue
            out_id, value = out
            target = self._scope.get(name)
            if target is None and len(ins) == 1 and owner.get(ins[0]):
                target = owner[ins[0]]  # folded into (or a no-op after) its producer
            owner[out_id] = target
            if target is not None:
                values[target] = value.cpu().numpy()
        return values
