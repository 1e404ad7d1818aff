"""The zoo registry: entries, the `register` decorator, and deterministic weight randomisation.

Every factory runs under its own seed (derived from the model name) inside
`torch.random.fork_rng`, so the same name always yields identical weights and inputs and the
caller's global RNG state is left untouched. Normalisation layers get random, non-default
statistics and affine parameters so that folding bugs change the numbers.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bridge.contract import TensorSpec
from bridge.registry import Registry

#: What a factory returns: an eval-mode float32 model and its example inputs, in order.
Sample = tuple[nn.Module, tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: how to build it and the I/O it declares.

    Attributes:
        name: Registry name, e.g. "resnet18".
        factory: Zero-argument callable returning `(model, example_inputs)`; deterministic.
        tags: Free-form labels such as "cnn", "image", "sequence", "multi_io", "small".
        inputs: Input specs in forward-argument order (name, shape, dtype, layout).
        outputs: Output specs in return order.
        description: One line saying what the model is and why it is in the zoo.
    """

    name: str
    factory: Callable[[], Sample]
    tags: frozenset[str]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]


ZOO: Registry[ZooEntry] = Registry("zoo model")


def spec(name: str, shape: tuple[int, ...], layout: str = "plain") -> TensorSpec:
    """A float32 TensorSpec; `layout` is "NCHW"/"NCW" for channel-first tensors."""
    return TensorSpec(name, shape, "float32", layout)


def register(
    name: str,
    *,
    tags: set[str],
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    description: str,
) -> Callable[[Callable[[], Sample]], Callable[[], Sample]]:
    """Decorator: register a builder under `name` as a deterministic zoo factory.

    The builder constructs the module and its example inputs using the global torch RNG; the
    registered factory seeds that RNG locally, initialises and randomises the weights, and puts
    the model in eval mode. The builder itself is returned unchanged.
    """

    def deco(build: Callable[[], Sample]) -> Callable[[], Sample]:
        seed = zlib.crc32(name.encode())

        def factory() -> Sample:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model, example = build()
                init_weights(model)
                randomise_norms(model)
            return model.float().eval(), tuple(t.float() for t in example)

        factory.__doc__ = build.__doc__
        entry = ZooEntry(name, factory, frozenset(tags), inputs, outputs, description)
        ZOO.register(name)(entry)
        return build

    return deco


def init_weights(model: nn.Module) -> None:
    """He-normal conv weights so that activations keep their scale through deep random nets."""
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            fan_in = m.weight[0].numel()
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))


def randomise_norms(model: nn.Module) -> None:
    """Give every BatchNorm random running stats and every norm layer random affine params.

    running_mean ~ N(0, 0.1), running_var ~ U(0.5, 2), weight ~ U(0.5, 1.5), bias ~ N(0, 0.1).
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm):
                if getattr(m, "weight", None) is not None:
                    m.weight.uniform_(0.5, 1.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.normal_(0.0, 0.1)
