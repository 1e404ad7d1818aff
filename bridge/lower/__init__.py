"""Stage 4, lower: ONNX → TFLite. `lower(artifact, mode=..., nhwc=...)` dispatches by mode.

Two packages over one TFLite editor (`tflite_graph`):
- `floating/`: ONNX → float32 .tflite with onnx2tf, then the rewrites that keep the I/O contract
  (layout, transposes, recurrent layers, fused outputs); the "fp32" (`floating/__init__.py`)
  and "fp16" (`floating/fp16.py`) modes.
- `integer/`: the float .tflite rewritten with a QDQ model's scales; "int8"/"int16x8"
  (`integer/__init__.py`) and "dynamic" (`integer/dynamic.py`, int8 weights only).
Each mode registers itself in `bridge.lower.modes.MODES`.
A `bridge.modes.Mode` names the lowering it uses (`Mode.lowering`, by default its own name).
"""

from __future__ import annotations

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.lower.floating import lower_float
from bridge.lower.modes import load_modes

__all__ = ["lower", "lower_float"]


def lower(artifact: OnnxArtifact, *, mode: str = "fp32", nhwc: bool = False) -> TfliteArtifact:
    """Lower an ONNX artifact to a .tflite artifact in `mode`.

    Args:
        artifact: the (float or QDQ) ONNX model and its channel-first I/O contract.
        mode: "fp32", "fp16", "dynamic", "int8" or "int16x8".
        nhwc: give channel-first inputs and outputs a channel-last layout in the .tflite;
            the result's contract is then `artifact.contract.as_nhwc()`.

    Raises:
        ConfigError: unknown mode.
        UnsupportedOpError: an ONNX node has no TFLite lowering.
        LoweringError: the conversion failed or could not keep the I/O contract.
    """
    return load_modes().get(mode)(artifact, nhwc=nhwc)
