"""Tracing hazards: Python branches and numbers that torch.onnx.export would freeze are refused.

A data-dependent `if` passes parity when every verification input takes the same branch, so
export refuses it up front, naming the user's line; shape-only Python values are harmless at a
fixed shape and refused only with a dynamic batch; warnings from torch's own code never refuse.
"""

from __future__ import annotations

import inspect
import io
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bridge
import models
from bridge.errors import ExportError
from bridge.export import ExportConfig, export

HERE = Path(__file__).resolve()


def _line_of(cls: type, text: str) -> int:
    """The line number in this file of the first line of `cls` containing `text`."""
    lines, start = inspect.getsourcelines(cls)
    return start + next(i for i, line in enumerate(lines) if text in line)


class _MeanBranch(nn.Module):
    """The issue's model: one branch for bright inputs, another for dark ones."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0.25:
            return self.a(x)
        return self.b(x)


class _RareBranch(nn.Module):
    """A branch no normal sample takes: before, parity passed (every verification input took
    the traced branch) and the .tflite was silently wrong for inputs that take the other."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.max() > 6.0:
            return x.clamp(max=6.0)
        return x * 2


class _ItemScale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        peak = x.abs().max().item()
        return x / peak


class _FloatScale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.std())


class _ArgmaxIndex(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        best = int(x.sum(1).argmax())
        return x[best : best + 1] * 2


class _MaskedBuffer(nn.Module):
    """The input is written into a fresh tensor in place; that tensor then decides a branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 8)
        out[:, :4] = x[:, :4]
        if out.sum() > 0:
            return out + 1
        return out - 1


@pytest.mark.parametrize(
    ("cls", "text", "what"),
    [
        (_MeanBranch, "if x.mean() > 0.25", "a Python bool"),
        (_RareBranch, "if x.max() > 6.0", "a Python bool"),
        (_ItemScale, ".item()", "a Python number (.item())"),
        (_FloatScale, "float(x.std())", "a Python float"),
        (_ArgmaxIndex, "int(x.sum(1).argmax())", "a Python int"),
        (_MaskedBuffer, "if out.sum() > 0", "a Python bool"),
    ],
    ids=["if-mean", "if-rare", "item", "float", "int-index", "inplace-write"],
)
def test_data_dependent_python_value_is_refused_with_its_line(
    tmp_path: Path, cls: type, text: str, what: str
) -> None:
    torch.manual_seed(0)
    with pytest.raises(ExportError) as info:
        bridge.convert(cls(), (torch.rand(2, 8),), tmp_path / "out")
    message = str(info.value)
    assert f"into {what} at {HERE}:{_line_of(cls, text)} (`" in message, message
    assert text in message and "torch.where(cond, a, b)" in message
    assert "module attribute fixed when the model is built" in message
    assert not (tmp_path / "out").exists()


def test_rare_branch_passed_parity_while_wrong() -> None:
    """Why refusing is needed: the trace holds the one branch its input took, so parity on
    inputs that take it too is perfect while an input that takes the other branch is wrong."""
    model = _RareBranch().eval()
    usual, rare = torch.rand(1, 8), torch.rand(1, 8) + 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (usual,), check_trace=False)
    normal = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(traced(normal), model(normal))
    assert not torch.allclose(traced(rare), model(rare))


class _Gate(nn.Module):
    """Weights alone decide the branch: a constant, traced correctly."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor([1.5]))
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(self.gain) if self.gain.sum() > 0 else 1.0
        return self.proj(x) * scale


class _ShapeBranch(nn.Module):
    """Python branches and numbers on shapes, and torch's own interpolate on traced sizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = int(x.shape[-1] ** 0.5)
        if x.shape[0] > 1:
            x = x * 2
        y = x.view(x.shape[0], 1, side, side)
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        return y.flatten(1)


def _tracer_warnings(model: nn.Module, example: torch.Tensor, dynamic: bool) -> list[str]:
    """`file:line` of every TracerWarning torch.onnx.export raises for `model`."""
    axes = {"x": {0: "b"}} if dynamic else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            model, (example,), io.BytesIO(), input_names=["x"], dynamo=False, dynamic_axes=axes
        )
    return [
        f"{Path(w.filename).name}:{w.lineno}"
        for w in caught
        if issubclass(w.category, torch.jit.TracerWarning)
    ]


def test_shape_values_and_weight_branches_convert_at_a_fixed_batch(tmp_path: Path) -> None:
    example = torch.randn(2, 16)
    warned = _tracer_warnings(_ShapeBranch(), example, dynamic=False)
    line = _line_of(_ShapeBranch, "if x.shape[0] > 1")
    assert f"{HERE.name}:{line}" in warned, warned  # torch does warn about the user's line
    conv = bridge.convert(_ShapeBranch(), (example,), tmp_path / "shape")
    assert conv.passed
    assert bridge.convert(_Gate(), (torch.randn(1, 8),), tmp_path / "gate").passed


def test_shape_branch_is_refused_with_a_dynamic_batch(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as info:
        bridge.convert(_ShapeBranch(), (torch.randn(2, 16),), tmp_path / "out", dynamic_batch=True)
    message = str(info.value)
    line = _line_of(_ShapeBranch, "if x.shape[0] > 1")
    assert "dynamic_batch=True, but forward() turns a tensor shape into a Python bool" in message
    assert f"at {HERE}:{line} (`if x.shape[0] > 1:`);" in message, message
    assert "example's batch (2)" in message and "dynamic_batch=False" in message
    assert "x.shape[-1]" not in message  # the side length does not follow the batch


class _BatchLoop(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([row * i for i, row in enumerate(x)])


class _BatchInt(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(int(x.shape[0]), 2, -1).sum(1)


@pytest.mark.parametrize(
    ("cls", "text"),
    [(_BatchLoop, "enumerate(x)"), (_BatchInt, "int(x.shape[0])")],
    ids=["loop", "int"],
)
def test_batch_dependent_python_is_refused(tmp_path: Path, cls: type, text: str) -> None:
    with pytest.raises(ExportError, match="dynamic_batch=True, but forward") as info:
        bridge.convert(cls(), (torch.randn(2, 8),), tmp_path / "out", dynamic_batch=True)
    assert f"{HERE}:{_line_of(cls, text)} (`" in str(info.value), str(info.value)


class _HeadScale(nn.Module):
    """Attention-style scaling by a Python float of a feature size: the batch plays no part."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1]
        scores = x @ x.transpose(-1, -2) / math.sqrt(h)
        return scores.softmax(-1) @ x


def test_python_values_of_other_dimensions_keep_a_dynamic_batch() -> None:
    example = torch.randn(2, 5, 8)
    warned = _tracer_warnings(_HeadScale(), example, dynamic=True)
    assert f"{HERE.name}:{_line_of(_HeadScale, 'math.sqrt(h)')}" in warned, warned
    exported = export(_HeadScale(), (example,), ExportConfig(dynamic_batch=True))
    assert exported.contract.inputs[0].shape == (None, 5, 8)


class _TorchInternalWarnings(nn.Module):
    """Only torch's own code turns traced sizes into Python values (GroupNorm's size check)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * 2


def test_torch_internal_tracer_warnings_never_refuse() -> None:
    example = torch.randn(2, 4, 3, 3)
    warned = _tracer_warnings(_TorchInternalWarnings(), example, dynamic=True)
    assert "functional.py" in str(warned) and HERE.name not in str(warned), warned
    exported = export(_TorchInternalWarnings(), (example,), ExportConfig(dynamic_batch=True))
    assert exported.contract.inputs[0].shape == (None, 4, 3, 3)


@pytest.mark.parametrize("name", models.names())
def test_zoo_model_exports_without_refusal(name: str) -> None:
    model, inputs = models.get(name)
    options = models.convert_options(name)
    config = ExportConfig(
        input_names=tuple(options["input_names"]),
        output_names=tuple(options["output_names"]),
        input_layouts=tuple(options["input_layouts"]),
    )
    assert export(model, inputs, config).model.graph.node
