"""TFLite's integer rules as one table, read by the quantizer and by the lowering.

Per ONNX op type, an `OpRule` says how the op is quantized so that the QDQ model matches what
TFLite's integer kernels compute:

- ``output="own"``: the output gets its own calibrated range (Conv, Add, Relu, ...).
- ``output="same"``: the output keeps its input's scale and zero point (TFLite requires equal
  in/out qparams for max/average pool, reshape, transpose, pad, resize, ...). With
  ``share_inputs`` all data inputs and the outputs share one scale (Concat, Max, Min): the
  quantizer unifies them by merging their ranges.
- ``output="fixed"``: fixed output qparams per activation dtype (TFLite's LOGISTIC and SOFTMAX
  int8 output (1/256, −128), TANH (1/128, 0); all three (1/32768, 0) in int16).
- ``output="float"``: no TFLite integer kernel; the node stays float, `reason` says why.

Weights (`weight`, constant) are int8 symmetric per-channel along `weight_axis` in ONNX's
layout: Conv 0 (also depthwise), ConvTranspose 1 (its output channels are group × W.shape[1]),
Gemm 0 if transB else 1, MatMul the last axis (output features; per-tensor for a weight of
rank ≠ 2, as TFLite's BATCH_MATMUL has no per-channel filters). Biases (`bias`) are int32 (int64
in 16x8: `weights.BIAS_DTYPES`) with scale s_in·s_w per channel and zero point 0.
`fuses_activation` ops absorb a following Relu/Relu6/Clip into the TFLite kernel, so no QDQ
sits between them. `symmetric_inputs` must be quantized with zero point 0 when they are
activations (LiteRT's kernel assumes it).

Beside the per-op table: the float-fallback policy as data (`FLOAT_ABSORBED_OPS`, the
weight-only layers `WEIGHT_ONLY_OPS` and int8 tables `INT8_TABLE_OPS`), the range cuts of
Softmax inputs and Add inputs (`SOFTMAX_INPUT_SPAN`, `REACH_CUT_OPS`), the
shared-scale spread that is reported (`SHARED_SCALE_MAX_RATIO`), and the multi-node patterns
the lowering emits as one TFLite op (`FUSED_PATTERNS`, matched in `bridge.quantize.patterns`),
whose internal tensors get no QDQ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import onnx

#: Fixed output qparams (scale, zero point) per activation dtype.
SIGMOID_QPARAMS = MappingProxyType({"int8": (1.0 / 256, -128), "int16": (1.0 / 32768, 0)})
TANH_QPARAMS = MappingProxyType({"int8": (1.0 / 128, 0), "int16": (1.0 / 32768, 0)})
LOG_SOFTMAX_QPARAMS = MappingProxyType({"int8": (16.0 / 256, 127)})


@dataclass(frozen=True)
class OpRule:
    """How one ONNX op type is quantized (see the module docstring).

    Attributes:
        op_type: the ONNX op type.
        output: "own", "same", "fixed" or "float".
        inputs: indices of the data inputs that carry quantized activations (None: all).
        weight: index of the weight input (quantized per-channel when it is a constant).
        weight_axis: the output-channel axis of that weight (-1: the last axis).
        bias: index of the bias input (int32 or, in 16x8, int64; scale s_in·s_w).
        share_inputs: all data inputs and outputs share one scale.
        fixed: output (scale, zero point) per activation dtype, for output="fixed".
        fuses_activation: a following Relu/Clip fuses into this op's TFLite kernel.
        int16: TFLite has a 16x8 kernel for it.
        symmetric_inputs: input indices whose activation needs zero point 0.
        reason: why the op stays float, or a note on its rule.
    """

    op_type: str
    output: str
    inputs: tuple[int, ...] | None = (0,)
    weight: int | None = None
    weight_axis: int | None = None
    bias: int | None = None
    share_inputs: bool = False
    fixed: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    fuses_activation: bool = False
    int16: bool = True
    symmetric_inputs: tuple[int, ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        if self.output not in ("own", "same", "fixed", "float"):
            raise ValueError(f"bad output kind {self.output!r} for {self.op_type}")

    @property
    def is_float(self) -> bool:
        return self.output == "float"

    def data_inputs(self, node: onnx.NodeProto) -> list[int]:
        """Indices of the node's present inputs that are data (not weight, bias or params)."""
        idx = range(len(node.input)) if self.inputs is None else self.inputs
        return [i for i in idx if i < len(node.input) and node.input[i] and i != self.bias]


def _own(op: str, **kw: object) -> OpRule:
    return OpRule(op, "own", **kw)  # type: ignore[arg-type]


def _same(op: str, **kw: object) -> OpRule:
    return OpRule(op, "same", **kw)  # type: ignore[arg-type]


def _float(op: str, reason: str) -> OpRule:
    return OpRule(op, "float", reason=reason)


_RULES: tuple[OpRule, ...] = (
    # weighted ops: int8 per-channel weights, int32 bias, fused Relu/Relu6
    _own("Conv", weight=1, weight_axis=0, bias=2, fuses_activation=True),
    _own(
        "ConvTranspose",
        weight=1,
        weight_axis=1,
        bias=2,
        fuses_activation=True,
        reason="output channels = group × W.shape[1]; per-channel scales repeat per group",
    ),
    _own("Gemm", weight=1, weight_axis=1, bias=2, fuses_activation=True, reason="axis 0 if transB"),
    _own(
        "MatMul",
        inputs=(0, 1),
        weight=1,
        weight_axis=-1,
        fuses_activation=True,
        symmetric_inputs=(1,),
        reason="XNNPACK's int8 BATCH_MATMUL (LiteRT 2.1) ignores input 1's zero point (18 dB "
        "off the builtin kernel when it is not 0): an activation input 1 is quantized "
        "symmetrically",
    ),
    # elementwise arithmetic: every input quantized, own output scale
    _own("Add", inputs=(0, 1), fuses_activation=True),
    _own("Sub", inputs=(0, 1), fuses_activation=True),
    _own("Mul", inputs=(0, 1), fuses_activation=True),
    _own("Sum", inputs=None),
    # activations with their own output range
    _own("Relu"),
    _own("Clip", reason="min/max inputs stay float constants"),
    _own("LeakyRelu"),
    _own("Elu", int16=False, reason="TFLite ELU has no int16 kernel"),
    _own("HardSigmoid"),
    _own("HardSwish", int16=False, reason="TFLite HARD_SWISH has no int16 kernel"),
    _own("PRelu", inputs=(0, 1), int16=False, reason="TFLite PRELU has no int16 kernel"),
    _own("Gelu", int16=False, reason="TFLite GELU has no int16 kernel"),
    _own("Abs"),
    _own("ReduceMean"),
    _own("ReduceSum", int16=False, reason="TFLite SUM has no int16 kernel"),
    _own("Exp", reason="TFLite EXP: int8/int16 lookup-table kernels"),
    _own("Log", reason="TFLite LOG: int8/int16 lookup-table kernels"),
    # fixed output qparams
    OpRule("Sigmoid", "fixed", fixed=SIGMOID_QPARAMS),
    OpRule("Softmax", "fixed", fixed=SIGMOID_QPARAMS),
    OpRule("Tanh", "fixed", fixed=TANH_QPARAMS),
    OpRule("LogSoftmax", "fixed", fixed=LOG_SOFTMAX_QPARAMS, int16=False),
    # the output keeps the input's scale
    _same("MaxPool"),
    _same("GlobalMaxPool"),
    _same("AveragePool", reason="TFLite's int8 AVERAGE_POOL_2D needs equal in/out scales"),
    _same("GlobalAveragePool", reason="lowered to an average pool: equal in/out scales"),
    _same("Reshape"),
    _same("Transpose"),
    _same("Flatten"),
    _same("Squeeze"),
    _same("Unsqueeze"),
    _same("Expand"),
    _same("Tile", int16=False, reason="TFLite TILE has no int16 kernel"),
    _same("Pad", reason="the pad value must be the zero point"),
    _same("Slice"),
    _same("Split"),
    _same("Gather"),
    _same("Resize"),
    _same("DepthToSpace", int16=False, reason="TFLite DEPTH_TO_SPACE has no int16 kernel"),
    _same("SpaceToDepth", int16=False, reason="TFLite SPACE_TO_DEPTH has no int16 kernel"),
    _same("Identity"),
    _same("ReduceMax"),
    _same("ReduceMin"),
    _same("Concat", inputs=None, share_inputs=True),
    _same("Max", inputs=None, share_inputs=True, reason="TFLite MAXIMUM: one scale"),
    _same("Min", inputs=None, share_inputs=True, reason="TFLite MINIMUM: one scale"),
    # no integer kernel: stay float
    _float("LSTM", "TFLite's integer LSTM needs its own 20-tensor calibration; kept float"),
    _float("GRU", "no integer GRU kernel in TFLite"),
    _float("RNN", "no integer RNN kernel in TFLite"),
    _float("Div", "TFLite DIV has no int8 kernel (float32, int32 and uint8 only)"),
    _float("Pow", "TFLite POW has no integer kernel for float data"),
    _float("Sqrt", "TFLite SQRT has no int8 kernel"),
    _float("Reciprocal", "lowered to DIV, which has no int8 kernel"),
    _float("Erf", "no TFLite ERF op; its float decomposition stays float"),
    _float("Sin", "no integer SIN kernel in TFLite"),
    _float("Cos", "no integer COS kernel in TFLite"),
    _float("Softplus", "no integer kernel; decomposed into EXP and LOG"),
    _float("Mish", "no integer kernel; decomposed into float ops"),
    _float("LayerNormalization", "no TFLite op; its decomposition (mean, rsqrt, div) stays float"),
    _float("InstanceNormalization", "no TFLite op; its decomposition stays float"),
    _float("GroupNormalization", "no TFLite op; its decomposition stays float"),
    _float("BatchNormalization", "should have been folded into the previous conv by the passes"),
    _float("Einsum", "no TFLite EINSUM op"),
    _float("CumSum", "TFLite CUMSUM has no int8 kernel"),
    _float("ReduceProd", "TFLite REDUCE_PROD int8 is not exact enough"),
    _float("ReduceL2", "no integer REDUCE_L2 kernel"),
    _float("TopK", "the values are returned float; indices are integers anyway"),
    _float("NonMaxSuppression", "no integer kernel"),
    _float("ScatterND", "no integer SCATTER_ND update kernel"),
    _float(
        "Where",
        "SELECT_V2 needs one scale for both branches, and masks often hold ±inf or huge fill "
        "values that would swamp it; kept float",
    ),
    _float("Neg", "no int8 NEG kernel known to the lowering (bridge.lower.integer.kernels)"),
)

#: Softmax is shift-invariant per row: a value SOFTMAX_INPUT_SPAN below its row's maximum weighs
#: exp(−20) ≈ 2e-9, far below the output step of 1/256. So the scores an additive attention mask
#: (−10000) pushes far below the real ones (an empty gap wider than this in the calibration
#: histogram) are dropped from a Softmax input's range, which reaches this far below the lowest
#: real score: masked keys clip to its bottom and still weigh nothing in every row
#: (`bridge.quantize.assign.softmax_input_range`). Measured on all-MiniLM-L6-v2: the mask would take
#: all the levels (scale ≈ 39); cutting to [global max − 20, max] instead flattened the rows
#: whose maximum is far below the global one (median row max 2-5 against 14-45): QDQ ⇄ float
#: 4.8 → 9.4 dB on the embedding.
SOFTMAX_INPUT_SPAN = 20.0
#: An input of these ops keeps only the values that can reach the output's range: with the output
#: quantized to [L, H] and the other input in [lo_a, hi_a], b below L − hi_a or above H − lo_a
#: saturates the output either way (`bridge.quantize.qdq`, applied when every reader of b is a
#: quantized Add). Besides the levels it frees, LiteRT's builtin int8 ADD needs it: its
#: optimized kernel narrows the rescaled sum to int16, which wraps once |b| / s_out ≥ 32768.
#: Measured on all-MiniLM-L6-v2: the −10000 attention mask against a softmax input of scale
#: 0.23 came out +127 instead of −128 (every padded key attended); XNNPACK was right.
REACH_CUT_OPS = ("Add",)
#: A member of a shared-scale group (Concat, Max, Min and the moves around them) whose range is
#: more than this many times narrower than the group's keeps fewer than 256 / 16 = 16 int8
#: levels (4 bits, about 25 dB SQNR on it before any other error); the QDQ writer reports it in
#: facts["quantization"]["narrow_in_shared_scale"]. Keeping the node float would not help: its
#: int8 readers quantize its output at the same wide range (measured on ViT's class token,
#: |v| ≤ 0.05 beside ±5 patch embeddings: 0.0 dB gained); only a float island does (below).
#: The zoo's CNN concatenations are at most 2.5×.
SHARED_SCALE_MAX_RATIO = 16.0

#: Float fallback (besides the ops above that have no integer kernel): ops that cost no more in
#: float than in int8 (elementwise arithmetic, clamps, data movement; no weights). Such a node
#: stays float when every reader of its outputs is float and none is a graph output: its int8
#: result would be dequantized at once, a rounding that buys no integer kernel. This keeps a
#: pre-LN transformer's residual stream, which only float LayerNorms and the next residual Add
#: read, in float: per-tensor int8 there leaves the rows of small magnitude (ViT's class token,
#: rms 0.03 in a ±6 stream) a few levels. Measured on vit_tiny: QDQ ⇄ float 13 → 29 dB.
#: A GELU chain (fused pattern) counts too: its int8 kernel is a lookup table, the float one is
#: as cheap, and behind it sits a weight-only linear layer (WEIGHT_ONLY_OPS) that reads float.
#: Measured on all-MiniLM-L6-v2: QDQ ⇄ float 17.3 → 19.0 dB.
FLOAT_ABSORBED_OPS = frozenset(
    {
        "Gelu",
        "Add",
        "Sub",
        "Mul",
        "Sum",
        "Relu",
        "Clip",
        "LeakyRelu",
        "Abs",
        "Max",
        "Min",
        "Concat",
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Expand",
        "Tile",
        "Pad",
        "Slice",
        "Split",
        "Gather",
        "Identity",
    }
)

#: Weight-only linear layers: a MatMul/Gemm with a constant 2-D weight (and the bias Add fused
#: into it) whose output only float nodes read (a transformer's FFN output, read by the float
#: residual Add) and which per-tensor int8 cannot hold (its median magnitude spans fewer than
#: WEIGHT_ONLY_MIN_LEVELS steps of the int8 grid over its calibrated range) runs in float32 on
#: int8 weights that LiteRT dequantizes once at load: its int8 output would be dequantized at
#: once anyway. BERT's residual stream has outlier channels: all-MiniLM-L6-v2's FFN output
#: channel 99 reaches 195 against a median channel maximum of 1, so the int8 step, 0.77, exceeds
#: the median value (0.25-0.8 steps in its 6 layers; its attention outputs 4-12 steps and the
#: zoo's random-weight transformers ≥ 12 stay int8). Measured on all-MiniLM-L6-v2 (fortunes,
#: mean embedding cosine to fp32): 0.943 → 0.991. A hybrid kernel (int8 weights, float in/out)
#: would re-quantize the input per row, 20 dB away from the QDQ model; the float kernel
#: computes exactly what the QDQ model does.
WEIGHT_ONLY_OPS = frozenset({"MatMul", "Gemm"})
#: A median value under 2 steps is rounded by a quarter of itself or more.
WEIGHT_ONLY_MIN_LEVELS = 2.0
#: Lookup tables: the constant 2-D table of a Gather that stays float (an embedding, read by a
#: float Add and LayerNorm) is stored int8 with one symmetric scale per row and dequantized
#: once at load, like the weight-only layers: the file holds a quarter of the bytes and every
#: row keeps its own 8 bits. all-MiniLM-L6-v2's 30522 × 384 word embeddings: 47 → 12 MB.
INT8_TABLE_OPS = frozenset({"Gather"})
WEIGHT_ONLY_REASON = (
    "linear layer read only by float ops (a residual Add) whose output per-tensor int8 cannot "
    "hold (outlier channels): float32 arithmetic on int8 weights dequantized at load "
    "(rules.WEIGHT_ONLY_OPS)"
)


@dataclass(frozen=True)
class FusedPattern:
    """A chain of ONNX nodes that the lowering emits as one TFLite operator.

    The QDQ model must not round inside it, since TFLite does not: only the chain's data input
    and its output are quantized, as `rule_op` would quantize them.

    Attributes:
        name: the pattern's name (`bridge.quantize.patterns` has one matcher per name).
        ops: the op types of the chain, input side first.
        tflite_op: the TFLite operator it becomes.
        rule_op: the op type whose rule quantizes the fused operator.
        reason: who fuses it, and why no rounding happens inside.
    """

    name: str
    ops: tuple[str, ...]
    tflite_op: str
    rule_op: str
    reason: str


FUSED_PATTERNS: tuple[FusedPattern, ...] = (
    FusedPattern(
        "gelu_erf",
        ("Div", "Erf", "Add", "Mul", "Mul"),
        "GELU",
        "Gelu",
        "onnx2tf fuses x·0.5·(1 + erf(x/√2)) into GELU (tflite_builder/preprocess/rules/"
        "pattern_fusion.py); LiteRT's int8 GELU is a lookup table of the exact function",
    ),
    FusedPattern(
        "matmul_bias",
        ("MatMul", "Add"),
        "FULLY_CONNECTED",
        "MatMul",
        "x·W + b with a constant 2-D W and a constant 1-D b is lowered to FULLY_CONNECTED "
        "with per-channel int8 W and an int32 bias (bridge.lower.integer.linear), as TFLite's "
        "converter writes a Linear layer: the product is not rounded before the bias",
    ),
)


#: The table: ONNX op type → rule.
RULES: Mapping[str, OpRule] = MappingProxyType({r.op_type: r for r in _RULES})

#: The ops whose nodes stay float, with the reason (for reports).
FLOAT_OPS: Mapping[str, str] = MappingProxyType({r.op_type: r.reason for r in _RULES if r.is_float})

#: Reason given for an op type that is not in the table.
UNLISTED_REASON = "no int8 rule in bridge.quantize.rules"


def rule_for(op_type: str, node: onnx.NodeProto | None = None) -> OpRule | None:
    """The rule for `op_type`, specialised to `node`'s attributes when given (Gemm's transB).

    Returns None for op types that are not in the table (the quantizer keeps them float).
    """
    rule = RULES.get(op_type)
    if rule is None or node is None:
        return rule
    if op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return replace(rule, weight_axis=0 if trans_b else 1)
    return rule


def weight_axis(rule: OpRule, weight_rank: int) -> int | None:
    """The per-channel axis for a constant weight of rank `weight_rank` (None: per-tensor)."""
    if rule.weight_axis is None:
        return None
    if rule.op_type == "MatMul":
        return 1 if weight_rank == 2 else None
    return rule.weight_axis if weight_rank > rule.weight_axis else None


def fusable_activation(node: onnx.NodeProto, constants: Mapping[str, object]) -> bool:
    """Whether `node` is an activation TFLite fuses into the producing kernel.

    Relu always; Clip when its bounds are (0, 6), (0, none) or (−1, 1), as in TFLite's RELU6,
    RELU and RELU_N1_TO_1. `constants` maps constant tensor names to numpy values.
    """
    if node.op_type == "Relu":
        return True
    if node.op_type != "Clip":
        return False
    lo, hi = _clip_bounds(node, constants)
    return (lo, hi) in ((0.0, 6.0), (0.0, None), (-1.0, 1.0))


def _clip_bounds(
    node: onnx.NodeProto, constants: Mapping[str, object]
) -> tuple[float | None, float | None]:
    attrs = {a.name: a.f for a in node.attribute}
    bounds: list[float | None] = [attrs.get("min"), attrs.get("max")]
    for k in (1, 2):
        if len(node.input) > k and node.input[k]:
            value = constants.get(node.input[k])
            if value is None:
                return (float("nan"), float("nan"))  # a computed bound: never fused
            bounds[k - 1] = float(value)  # type: ignore[arg-type]
    return bounds[0], bounds[1]
