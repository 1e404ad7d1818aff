"""Error-compensating rounding of int8 weights (GPTQ, Frantar et al. 2022), block-diagonal.

Rounding each weight to the nearest level ignores what the layer computes. With H = E[x xᵀ]
the second moment of a layer's inputs (im2col patches for a Conv), the output error of a
weight row error δ is E[(δᵀx)²] = δᵀHδ. GPTQ quantizes the columns one at a time and spreads
each column's rounding error over the columns not yet quantized, along H⁻¹ (the optimal
update of Optimal Brain Surgeon), so correlated inputs cancel most of the error. The scales
stay the per-channel min/max ones and every result is an integer in [−127, 127], so the weights
remain exactly representable (integers × scale), as TFLite needs.

H is kept block-diagonal (blocks of `BLOCK` input columns, the taps of whole input channels)
so that collecting it and the Cholesky factorisations stay cheap (O(d·b²) instead of O(d³));
a small damping λ = `DAMP`·mean(diag H) keeps the blocks positive definite.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

log = logging.getLogger(__name__)

#: Target size of one diagonal block of H (rounded to whole input channels).
BLOCK = 256
#: Damping added to the diagonal of H, relative to its mean.
DAMP = 0.01
#: Rows (im2col positions) of one sample used per layer; more are subsampled evenly.
MAX_ROWS = 1024
#: Columns quantized between two matrix updates of the remaining ones (GPTQ's lazy batches).
LAZY = 32


@dataclass(frozen=True)
class _Layer:
    """A Conv (2-D) or Gemm/MatMul weight whose input moments are collected."""

    node: onnx.NodeProto
    source: str
    groups: int
    width: int  # columns of one group's weight matrix (d)
    block: int


class InputMoments:
    """Block-diagonal second moments E[x xᵀ] of the inputs of Conv/Gemm/MatMul weights.

    Args:
        model: the float ONNX model.
        weights: weight name → (node name, output-channel axis) of the quantized weights.
    """

    def __init__(self, model: onnx.ModelProto, weights: Mapping[str, tuple[str, int | None]]):
        consts = {i.name: tuple(i.dims) for i in model.graph.initializer}
        nodes = {n.name: n for n in model.graph.node}
        self.layers: dict[str, _Layer] = {}
        for weight, (node_name, _axis) in weights.items():
            node = nodes.get(node_name)
            if node is None or weight not in consts:
                continue
            layer = _layer(node, weight, consts[weight])
            if layer is not None:
                self.layers[weight] = layer
        self._sums: dict[str, np.ndarray] = {}
        self._rows: dict[str, int] = {}

    @property
    def sources(self) -> list[str]:
        """The input tensors whose values `update` needs."""
        return list(dict.fromkeys(layer.source for layer in self.layers.values()))

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        """Add one sample's layer inputs (a map holding the `sources` tensors)."""
        import torch

        for weight, layer in self.layers.items():
            x = values.get(layer.source)
            if x is None or np.asarray(x).dtype.kind != "f":
                continue
            cols = _columns(torch.from_numpy(np.asarray(x, np.float32)), layer)
            if cols is None:
                continue
            blocks = _blocks(cols, layer)  # (G·nb, rows, b)
            h = (blocks.transpose(1, 2) @ blocks).numpy().astype(np.float64)
            if weight in self._sums:
                self._sums[weight] += h
            else:
                self._sums[weight] = h
            self._rows[weight] = self._rows.get(weight, 0) + cols.shape[1]

    def hessian(self, weight: str) -> np.ndarray | None:
        """Diagonal blocks of E[x xᵀ], shape (groups·blocks, b, b), or None if never seen."""
        if weight not in self._sums:
            return None
        return self._sums[weight] / self._rows[weight]

    def round(self, weight: str, w: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
        """GPTQ int8 levels of weight `w` at per-channel `scale`, or None if not collected."""
        h = self.hessian(weight)
        if h is None:
            return None
        layer = self.layers[weight]
        mat = _as_matrix(w, layer)  # (G, co, d)
        g, co, d = mat.shape
        if np.size(scale) != g * co:
            return None
        nb = h.shape[0] // g
        b = layer.block
        padded = np.zeros((g, co, nb * b))
        padded[:, :, :d] = mat
        w_blocks = padded.reshape(g, co, nb, b).transpose(0, 2, 1, 3).reshape(g * nb, co, b)
        s = np.asarray(scale, np.float64).reshape(g, 1, co).repeat(nb, axis=1).reshape(g * nb, co)
        q = gptq_levels(w_blocks, s, h)
        q = q.reshape(g, nb, co, b).transpose(0, 2, 1, 3).reshape(g, co, nb * b)[:, :, :d]
        return _from_matrix(q, w.shape, layer).astype(np.int8)


def gptq_levels(w: np.ndarray, scale: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Integer levels in [−127, 127] of batched weights by GPTQ.

    Args:
        w: weights (batch, rows, d); each row is quantized at its own scale.
        scale: (batch, rows) positive scales.
        h: (batch, d, d) second moments of the inputs.

    Returns:
        levels (batch, rows, d) as float64 integers.
    """
    import torch

    wt = torch.from_numpy(np.array(w, np.float64))
    ht = torch.from_numpy(np.array(h, np.float64))
    st = torch.from_numpy(np.asarray(scale, np.float64))
    diag = torch.diagonal(ht, dim1=1, dim2=2)
    dead = diag <= 0
    diag += DAMP * diag.clamp(min=0).mean(dim=1, keepdim=True)
    diag[dead] = 1.0
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(ht))
    u = torch.linalg.cholesky(hinv, upper=True)
    q = torch.zeros_like(wt)
    d = wt.shape[2]
    for i1 in range(0, d, LAZY):  # updates inside LAZY columns, then one matmul for the rest
        i2 = min(i1 + LAZY, d)
        part = wt[:, :, i1:i2].clone()
        errs = torch.zeros_like(part)
        for i in range(i2 - i1):
            col = part[:, :, i]
            level = torch.clamp(torch.round(col / st), -127, 127)
            q[:, :, i1 + i] = level
            err = (col - level * st) / u[:, i1 + i, i1 + i][:, None]
            part[:, :, i + 1 :] -= err[:, :, None] * u[:, i1 + i, i1 + i + 1 : i2][:, None, :]
            errs[:, :, i] = err
        wt[:, :, i2:] -= errs @ u[:, i1:i2, i2:]
    return q.numpy()


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _layer(node: onnx.NodeProto, weight: str, shape: tuple[int, ...]) -> _Layer | None:
    a = _attrs(node)
    if node.op_type == "Conv" and len(shape) == 4 and node.input[1] == weight:
        groups = int(a.get("group", 1))
        d = shape[1] * shape[2] * shape[3]
        taps = shape[2] * shape[3]
        block = min(d, max(taps, (BLOCK // taps) * taps))
        return _Layer(node, node.input[0], groups, d, block)
    if node.op_type == "Gemm" and len(shape) == 2 and node.input[1] == weight:
        if a.get("transA", 0):
            return None
        d = shape[1] if a.get("transB", 0) else shape[0]
        return _Layer(node, node.input[0], 1, d, min(d, BLOCK))
    if node.op_type == "MatMul" and len(shape) == 2 and node.input[1] == weight:
        return _Layer(node, node.input[0], 1, shape[0], min(shape[0], BLOCK))
    return None


def _columns(x, layer: _Layer):  # torch tensors in and out
    """Input rows (G, rows, d) as the layer's weight matrix sees them."""
    import torch.nn.functional as F

    node = layer.node
    if node.op_type == "Conv":
        if x.ndim != 4:
            return None
        a = _attrs(node)
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return None
        kh, kw = a.get("kernel_shape") or _kernel(layer)
        p = list(a.get("pads", [0, 0, 0, 0]))
        padding = (p[0], p[1])
        if (p[0], p[1]) != (p[2], p[3]):
            x, padding = F.pad(x, (p[1], p[3], p[0], p[2])), (0, 0)
        cols = F.unfold(
            x,
            (kh, kw),
            padding=padding,
            dilation=tuple(a.get("dilations", [1, 1])),
            stride=tuple(a.get("strides", [1, 1])),
        )  # (N, C·kh·kw, L)
        g = layer.groups
        cols = cols.reshape(cols.shape[0], g, layer.width, -1).permute(1, 0, 3, 2)
        cols = cols.reshape(g, -1, layer.width)
    else:
        cols = x.reshape(1, -1, x.shape[-1])
        if cols.shape[2] != layer.width:
            return None
    rows = cols.shape[1]
    if rows > MAX_ROWS:
        cols = cols[:, np.linspace(0, rows - 1, MAX_ROWS).astype(np.int64)]
    return cols


def _kernel(layer: _Layer) -> tuple[int, int]:
    raise ValueError(f"Conv {layer.node.name!r} has no kernel_shape")


def _blocks(cols, layer: _Layer):
    """(G, rows, d) → (G·nb, rows, b), zero-padded to whole blocks."""
    import torch.nn.functional as F

    g, rows, d = cols.shape
    b = layer.block
    nb = -(-d // b)
    if nb * b != d:
        cols = F.pad(cols, (0, nb * b - d))
    return cols.reshape(g, rows, nb, b).permute(0, 2, 1, 3).reshape(g * nb, rows, b)


def _as_matrix(w: np.ndarray, layer: _Layer) -> np.ndarray:
    """Weight as (G, co, d): output channels by input columns, per group."""
    w = np.asarray(w, np.float64)
    if layer.node.op_type == "Conv":
        return w.reshape(layer.groups, w.shape[0] // layer.groups, -1)
    if layer.node.op_type == "Gemm" and _attrs(layer.node).get("transB", 0):
        return w[None]
    return w.T[None]


def _from_matrix(q: np.ndarray, shape: tuple[int, ...], layer: _Layer) -> np.ndarray:
    if layer.node.op_type == "Conv":
        return q.reshape(shape)
    if layer.node.op_type == "Gemm" and _attrs(layer.node).get("transB", 0):
        return q[0]
    return q[0].T
