"""The runtimes and what every stage measures with them: the low layer under passes, quantize,
lower and verify.

runners (torch, ONNX Runtime, LiteRT behind one interface), the LiteRT child-process sandbox
(sandbox, zygote, litert_child, crash_site), capture (intermediate tensors), torch_layers and
module_map (per-module torch outputs), metrics, feeds, tolerances, and tflite_io (the TFLite
flatbuffer reader and writer). It imports only the bottom modules (errors, qparams,
contract), never passes, quantize, lower, verify or api.
"""
