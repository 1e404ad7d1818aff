"""Accuracy targets of the real models, as data: each with the reason for its number.

`max_drop`: torch's metric minus LiteRT's (and ONNX Runtime's), in points, at most this.
`min_cos`: the mean cosine of the .tflite's embeddings to torch fp32's, at least this.
`min_agree`: the % of samples whose .tflite top-1 equals torch's, at least this.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """What one model in one mode must reach, and why."""

    model: str
    mode: str
    reason: str
    max_drop: float | None = None
    min_cos: float | None = None
    min_agree: float | None = None


FLOAT = "float32 kernels compute the same function: no sample may change its top-1 class"
FP16 = (
    "fp16 weights are dequantised to float32 at load (LiteRT's fp16 mode): the function is "
    "unchanged up to weight rounding, which must flip no top-1 class"
)
INT8_SMALL = "the issue's target: full-integer int8 costs at most 0.3 points of top-1"
DYNAMIC = (
    "dynamic-range int8 quantises weights per channel and activations per sample: "
    "held to the int8 target"
)
MINILM_FP16 = "the issue's target: fp16 changes no probe prediction"
EFFICIENTNET_INT8 = (
    "int8 of a trained ImageNet net costs ~0.5-1 pt of top-1 in TFLite; on 90 crops one crop is "
    "1.1 pt, so at most one crop may be lost; TF's own int8 converter (onnx2tf tf_converter, "
    "same photo calibration) keeps its top-1 at 95.56 and agrees with torch on 97.8 % of crops"
)
EFFICIENTNET_DYNAMIC = (
    "int8 weights rounded to nearest without calibration data (21.5 dB against torch) move 4 "
    "of 90 near-tie crops to another class (agreement 95.6 %) and lose none: at most one crop"
)
MINILM_DYNAMIC = (
    "hybrid FULLY_CONNECTED kernels (int8 weights, per-row int8 inputs): measured cosine 0.9988 "
    "on 400 fortunes and one probe flip in 400; one flip is 0.5 pt on the 200 tested"
)
MINILM_INT8 = "the issue's target: int8 embeddings keep a mean cosine ≥ 0.98 to fp32"

TARGETS: tuple[Target, ...] = (
    *(Target(m, "fp32", FLOAT, max_drop=0.0) for m in ("digits_mnist", "digits_opencv")),
    Target("fashion_mnist", "fp32", FLOAT, max_drop=0.0),
    Target("efficientnet_lite0", "fp32", FLOAT, max_drop=0.0, min_agree=100.0),
    Target("minilm", "fp32", FLOAT, max_drop=0.0, min_cos=0.99999),
    *(Target(m, "fp16", FP16, max_drop=0.0) for m in ("digits_mnist", "digits_opencv")),
    Target("fashion_mnist", "fp16", FP16, max_drop=0.0),
    Target("efficientnet_lite0", "fp16", FP16, max_drop=0.0),
    Target("minilm", "fp16", MINILM_FP16, max_drop=0.0, min_cos=0.999),
    *(Target(m, "dynamic", DYNAMIC, max_drop=0.3) for m in ("digits_mnist", "digits_opencv")),
    Target("fashion_mnist", "dynamic", DYNAMIC, max_drop=0.3),
    *(Target(m, "int8", INT8_SMALL, max_drop=0.3) for m in ("digits_mnist", "digits_opencv")),
    Target("fashion_mnist", "int8", INT8_SMALL, max_drop=0.3),
    Target("minilm", "int8", MINILM_INT8, min_cos=0.98),
    Target("efficientnet_lite0", "dynamic", EFFICIENTNET_DYNAMIC, max_drop=1.2, min_agree=94.0),
    Target("efficientnet_lite0", "int8", EFFICIENTNET_INT8, max_drop=1.2, min_agree=96.0),
    Target("efficientnet_lite0", "int16x8", EFFICIENTNET_INT8, max_drop=1.2, min_agree=96.0),
    Target("minilm", "dynamic", MINILM_DYNAMIC, max_drop=1.0, min_cos=0.995),
)


QAT = (
    "QAT int8 (convert_qat, the learned scales kept) is held to the int8 target against the float "
    "model (measured: FX 89.60, PT2E 89.55 vs float 89.20, PTQ int8 89.30), and its .tflite must "
    "give the fake-quant torch model's top-1: min_agree is against the fake-quant model here "
    "(measured 99.95 %, 1 of 2,000 images on a near tie; 99.5 % allows 10)"
)

#: Checked by test_qat_accuracy.py (tools/_qat_eval.qat_row), not by test_accuracy.py: these
#: modes are not bridge.convert quantize modes.
QAT_TARGETS: tuple[Target, ...] = (
    Target("fashion_mnist", "qat_fx", QAT, max_drop=0.3, min_agree=99.5),
    Target("fashion_mnist", "qat_pt2e", QAT, max_drop=0.3, min_agree=99.5),
)


def target_id(t: Target) -> str:
    return f"{t.model}-{t.mode}"


#: Targets not met yet, as strict expected failures (they must fail until fixed), with why.
KNOWN_FAILURES: dict[str, str] = {}
