"""Tiny transformer pieces with the statistics that break per-tensor int8 in BERT-like models:
an additive −10000 attention mask, an outlier channel in a linear layer that feeds a float
residual stream, and an embedding table. Shared by the quantizer and lowering tests."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bridge.artifact import OnnxArtifact
from bridge.quantize import QuantConfig
from bridge.quantize.calibrate import calibrate
from bridge.quantize.qdq import quantize_model

from .conftest import export_tensors as export
from .conftest import qdq_sqnr_over

TOKENS = 16
WIDTH = 8
VOCAB = 50

Sample = tuple[np.ndarray, ...]


class MaskedAttention(nn.Module):
    """softmax(q·kᵀ/√d + (1 − mask)·(−10000))·v. Token 0 is `lead` times larger, so its score
    row can top the others by far (BERT's [CLS]/[SEP] rows): a softmax range cut at the global
    maximum would flatten the other rows."""

    def __init__(self, lead: float) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.register_buffer("gain", torch.tensor([lead] + [1.0] * (TOKENS - 1))[None, :, None])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x * self.gain
        scores = self.q(x) @ self.k(x).transpose(-1, -2) / math.sqrt(WIDTH)
        scores = scores + (1.0 - mask.float())[:, None, :] * -10000.0
        return torch.softmax(scores, -1) @ self.v(x)


class PostLN(nn.Module):
    """LayerNorm(x + fc2(gelu(fc1(x)))) after a LayerNorm: fc2's output channel 3 is `spike`
    times one hidden unit, a sparse outlier like all-MiniLM-L6-v2's channel 99."""

    def __init__(self, spike: float) -> None:
        super().__init__()
        self.ln0, self.ln = nn.LayerNorm(16), nn.LayerNorm(16)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)
        with torch.no_grad():
            self.fc2.weight[3].zero_()
            self.fc2.weight[3, 5] = spike

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln0(x)
        return self.ln(x + self.fc2(nn.functional.gelu(self.fc1(x))))


class Embedder(nn.Module):
    """Token ids → embedding + position → LayerNorm → Linear (the Gather stays float)."""

    def __init__(self) -> None:
        super().__init__()
        self.word = nn.Embedding(VOCAB, 16)
        self.position = nn.Parameter(0.1 * torch.randn(TOKENS, 16))
        self.norm = nn.LayerNorm(16)
        self.out = nn.Linear(16, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.word(ids) + self.position))


def masked_attention(lead: float = 6.0) -> OnnxArtifact:
    torch.manual_seed(0)
    x, mask = torch.randn(1, TOKENS, WIDTH), torch.ones(1, TOKENS, dtype=torch.int64)
    return export(MaskedAttention(lead), x, mask)


def post_ln(spike: float) -> OnnxArtifact:
    torch.manual_seed(0)
    return export(PostLN(spike), torch.randn(1, 8, 16))


def embedder() -> OnnxArtifact:
    torch.manual_seed(0)
    return export(Embedder(), torch.zeros(1, TOKENS, dtype=torch.int64))


def samples(art: OnnxArtifact, n: int, seed: int) -> list[Sample]:
    """Standard-normal floats; int64 inputs are token ids (or, for the mask, 1s then 0s)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        sample = []
        for spec in art.contract.inputs:
            shape = spec.concrete_shape()
            if spec.dtype != "int64":
                sample.append(rng.standard_normal(shape).astype(np.float32))
            elif len(art.contract.inputs) > 1:  # the attention mask: padding at the end
                mask = np.ones(shape, np.int64)
                mask[..., rng.integers(6, TOKENS - 2) :] = 0
                sample.append(mask)
            else:
                sample.append(rng.integers(0, VOCAB, shape).astype(np.int64))
        out.append(tuple(sample))
    return out


def quantized(art: OnnxArtifact, n: int = 16) -> OnnxArtifact:
    """The QDQ model from `n` calibration samples: calibrate and write, nothing else (no
    cross-fit check, no bias correction), so the tests see the rules alone."""
    config = QuantConfig(mode="int8")
    observers = calibrate(art, samples(art, n, seed=7), config, crossfit=False)
    return quantize_model(art, observers, config)


def float_vs_qdq(art: OnnxArtifact, qdq: OnnxArtifact, n: int = 8) -> float:
    """SQNR (dB) of the QDQ model's output against the float model's over `n` samples."""
    return qdq_sqnr_over(art, qdq, samples(art, n, seed=99))
