"""Tracing hazards: Python values that torch.onnx.export would freeze into the graph.

The exporter traces one run of forward(). In that run Python sees real values: `if x.mean() >
0.25:` takes one branch and `s = float(x.max())` yields one number, and the trace keeps that
branch and that number as constants. The ONNX model is then right only for inputs that make the
same choice, and verification inputs often do, so parity cannot be trusted to catch it.

- `data_hazards`: an eager run under a TorchFunctionMode that marks every tensor computed from
  the example inputs (weights alone leave a tensor unmarked) and records each conversion of a
  marked tensor to a Python value (`if t:`, `float(t)`, `int(t)`, indexing, `.item()`,
  `.tolist()`, `.numpy()`), at the first stack frame outside torch: the user's line.
- `shape_hazards`: the exporter's TracerWarnings about turning a tensor into a Python value in
  the user's code. Under the tracer these are shapes (data was caught above): harmless for a
  fixed-shape model, wrong at other batch sizes when the batch is dynamic. Warnings raised
  inside torch itself concern its own constant-shape bookkeeping and are never hazards.
"""

from __future__ import annotations

import functools
import linecache
import os
import sys
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.errors import ExportError

#: Tensor methods and torch functions that hand a tensor's values to Python, and what they give.
CONVERSIONS = {
    "__bool__": "a Python bool",
    "__float__": "a Python float",
    "__int__": "a Python int",
    "__index__": "a Python index",
    "__complex__": "a Python complex",
    "__contains__": "a Python bool",
    "item": "a Python number (.item())",
    "tolist": "a Python list (.tolist())",
    "numpy": "a NumPy array",
    "__array__": "a NumPy array",
    "equal": "a Python bool (torch.equal)",
    "allclose": "a Python bool (torch.allclose)",
    "is_nonzero": "a Python bool (torch.is_nonzero)",
}
#: Functions whose result holds no values of their tensor arguments, only their shape and dtype.
SHAPE_ONLY = frozenset(
    {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like"}
    | {"randint_like", "new_zeros", "new_ones", "new_empty", "new_full"}
)
#: Python operators that write into their first argument (besides torch's `add_`-style names).
INPLACE_DUNDERS = frozenset(
    {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__"}
    | {
        "__imatmul__",
        "__iand__",
        "__ior__",
        "__ixor__",
        "__ilshift__",
        "__irshift__",
        "__setitem__",
    }
)
#: Starts of the TracerWarning messages that mean "a traced value became a Python constant".
TRACER_FREEZES = (
    "Converting a tensor to a Python",
    "Converting a tensor to a NumPy array",
    "Iterating over a tensor",
    "torch.tensor results are registered as constants",
)


@dataclass(frozen=True)
class Hazard:
    """One place where forward() turns a traced tensor into a Python value."""

    filename: str
    lineno: int
    what: str
    module: str = ""

    @property
    def where(self) -> str:
        code = linecache.getline(self.filename, self.lineno).strip()
        return f"{self.filename}:{self.lineno}" + (f" (`{code}`)" if code else "")


def data_hazards(module: Any, inputs: Sequence[Any], trail: Sequence[str] = ()) -> list[Hazard]:
    """Each place (once) where forward(*inputs) converts an input-derived tensor to Python.

    `trail` is the live list of modules entered (export's module trail), to name the module.
    """
    import torch

    with torch.inference_mode(), _taint_mode()(inputs, trail) as mode:
        module(*inputs)
    return list(dict.fromkeys(mode.hazards))


def shape_hazards(records: Sequence[Any]) -> list[Hazard]:
    """The TracerWarnings in `records` that freeze a value in code outside torch."""
    import torch

    found = []
    for r in records:
        text = str(r.message)
        if not issubclass(r.category, torch.jit.TracerWarning) or _in_torch(r.filename):
            continue
        if text.startswith(TRACER_FREEZES):
            found.append(Hazard(r.filename, r.lineno, _tracer_what(text)))
    return list(dict.fromkeys(found))


def batch_hazards(
    module: Any, inputs: Sequence[Any], others: Sequence[Sequence[Any]], suspects: list[Hazard]
) -> list[Hazard]:
    """The places whose traced Python value changes when the batch does.

    forward() is traced at the example's batch and at each batch in `others`, recording every
    tensor → Python conversion made directly by code outside torch. A value that differs is
    frozen wrongly for other batch sizes. A trace that grows with the batch (a Python loop over
    it) with no differing value blames `suspects`, the user lines torch warned about.
    """
    first, size = _traced_values(module, inputs)
    found: dict[Hazard, None] = {}
    for other in others:
        values, other_size = _traced_values(module, other)
        found.update(dict.fromkeys(h for h, v in first.items() if values.get(h) != v))
        if other_size != size and not found:
            found.update(dict.fromkeys(suspects))
    return list(found)


def _traced_values(module: Any, inputs: Sequence[Any]) -> tuple[dict[Hazard, list[str]], int]:
    """Python values that user code took from traced tensors, by place; the trace's size."""
    import torch

    with warnings.catch_warnings(), _record_mode()() as mode:
        warnings.simplefilter("ignore")
        graph, _ = torch.jit._get_trace_graph(module, tuple(inputs))
    return mode.values, len(list(graph.nodes()))


def data_error(hazards: Sequence[Hazard]) -> ExportError:
    """The refusal for values computed from the inputs."""
    where = f"in module {hazards[0].module}: " if hazards[0].module else ""
    return ExportError(
        f"{where}forward() turns a tensor computed from the inputs into {hazards[0].what} at "
        f"{listing(hazards)}; torch.onnx.export records only the branch or value of the example "
        "input, so other inputs would get wrong results. Compute it with tensor ops instead "
        "(torch.where(cond, a, b), masks, clamp; no if/float()/int()/.item() on tensors), or "
        "make the choice a module attribute fixed when the model is built"
    )


def shape_error(hazards: Sequence[Hazard], batch: int) -> ExportError:
    """The refusal for shape-derived Python values under a dynamic batch."""
    return ExportError(
        f"dynamic_batch=True, but forward() turns a tensor shape into {hazards[0].what} at "
        f"{listing(hazards)}; the trace fixes it at the example's batch ({batch}), so other "
        "batch sizes would get wrong results. Pass sizes straight to tensor ops "
        "(x.view(x.size(0), -1), x.flatten(1)) instead of if/int()/loops over them, or "
        "convert with a fixed batch (dynamic_batch=False)"
    )


def listing(hazards: Sequence[Hazard]) -> str:
    """The first hazard's place, and how many more there are where."""
    first = hazards[0].where
    rest = [f"{h.filename}:{h.lineno}" for h in hazards[1:4]]
    more = len(hazards) - 1
    return first + (f" (and {more} more: {', '.join(rest)})" if more else "")


def _tracer_what(message: str) -> str:
    if message.startswith("Iterating"):
        return "a Python loop count"
    if message.startswith("torch.tensor"):
        return "a constant tensor"
    return message.removeprefix("Converting a tensor to ").split(" might")[0]


def _in_torch(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_torch_dir())


@functools.cache
def _torch_dir() -> str:
    import torch

    return os.path.dirname(torch.__file__) + os.sep


def _user_frame() -> tuple[str, int]:
    """(filename, line) of the innermost frame outside torch and this module."""
    frame = sys._getframe(1)
    fallback = None
    while frame is not None:
        name = frame.f_code.co_filename
        if name != __file__:
            if not _in_torch(name):
                return name, frame.f_lineno
            fallback = fallback or (name, frame.f_lineno)
        frame = frame.f_back
    return fallback or ("<unknown>", 0)


def _taint_mode() -> type:
    """The TorchFunctionMode class (built lazily: torch is imported only when needed)."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_leaves

    class TaintMode(TorchFunctionMode):
        """Marks tensors computed from the inputs; records their conversions to Python."""

        def __init__(self, inputs: Sequence[Any], trail: Sequence[str]) -> None:
            super().__init__()
            self.trail = trail
            self.marked: dict[int, weakref.ref] = {}
            self.hazards: list[Hazard] = []
            for t in inputs:
                self._mark(t)

        def _mark(self, t: Any) -> None:
            key = id(t)
            self.marked[key] = weakref.ref(t, lambda _r, k=key: self.marked.pop(k, None))

        def _any_marked(self, values: Any) -> bool:
            return any(id(v) in self.marked for v in tree_leaves(values))

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            marked = self._any_marked((args, kwargs))
            if marked and name in CONVERSIONS:
                module = self.trail[-1] if self.trail else ""
                self.hazards.append(Hazard(*_user_frame(), CONVERSIONS[name], module))
            result = func(*args, **kwargs)
            if marked and name not in SHAPE_ONLY:
                inplace = name in INPLACE_DUNDERS or (
                    name.endswith("_") and not name.startswith("_")
                )
                targets = [result, kwargs.get("out"), args[0] if inplace and args else None]
                for leaf in tree_leaves(targets):
                    if isinstance(leaf, torch.Tensor):
                        self._mark(leaf)
            return result

    return TaintMode


def _record_mode() -> type:
    """The TorchFunctionMode class that records conversions made directly by user code."""
    from torch.overrides import TorchFunctionMode

    recorded = {*CONVERSIONS, "tensor"}

    class RecordMode(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.values: dict[Hazard, list[str]] = {}

        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            name = getattr(func, "__name__", "")
            caller = sys._getframe(1)
            if name in recorded and not _in_torch(caller.f_code.co_filename):
                what = CONVERSIONS.get(name, "a constant tensor (torch.tensor)")
                place = Hazard(caller.f_code.co_filename, caller.f_lineno, what)
                self.values.setdefault(place, []).append(str(result))
            return result

    return RecordMode
