"""bridge: PyTorch → TFLite (LiteRT) with every output numerically verified.

Public API: `convert`, `convert_qdq` (a QDQ .onnx file), `verify`, `Conversion`, `QuantConfig`
and the typed errors.

Layers, lowest first; a module imports only its own layer or lower ones, and only at module level
(tests/unit/test_layers.py checks the import graph):

1. errors, registry, qparams
2. contract (the I/O contract), then artifact
3. runtime/: runners, the LiteRT sandbox, capture, metrics, feeds, tolerances, tflite_io
4. modes/ (one frozen Mode per file, read by everything above), then passes/, quantize/, lower/
5. verify/ (judges a conversion: gate, parity, noise, localize, reports), outdir (FILES),
   export, trace_hazards, inspect
6. api (convert), importqdq (convert_qdq); only they and the layer above import verify/
7. compare (`--modes`), cli, this package
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.api import Conversion, ConvertOptions, convert
from bridge.errors import (
    BridgeError,
    CalibrationError,
    ConfigError,
    ExportError,
    LoweringError,
    ModelLoadError,
    OutputDirError,
    ParityError,
    PassError,
    ShapeError,
    UnsupportedOpError,
)
from bridge.importqdq import convert_qdq
from bridge.importqdq.qat import convert_qat, qat_qconfig_mapping
from bridge.quantize.config import QuantConfig
from bridge.verify.folder import verify_dir
from bridge.verify.localize import localize_dir

__all__ = [
    "BridgeError",
    "CalibrationError",
    "ConfigError",
    "Conversion",
    "ConvertOptions",
    "ExportError",
    "LoweringError",
    "ModelLoadError",
    "OutputDirError",
    "ParityError",
    "PassError",
    "QuantConfig",
    "ShapeError",
    "UnsupportedOpError",
    "convert",
    "convert_qat",
    "convert_qdq",
    "qat_qconfig_mapping",
    "verify",
]


def verify(output_dir: str | Path, *, layers: bool = False) -> dict[str, Any]:
    """Re-run the parity check of a conversion folder and return the fresh report.

    With `layers=True` the report also holds the per-layer comparison and the first diverging
    layer. Raises ParityError if any runtime pair misses its floor.
    """
    report = verify_dir(output_dir)
    if layers:
        report["layers"] = localize_dir(output_dir)
    if not report["passed"]:
        raise ParityError("parity check failed: " + "; ".join(report["failures"]), report=report)
    return report
