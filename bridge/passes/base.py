"""The pass interface: a callable from an ONNX model to a `PassResult`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import onnx


@dataclass(frozen=True)
class PassResult:
    """What one pass did.

    Attributes:
        model: the model after the pass (the input model itself when nothing changed).
        modified: whether the pass changed the model.
        count: how many rewrites the pass made.
        hints: JSON-serialisable notes for later stages (for example which activations
            the lowering can fuse); the manager stores them in the pass log.
    """

    model: onnx.ModelProto
    modified: bool
    count: int
    hints: Mapping[str, Any] = field(default_factory=dict)


class GraphPass(Protocol):
    """An ONNX → ONNX rewrite. It never mutates its argument."""

    def __call__(self, model: onnx.ModelProto, /) -> PassResult: ...
