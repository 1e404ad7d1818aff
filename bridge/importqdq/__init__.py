"""Import a QDQ ONNX model bridge did not make (ONNX Runtime's quantizer, a QAT export): lower it
to an integer .tflite that keeps its scales, or refuse where a scale breaks a TFLite kernel rule.
"""

from __future__ import annotations

from bridge.importqdq.convert import ImportOptions, convert_qdq

__all__ = ["ImportOptions", "convert_qdq"]
