"""The default passes on MobileNetV2-style inverted residual blocks exported from torch."""

from __future__ import annotations

import io
import logging
import time

import onnx
import torch

from bridge.artifact import OnnxArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.passes import run_passes
from bridge.passes.check import io_signature
from bridge.runtime.feeds import random_feeds
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import OrtRunner, TorchRunner
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB

nn = torch.nn
log = logging.getLogger(__name__)


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
    layers = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """expand 1×1 → depthwise 3×3 → project 1×1, with a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.skip = stride == 1 and cin == cout
        self.body = nn.Sequential(
            _conv_bn(cin, hidden),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, act=False),
        )

    def forward(self, x):
        y = self.body(x)
        return x + y if self.skip else y


class TinyMobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2)
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 1),
            InvertedResidual(16, 24, 2, 6),
            InvertedResidual(24, 24, 1, 6),
            InvertedResidual(24, 32, 2, 6),
            InvertedResidual(32, 32, 1, 6),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.mean((2, 3)))


def _randomise_bn(net: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=gen) - 0.5)


def test_mobilenet_blocks(g):
    torch.manual_seed(0)
    net = TinyMobileNetV2()
    with torch.no_grad():
        _randomise_bn(net)
    net.eval()
    contract = IOContract(
        inputs=(TensorSpec("x", (1, 3, 32, 32), "float32", "NCHW"),),
        outputs=(TensorSpec("y", (1, 10), "float32"),),
    )
    buf = io.BytesIO()
    torch.onnx.export(
        net,
        (torch.randn(1, 3, 32, 32),),
        buf,
        opset_version=17,
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        do_constant_folding=False,
    )
    artifact = OnnxArtifact(onnx.load_from_string(buf.getvalue()), contract)
    ops_before = g.ops(artifact.model)

    start = time.perf_counter()
    out = run_passes(artifact)
    seconds = time.perf_counter() - start

    ops = g.ops(out.model)
    assert ops_before.count("BatchNormalization") == 16
    assert "BatchNormalization" not in ops
    assert ops.count("Conv") == 16 and ops.count("Clip") == 11
    assert len(ops) <= len(ops_before) - 16
    assert io_signature(out.model) == io_signature(artifact.model)
    feeds = random_feeds(contract, seed=1)
    ref = TorchRunner(net, contract).run(feeds)["y"]
    got = OrtRunner(out.model, contract).run(feeds)["y"]
    assert sqnr_db(ref, got) >= FP32_MIN_SQNR_DB
    log.info(
        "MobileNetV2 blocks: %d → %d nodes in %.3f s (pass time %.3f s)",
        len(ops_before),
        len(ops),
        seconds,
        sum(e["seconds"] for e in out.facts["passes"]),
    )
