"""Intermediate torch tensors, named after the ONNX tensors that hold the same values.

Hooks on every submodule record each call (inputs when it starts, outputs when it ends, and the
chain of calls it ran in). The first sample binds module outputs to ONNX tensors, checked
against ONNX Runtime's values on that sample (see `bridge.runtime.module_map`); later samples
hook only the bound modules.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import onnx

from bridge.contract import IOContract
from bridge.runtime.module_map import MAX_LISTED, Binding, Call, ScopeIndex, resolve

log = logging.getLogger(__name__)


class TorchLayers:
    """Runs a torch module with forward hooks and returns the values of bound module outputs.

    Args:
        module: the torch.nn.Module that was exported.
        contract: its I/O contract (input order).
        exported: the ONNX model as exported (before graph passes), whose node names carry the
            module scopes.
        floor_db: the export floor: torch and ONNX values agree at or above this SQNR.
    """

    def __init__(
        self, module: Any, contract: IOContract, exported: onnx.ModelProto, *, floor_db: float
    ) -> None:
        self.module = module
        self.contract = contract
        self.floor_db = floor_db
        self.index = ScopeIndex(exported)
        self.named = [(q, m) for q, m in module.named_modules() if q]
        self.bindings: list[Binding] | None = None
        self.unbound: dict[str, str] = {}
        self.calls = 0
        if not self.index.has_scopes:
            log.warning("no ONNX node names carry module scopes; torch layers are not compared")

    def run(
        self, feeds: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """ONNX tensor name → the torch value of the module output it holds, for one sample.

        Args:
            feeds: the sample, by contract input name.
            reference: ONNX Runtime's value of every float ONNX tensor on the same sample;
                the first call binds modules to tensors with it.
        """
        if self.bindings is None:
            calls = self._trace(feeds)
            self.calls = len(calls)
            self.bindings, self.unbound = resolve(
                calls, self.index, {**feeds, **reference}, self.floor_db
            )
            log.info(
                "torch layers: %d of %d module calls bound to ONNX tensors",
                len(self.bindings),
                len(calls),
            )
            by_call = {(c.qualname, c.index): c for c in calls}
            return {
                b.tensor: by_call[(b.qualname, b.index)].outputs[b.output][1] for b in self.bindings
            }
        return self._bound(feeds)

    def summary(self) -> dict[str, Any]:
        """How many module calls were bound, and why some modules were not (a few listed)."""
        how = Counter(b.how for b in self.bindings or [])
        listed = dict(list(self.unbound.items())[:MAX_LISTED])
        return {"calls": self.calls, "bound": dict(how), "unbound": listed}

    def _forward(self, feeds: Mapping[str, np.ndarray], *, versions: bool = False) -> None:
        """Run the module once; `versions` keeps in-place version counters (no_grad instead of
        inference_mode, whose tensors have none)."""
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.contract.input_names]
        threads = torch.get_num_threads()
        try:
            # one sample on one thread: torch's thread pool crawls on a loaded machine
            torch.set_num_threads(1)
            with torch.no_grad() if versions else torch.inference_mode():
                self.module(*args)
        finally:
            torch.set_num_threads(threads)

    def _trace(self, feeds: Mapping[str, np.ndarray]) -> list[Call]:
        """Every submodule call, children before their parents."""
        stack: list[Call] = []
        calls: list[Call] = []
        counts: Counter[str] = Counter()
        alive: list[Any] = []  # keeps every hooked tensor alive so that no id() is reused
        copies: dict[tuple[int, int], np.ndarray] = {}  # one copy per tensor and version

        def snap(tensors: list[Any]) -> list[tuple[int, np.ndarray]]:
            alive.extend(tensors)
            out = []
            for t in tensors:
                key = (id(t), t._version)  # an in-place op bumps the version
                if key not in copies:
                    copies[key] = _numpy(t)
                out.append((id(t), copies[key]))
            return out

        def before(q: str):
            def hook(_m: Any, args: tuple, kwargs: dict) -> None:
                chain = (*stack[-1].chain, q) if stack else (q,)
                inputs = snap([*_tensors(args), *_tensors(kwargs)])
                stack.append(Call(q, counts[q], chain, inputs))
                counts[q] += 1

            return hook

        def after(_m: Any, _args: tuple, out: Any) -> None:
            call = stack.pop()
            call.outputs = snap(list(_tensors(out)))
            calls.append(call)

        handles = []
        for q, m in self.named:
            handles.append(m.register_forward_pre_hook(before(q), with_kwargs=True))
            handles.append(m.register_forward_hook(after))
        try:
            self._forward(feeds, versions=True)
        finally:
            for h in handles:
                h.remove()
        return calls

    def _bound(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Values of the bound module outputs only."""
        wanted: dict[str, dict[tuple[int, int], str]] = {}
        for b in self.bindings or []:
            wanted.setdefault(b.qualname, {})[(b.index, b.output)] = b.tensor
        counts: Counter[str] = Counter()
        values: dict[str, np.ndarray] = {}

        def after(q: str):
            def hook(_m: Any, _args: tuple, out: Any) -> None:
                k = counts[q]
                counts[q] += 1
                for i, t in enumerate(_tensors(out)):
                    tensor = wanted[q].get((k, i))
                    if tensor is not None:
                        values[tensor] = _numpy(t)

            return hook

        modules = dict(self.named)
        handles = [modules[q].register_forward_hook(after(q)) for q in wanted]
        try:
            self._forward(feeds)
        finally:
            for h in handles:
                h.remove()
        return values


def _tensors(obj: Any) -> Iterator[Any]:
    """The tensors in a (nested) tuple, list or dict, in order."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


def _numpy(t: Any) -> np.ndarray:
    """A copy of `t` on the CPU; floating tensors as float32."""
    t = t.detach()
    if t.is_floating_point():
        t = t.float()
    return t.cpu().clone().numpy()
