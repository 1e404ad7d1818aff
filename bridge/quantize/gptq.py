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
a small damping λ = `DAMP`·mean(diag H) keeps the blocks positive definite. H is estimated
from `ROWS_PER_SAMPLE` random rows (conv patches gathered directly, never a full im2col) of
each calibration sample, up to `MAX_ROWS` per layer, so its cost does not grow with the image
size or the number of samples.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from bridge.passes.fuse_pad_conv import same_upper

log = logging.getLogger(__name__)

#: Target size of one diagonal block of H (rounded to whole input channels).
BLOCK = 256
#: Damping added to the diagonal of H, relative to its mean.
DAMP = 0.01
#: Rows (im2col patches or matrix rows) drawn at random from one sample, per layer.
ROWS_PER_SAMPLE = 128
#: A layer stops collecting rows once it has this many (H needs a few times BLOCK).
MAX_ROWS = 4096
#: Seed of the row sampling (the result is deterministic).
SEED = 0
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
        self._rng = np.random.default_rng(SEED)

    @property
    def sources(self) -> list[str]:
        """The input tensors whose values `update` needs."""
        return list(dict.fromkeys(layer.source for layer in self.layers.values()))

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        """Add one sample's layer inputs (a map holding the `sources` tensors)."""
        with one_thread() as torch:
            for weight, layer in self.layers.items():
                self._update(weight, layer, values, torch)

    def _update(self, weight: str, layer: _Layer, values: Mapping[str, np.ndarray], torch) -> None:
        if self._rows.get(weight, 0) >= MAX_ROWS:
            return
        x = values.get(layer.source)
        if x is None or np.asarray(x).dtype.kind != "f":
            return
        cols = _rows(np.asarray(x, np.float32), layer, self._rng)
        if cols is None:
            return
        blocks = torch.from_numpy(_blocks(cols, layer))  # (G·nb, rows, b)
        h = torch.bmm(blocks.transpose(1, 2), blocks).numpy().astype(np.float64)
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
    w = np.array(w, np.float64)
    h = np.array(h, np.float64)
    s = np.asarray(scale, np.float64)
    d = w.shape[2]
    idx = np.arange(d)
    diag = h[:, idx, idx]
    dead = diag <= 0
    diag = diag + DAMP * np.clip(diag, 0, None).mean(axis=1, keepdims=True)
    h[:, idx, idx] = np.where(dead, 1.0, diag)
    with one_thread() as torch:  # small batched matrices: more threads only contend
        hinv = torch.cholesky_inverse(torch.linalg.cholesky(torch.from_numpy(h)))
        u = torch.linalg.cholesky(hinv, upper=True).numpy()  # H⁻¹ = UᵀU
        return _gptq_loop(w, s, u, torch)


def _gptq_loop(w: np.ndarray, s: np.ndarray, u: np.ndarray, torch: Any) -> np.ndarray:
    """GPTQ's column loop on (batch, rows, d) weights given the upper factor U of H⁻¹."""
    d = w.shape[2]
    q = np.zeros_like(w)
    for i1 in range(0, d, LAZY):  # updates inside LAZY columns, then one matmul for the rest
        i2 = min(i1 + LAZY, d)
        part = w[:, :, i1:i2].copy()
        errs = np.zeros_like(part)
        for i in range(i2 - i1):
            col = part[:, :, i]
            level = np.clip(np.rint(col / s), -127, 127)
            q[:, :, i1 + i] = level
            err = (col - level * s) / u[:, i1 + i, i1 + i][:, None]
            part[:, :, i + 1 :] -= err[:, :, None] * u[:, None, i1 + i, i1 + i + 1 : i2]
            errs[:, :, i] = err
        if i2 < d:
            tail = torch.bmm(torch.from_numpy(errs), torch.from_numpy(u[:, i1:i2, i2:].copy()))
            w[:, :, i2:] -= tail.numpy()
    return q


@contextlib.contextmanager
def one_thread() -> Iterator[Any]:
    """torch, limited to one intra-op thread inside the block (restored after): the batched
    matrices here are small, and on a busy machine extra threads only wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield torch
    finally:
        torch.set_num_threads(before)


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


def _rows(x: np.ndarray, layer: _Layer, rng: np.random.Generator) -> np.ndarray | None:
    """Up to `ROWS_PER_SAMPLE` random input rows (G, rows, d) as the weight matrix sees them."""
    if layer.node.op_type != "Conv":
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[1] != layer.width:
            return None
        pick = _pick(flat.shape[0], rng)
        return flat[pick][None]
    if x.ndim != 4:
        return None
    a = _attrs(layer.node)
    auto_pad = bytes(a.get("auto_pad", b"NOTSET"))
    if auto_pad not in (b"NOTSET", b"SAME_UPPER") or "kernel_shape" not in a:
        return None
    kh, kw = a["kernel_shape"]
    t, left, bottom, right = list(a.get("pads", [0, 0, 0, 0]))
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    if auto_pad == b"SAME_UPPER":
        t, left, bottom, right = same_upper(x.shape[2:], (kh, kw), (sh, sw), (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (t, bottom), (left, right))) if t + left + bottom + right else x
    n, c, hp, wp = xp.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1 or c * kh * kw != layer.groups * layer.width:
        return None
    pick = _pick(n * ho * wo, rng)
    b, rest = np.divmod(pick, ho * wo)
    oh, ow = np.divmod(rest, wo)
    rows = oh[:, None] * sh + np.arange(kh)[None, :] * dh  # (R, kh)
    cols = ow[:, None] * sw + np.arange(kw)[None, :] * dw  # (R, kw)
    patches = xp[b[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (R, kh, kw, C)
    patches = patches.transpose(0, 3, 1, 2).reshape(len(pick), layer.groups, layer.width)
    return np.ascontiguousarray(patches.transpose(1, 0, 2))


def _pick(total: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices: all of them, or `ROWS_PER_SAMPLE` drawn without replacement."""
    if total <= ROWS_PER_SAMPLE:
        return np.arange(total)
    return np.sort(rng.choice(total, ROWS_PER_SAMPLE, replace=False))


def _blocks(cols: np.ndarray, layer: _Layer) -> np.ndarray:
    """(G, rows, d) → (G·nb, rows, b), zero-padded to whole blocks."""
    g, rows, d = cols.shape
    b = layer.block
    nb = -(-d // b)
    if nb * b != d:
        cols = np.pad(cols, ((0, 0), (0, 0), (0, nb * b - d)))
    return cols.reshape(g, rows, nb, b).transpose(0, 2, 1, 3).reshape(g * nb, rows, b)


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
