"""trace_hazards, unit by unit (tests/unit/test_export_hazards.py covers export end to end):
input-derived conversions to Python are found at the user's line, weight-only and shape-only
ones are not; tracer warnings from torch itself are ignored; batch-dependent values are found by
tracing two batch sizes; the refusals name the places."""

from __future__ import annotations

import inspect
import warnings

import torch
from torch import nn

from bridge.errors import ExportError
from bridge.trace_hazards import (
    Hazard,
    batch_hazards,
    data_error,
    data_hazards,
    listing,
    shape_error,
    shape_hazards,
)

HERE = __file__
X = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))


def _line(cls: type, text: str) -> int:
    lines, start = inspect.getsourcelines(cls)
    return start + next(i for i, line in enumerate(lines) if text in line)


class _Branch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            return x
        return -x


class _WeightBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w.sum() > 0:  # weights alone: the same for every input
            return x * self.w
        return x


class _ShapeOnly(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.zeros_like(x)
        return x + float(z.sum())  # zeros_like holds no values of x


class _InPlace(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = torch.zeros(3)
        acc.add_(x[0])  # acc now holds input values
        return x * acc.max().item()


class _Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.size(0))
        return x * n


class _Loop(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([r * 2 for r in x])


def test_data_hazards_find_the_users_line_once() -> None:
    got = data_hazards(_Branch(), (X,), ["blk"])
    assert got == [Hazard(HERE, _line(_Branch, "if x.mean()"), "a Python bool", "blk")]
    assert data_hazards(_Branch(), (X,)) == [Hazard(HERE, got[0].lineno, "a Python bool")]


def test_weight_only_and_shape_only_values_are_no_hazard() -> None:
    assert data_hazards(_WeightBranch(), (X,)) == []
    assert data_hazards(_ShapeOnly(), (X,)) == []


def test_in_place_writes_carry_the_mark() -> None:
    got = data_hazards(_InPlace(), (X,))
    assert [(h.lineno, h.what) for h in got] == [
        (_line(_InPlace, ".item()"), "a Python number (.item())")
    ]


def _warning(text: str, filename: str, category: type = torch.jit.TracerWarning):
    return warnings.WarningMessage(category(text), category, filename, 7)


def test_shape_hazards_keep_user_tracer_warnings_that_freeze_values() -> None:
    torch_file = torch.__file__
    records = [
        _warning("Converting a tensor to a Python integer might cause the trace...", "user.py"),
        _warning("Converting a tensor to a Python integer might cause the trace...", "user.py"),
        _warning("Iterating over a tensor might cause the trace...", "loop.py"),
        _warning("torch.tensor results are registered as constants in the trace", "c.py"),
        _warning("Converting a tensor to a Python boolean might ...", torch_file),
        _warning("Some other tracer note", "user.py"),
        _warning("Converting a tensor to a Python integer might ...", "u.py", UserWarning),
    ]
    assert shape_hazards(records) == [
        Hazard("user.py", 7, "a Python integer"),
        Hazard("loop.py", 7, "a Python loop count"),
        Hazard("c.py", 7, "a constant tensor"),
    ]


def test_batch_hazards_find_values_that_change_with_the_batch() -> None:
    other = [(torch.randn(3, 3),)]
    suspect = [Hazard("user.py", 3, "a Python loop count")]
    assert batch_hazards(_Scale(), (X,), other, suspect) == [
        Hazard(HERE, _line(_Scale, "int(x.size(0))"), "a Python int")
    ]
    assert batch_hazards(_Loop(), (X,), other, suspect) == suspect  # the trace grew
    assert batch_hazards(nn.Flatten(), (X,), other, suspect) == []


def test_listing_names_the_first_place_and_counts_the_rest() -> None:
    hazards = [Hazard(f"f{i}.py", i, "a Python bool") for i in range(1, 6)]
    assert listing(hazards[:1]) == "f1.py:1"
    assert listing(hazards) == "f1.py:1 (and 4 more: f2.py:2, f3.py:3, f4.py:4)"


def test_where_quotes_the_source_line() -> None:
    line = _line(_Branch, "if x.mean()")
    assert Hazard(HERE, line, "a Python bool").where == f"{HERE}:{line} (`if x.mean() > 0:`)"
    assert Hazard("<none>", 1, "x").where == "<none>:1"


def test_errors_name_the_module_place_and_batch() -> None:
    h = [Hazard("user.py", 9, "a Python float", "encoder.0")]
    data = data_error(h)
    assert isinstance(data, ExportError)
    assert str(data).startswith("in module encoder.0: forward() turns a tensor computed from the "
                                "inputs into a Python float at user.py:9; ")  # fmt: skip
    shape = str(shape_error([Hazard("user.py", 4, "a Python int")], 2))
    assert "into a Python int at user.py:4" in shape and "example's batch (2)" in shape
