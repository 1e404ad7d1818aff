"""The lowering modes: name → function `(artifact, *, nhwc) -> TfliteArtifact`.

A mode is one module that registers its function with `@MODES.register("<name>")`, plus its
module name in `MODE_MODULES`. `lower()` imports those modules on first use, so importing
`bridge.lower` stays cheap and mode modules can import `MODES` without a cycle.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Protocol

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.registry import Registry


class LowerFn(Protocol):
    """A lowering: an ONNX artifact to a .tflite artifact keeping (or NHWC-ing) its contract."""

    def __call__(self, artifact: OnnxArtifact, *, nhwc: bool = False) -> TfliteArtifact: ...


MODES: Registry[LowerFn] = Registry("lowering mode")

#: Modules that register modes, in registration order. Adding a mode: one file + one line here.
MODE_MODULES: tuple[str, ...] = (
    "bridge.lower.floating",  # fp32
    "bridge.lower.floating.fp16",  # fp16
    "bridge.lower.integer",  # int8, int16x8
    "bridge.lower.integer.dynamic",  # dynamic (its package registers int8 first anyway)
)


def load_modes() -> Registry[LowerFn]:
    """Import every mode module that exists (once) and return the registry."""
    for name in MODE_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    return MODES
