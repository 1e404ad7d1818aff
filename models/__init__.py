"""The model zoo: plain-torch architectures with deterministic random weights.

    model, inputs = models.get("resnet18")
    models.names("small")  # -> ["vit_tiny", "kws_conv1d", ...]
    models.info("multi_io").input_names  # -> ["image", "context"]

Each architecture lives in its own module and registers itself; the imports below are the
complete list. Models come back in eval mode, float32, with randomised BatchNorm statistics.
"""

from __future__ import annotations

import torch

from models import (  # noqa: F401  (imported for their registrations)
    digits,
    efficientnet_lite,
    kws,
    lstm,
    mobilenet_v2,
    mobilenet_v3,
    multi_io,
    resnet,
    transformer,
    unet,
    vit,
)
from models._zoo import ZOO, ZooEntry

__all__ = ["ZooEntry", "convert_options", "get", "info", "names"]


def get(name: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """Build zoo model `name` and its example inputs (same weights and inputs on every call).

    Raises:
        ConfigError: `name` is not in the zoo.
    """
    return ZOO.get(name).factory()


def info(name: str) -> ZooEntry:
    """The registry entry for `name` (I/O specs, tags, description) without building the model.

    Raises:
        ConfigError: `name` is not in the zoo.
    """
    return ZOO.get(name)


def names(tag: str | None = None) -> list[str]:
    """All zoo names in registration order, or only those carrying `tag`."""
    return [n for n in ZOO.names() if tag is None or tag in ZOO.get(n).tags]


def convert_options(name: str) -> dict[str, object]:
    """The `bridge.convert` options that carry zoo model `name`'s I/O names and layouts."""
    entry = ZOO.get(name)
    return {
        "input_names": entry.input_names,
        "output_names": entry.output_names,
        "input_layouts": [s.layout for s in entry.inputs],
        "model_name": entry.name,
    }
