"""Torch module outputs bound to ONNX tensors: every binding must hold the same values as ONNX
Runtime on a clean model, and an unsure binding must be dropped, never reported as an export
error. Fast: export and ONNX Runtime only, no .tflite."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bridge.export import ExportConfig, export
from bridge.passes import run_passes
from bridge.runtime import tolerances
from bridge.runtime.capture import OrtTensors, float_tensors
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.module_map import scope_part, scope_path
from bridge.runtime.torch_layers import TorchLayers

FLOOR = tolerances.floor("fp32", "torch_vs_ort")


class _Layer(nn.Module):
    """A post-LN attention layer, as in BERT."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        scores = self.query(x) @ self.key(x).transpose(-1, -2) + bias
        return self.norm(x + self.out(scores.softmax(-1) @ self.value(x)))


class TinyBert(nn.Module):
    """MiniLM's shape: embeddings summed from weight slices, a LayerNorm, a ModuleList."""

    def __init__(self, vocab: int = 16, steps: int = 8, dim: int = 12) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(steps, dim)
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(_Layer(dim) for _ in range(2))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.word(ids) + self.position.weight[: ids.shape[1]])
        bias = (1.0 - mask.to(x.dtype))[:, None, :] * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        return x


class ConvNet(nn.Module):
    """A BatchNorm the exporter folds into its Conv, a Dropout, one in-place ReLU called twice,
    an LSTM returning a tuple and a module returning two tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.ReLU(inplace=True)  # its input is gone once it ran
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.split = _Split()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.bn1(self.conv1(x))))
        x = self.act(self.conv2(x))
        seq, _ = self.lstm(x.mean(2).transpose(1, 2))  # [N, C, W] → a [N, W, C] sequence
        a, b = self.split(seq)
        return a * b


class _Split(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(x), torch.sigmoid(x[..., :3]).repeat(1, 1, 2)


def _seeded(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _bert() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    model = _seeded(TinyBert())
    ids = torch.tensor([[1, 5, 7, 2, 9, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    return model, (ids, mask)


def _convnet() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    model = _seeded(ConvNet())
    return model, (torch.randn(1, 3, 6, 10),)


def bind(model: nn.Module, inputs, *, module: nn.Module | None = None, edit=None):
    """(TorchLayers, torch values, ORT values) of `module` (default `model`) on one sample;
    `edit` may rewrite the exported model's node names first."""
    exported = export(model, inputs, ExportConfig())
    optimised = run_passes(exported, None)
    feeds = {n: t.numpy() for n, t in zip(optimised.contract.input_names, inputs, strict=True)}
    names = {t: t for t, _ in float_tensors(optimised.model)}
    ort = OrtTensors(optimised.model, optimised.contract, names).run(feeds)
    graph = exported.model
    if edit is not None:
        graph = copy.deepcopy(graph)
        edit(graph)
    layers = TorchLayers(module or model, optimised.contract, graph, floor_db=FLOOR)
    return layers, layers.run(feeds, ort), ort


def _sqnr(values, ort) -> dict[str, float]:
    return {t: sqnr_db(ort[t], v) for t, v in values.items()}


def _bound(layers: TorchLayers) -> dict[str, str]:
    return {b.qualname: b.tensor for b in layers.bindings}


def test_scope_names_skip_modules_that_never_ran() -> None:
    assert scope_part("features.1.block.0") == "block.0"
    assert scope_part("layers.0.query") == "query"
    assert scope_path("layers.0.query", called={"layers.0"}) == "/layers.0/query"
    assert scope_path("layers.0.query") == "/layers/layers.0/query"


def test_modulelist_layers_are_bound_and_agree() -> None:
    """MiniLM's false export error: a Linear inside a ModuleList was taken for a module with no
    node and bound to the embedding LayerNorm's tensor."""
    model, inputs = _bert()
    layers, values, ort = bind(model, inputs)
    bound = _bound(layers)
    assert bound["norm"] == "/norm/LayerNormalization_output_0", bound
    for i in range(2):
        for name in ("query", "key", "value", "out", "norm"):
            assert f"layers.{i}.{name}" in bound, (i, name, bound)
    assert bound["layers.1.query"].startswith("/layers.1/query/"), bound
    sqnr = _sqnr(values, ort)
    assert len(sqnr) >= 11 and min(sqnr.values()) >= FLOOR, sqnr


def test_unsure_binding_is_dropped_not_claimed() -> None:
    """With the query Linear's scope erased from the node names (the naming heuristic fails),
    the query looks like a module without nodes of its own that consumes the LayerNorm's output:
    it must not be bound to the LayerNorm's tensor."""

    def erase(graph: onnx.GraphProto) -> None:
        for node in graph.graph.node:
            node.name = node.name.replace("/layers.0/query/", "/layers.0/query_")

    model, inputs = _bert()
    layers, values, ort = bind(model, inputs, edit=erase)
    assert "layers.0.query" not in _bound(layers)
    assert "layers.0.query" in layers.summary()["unbound"]
    sqnr = _sqnr(values, ort)
    assert sqnr["/norm/LayerNormalization_output_0"] >= FLOOR
    assert min(sqnr.values()) >= FLOOR, sqnr


def test_fault_inside_a_modulelist_layer_is_bound_with_its_mismatch() -> None:
    """A module whose inputs agree with ONNX and whose output does not: the binding is certain
    and the mismatch is kept (an export error there), while the layers before still agree."""
    model, inputs = _bert()
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.layers[1].value.weight.mul_(-1.0)
    layers, values, ort = bind(model, inputs, module=broken)
    tensor = _bound(layers)["layers.1.value"]
    sqnr = _sqnr(values, ort)
    assert sqnr[tensor] < FLOOR, sqnr
    assert sqnr[_bound(layers)["layers.1.query"]] >= FLOOR
    assert min(sqnr[_bound(layers)[f"layers.0.{n}"]] for n in ("query", "out", "norm")) >= FLOOR


def test_folds_reused_modules_and_tuples_bind_only_agreeing_values() -> None:
    model, inputs = _convnet()
    layers, values, ort = bind(model, inputs)
    bound = _bound(layers)
    how = {b.qualname: b.how for b in layers.bindings}
    # the BatchNorm's values live in the Conv's tensor now
    assert how.get("bn1") == "fold" and "conv1" not in bound, how
    assert bound["lstm"] and bound["conv2"], bound
    # the ReLU called twice is found by value, each call on its own tensor (the Dropout after
    # its first call holds the same values, and takes that tensor over)
    relu = [t for t in ort if t.endswith("/Relu_output_0")]
    act = {b.tensor for b in layers.bindings if b.qualname in ("act", "drop")}
    assert len(relu) == 2 and act == set(relu), (act, relu)
    assert any(b.qualname == "act" and b.how == "search" for b in layers.bindings)
    assert {b.output for b in layers.bindings if b.qualname == "split"} == {0, 1}
    sqnr = _sqnr(values, ort)
    assert min(sqnr.values()) >= FLOOR, sqnr


@pytest.mark.parametrize("factory", [_bert, _convnet], ids=["bert", "convnet"])
def test_later_samples_read_the_same_bindings(factory) -> None:
    model, inputs = factory()
    layers, first, _ = bind(model, inputs)
    feeds = {n: t.numpy() for n, t in zip(layers.contract.input_names, inputs, strict=True)}
    again = layers.run(feeds, {})
    assert again.keys() == first.keys()
    for t, v in first.items():
        np.testing.assert_array_equal(again[t], v)
