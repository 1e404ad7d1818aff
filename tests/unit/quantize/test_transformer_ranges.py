"""int8 ranges for BERT-like models: the Softmax input beside an additive mask, the reach cut of
an Add's inputs, weight-only linear layers for outlier outputs, and int8 embedding tables."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.quantize import assign as assign_module
from bridge.quantize import rules
from bridge.quantize.assign import softmax_input_range
from bridge.quantize.observers import HistogramObserver, MinMaxObserver
from bridge.quantize.plan import ABSORBED, median_levels
from bridge.quantize.rules import SOFTMAX_INPUT_SPAN

from .conftest import activation_qparams, dequantized_constants, initializers
from .transformer_models import (
    embedder,
    float_vs_qdq,
    masked_attention,
    post_ln,
    quantized,
)

#: QDQ ⇄ float of MaskedAttention: measured 18-22 dB (as the observers' ranges change); 9.5-9.8
#: dB with the range cut at the global maximum minus SPAN, which flattens every row but token 0's.
MASKED_FLOOR_DB = 15.0
MASKED_GAIN_DB = 6.0
#: PostLN with a ×50 outlier: 32.3 dB with fc2 weight-only, 23.4 dB with fc2 int8.
OUTLIER_FLOOR_DB = 30.0
OUTLIER_GAIN_DB = 6.0


@pytest.fixture(scope="module")
def attention():
    art = masked_attention()
    return art, quantized(art)


def _scores_and_mask(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = 3.0 * rng.standard_normal(n)
    masked = real - 10000.0
    return real, masked


# ---- the Softmax input range --------------------------------------------------------------------
def test_softmax_range_drops_the_mask_cluster() -> None:
    real, masked = _scores_and_mask(20000, 0)
    obs = HistogramObserver()
    obs.update(np.concatenate([real, masked[:5000]]))
    width = obs.hist.width
    lo, hi = softmax_input_range([obs], *obs.range())
    assert hi == pytest.approx(real.max())  # the observed top, whatever the L2 search chose
    # the real scores' bottom (to a histogram bin) minus SPAN: masked scores clip below all
    assert (
        real.min() - SOFTMAX_INPUT_SPAN - 2 * width <= lo <= real.min() - SOFTMAX_INPUT_SPAN + width
    )


def test_softmax_range_without_a_gap_is_not_cut() -> None:
    real, _ = _scores_and_mask(20000, 1)
    obs = HistogramObserver()
    obs.update(10.0 * real)  # wider than SPAN, but one cluster: every value may be a row's max
    lo, _ = obs.range()
    assert softmax_input_range([obs], lo, float(obs.max_val))[0] == lo


def test_softmax_range_without_histogram_falls_back_to_the_top_cut() -> None:
    real, masked = _scores_and_mask(1000, 2)
    obs = MinMaxObserver()
    obs.update(np.concatenate([real, masked]))
    lo, hi = softmax_input_range([obs], *obs.range())
    assert (lo, hi) == (pytest.approx(real.max() - SOFTMAX_INPUT_SPAN), pytest.approx(real.max()))


def test_masked_rows_keep_their_shape(attention) -> None:
    art, qdq = attention
    kept = float_vs_qdq(art, qdq)
    mp = pytest.MonkeyPatch()
    mp.setattr(assign_module, "softmax_input_range", _top_cut)
    try:
        top_cut = float_vs_qdq(art, quantized(art))
    finally:
        mp.undo()
    assert kept >= MASKED_FLOOR_DB and kept >= top_cut + MASKED_GAIN_DB, (kept, top_cut)


def _top_cut(observers, lo: float, hi: float) -> tuple[float, float]:
    """The previous rule: [hi − SPAN, hi] of the observers' range."""
    return max(lo, hi - SOFTMAX_INPUT_SPAN), hi


# ---- the reach cut ------------------------------------------------------------------------------
def test_mask_range_is_cut_to_what_reaches_the_softmax(attention) -> None:
    _, qdq = attention
    tensors = qdq.facts["quantization"]["tensors"]
    graph = qdq.model.graph
    add = next(n for n in graph.node if n.op_type == "Add" and n.output[0] == "/Add_output_0")
    scores, mask = (t.removesuffix("_dequantized") for t in add.input)
    out_lo, out_hi = tensors[add.output[0]]["range"]
    score_hi = tensors[scores]["range"][1]
    mask_lo, mask_hi = tensors[mask]["range"]
    step = (out_hi - out_lo) / 255
    assert mask_lo == pytest.approx(out_lo - score_hi - step, rel=1e-6)  # not −10000
    assert mask_hi == 0.0
    # in output steps the mask's range fits LiteRT's int16 sum with room to spare
    assert -mask_lo / tensors[add.output[0]]["scale"][0] < 1000


# ---- weight-only linear layers ------------------------------------------------------------------
def test_outlier_linear_runs_weight_only() -> None:
    art = post_ln(50.0)
    qdq = quantized(art)
    floats = {f["node"]: f for f in qdq.facts["quantization"]["float_nodes"]}
    assert floats["/fc2/MatMul"]["reason"] == rules.WEIGHT_ONLY_REASON, sorted(floats)
    assert floats["/fc2/Add"]["reason"] == rules.WEIGHT_ONLY_REASON
    assert floats["/Mul_1"]["reason"] == ABSORBED  # the GELU feeding it: float as well
    graph = qdq.model.graph
    mm = next(n for n in graph.node if n.name == "/fc2/MatMul")
    dq = dequantized_constants(qdq.model)[mm.input[1]]
    assert initializers(qdq.model)[dq.input[0]].dtype == np.int8  # int8 weight, per channel
    assert next(a.i for a in dq.attribute if a.name == "axis") == 1
    add = next(n for n in graph.node if n.name == "/fc2/Add")
    assert "fc2.bias" in add.input  # float bias, no int32 DequantizeLinear
    assert "/fc2/Add_output_0" not in activation_qparams(qdq.model)  # its output stays float
    weight_only = float_vs_qdq(art, qdq)
    mp = pytest.MonkeyPatch()
    mp.setattr("bridge.quantize.plan.WEIGHT_ONLY_MIN_LEVELS", 0.0)
    try:
        int8 = float_vs_qdq(art, quantized(art))
    finally:
        mp.undo()
    assert weight_only >= OUTLIER_FLOOR_DB and weight_only >= int8 + OUTLIER_GAIN_DB, (
        weight_only,
        int8,
    )


def test_ordinary_linear_stays_int8() -> None:
    qdq = quantized(post_ln(1.0))
    reasons = {f["reason"] for f in qdq.facts["quantization"]["float_nodes"]}
    assert rules.WEIGHT_ONLY_REASON not in reasons
    tensors = qdq.facts["quantization"]["tensors"]
    assert tensors["fc2.bias"]["dtype"] == "int32"
    assert "/fc2/Add_output_0" in activation_qparams(qdq.model)


def test_median_levels_of_a_gaussian() -> None:
    obs = HistogramObserver()
    obs.update(np.random.default_rng(0).standard_normal(200_000))
    lo, hi = obs.range()
    want = 0.6745 / ((hi - lo) / 255)  # the median of |N(0, 1)| in int8 steps
    assert median_levels(obs, "int8") == pytest.approx(want, rel=0.02)
    assert median_levels(MinMaxObserver(), "int8") is None


# ---- int8 tables --------------------------------------------------------------------------------
def test_float_gather_table_is_int8_per_row() -> None:
    art = embedder()
    qdq = quantized(art)
    gather = next(n for n in qdq.model.graph.node if n.op_type == "Gather")
    dq = dequantized_constants(qdq.model)[gather.input[0]]
    table = initializers(qdq.model)[dq.input[0]]
    scales = initializers(qdq.model)[dq.input[1]]
    assert table.dtype == np.int8 and scales.shape == (table.shape[0],)
    assert next(a.i for a in dq.attribute if a.name == "axis") == 0
    assert np.abs(table).max(axis=1).min() == 127  # every row uses its full int8 range
    assert "/word/Gather" in {f["node"] for f in qdq.facts["quantization"]["float_nodes"]}
