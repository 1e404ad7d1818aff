"""fp32 lowering: ONNX → float32 .tflite whose inputs and outputs are exactly the contract's.

Steps: onnx2tf with every input shape kept (`onnx2tf_driver`) → reject CUSTOM ops
(`unsupported`) → match I/O with the channel-first contract (`io_contract`), transpose back
outputs onnx2tf returned permuted (`layout`), check I/O →
for `nhwc=True`, channel-last boundary transposes (`layout`) → cancel inverse transpose pairs
(`transposes`) → drop onnx2tf's "reduced_precision_support" metadata (it tells delegates that
fp16 arithmetic is acceptable, which an fp32 model does not promise) → final I/O check and
signature. Integer modes call `lower_float` first and rewrite its result.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import onnx

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import CHANNEL_FIRST, IOContract
from bridge.errors import ConfigError, LoweringError, UnsupportedOpError
from bridge.lower import tflite_graph
from bridge.lower.floating import (
    correspondence,
    fold_bias,
    fused_outputs,
    io_contract,
    layout,
    lstm_directions,
    output_order,
    recurrent,
    recurrent_outputs,
    transposes,
    unsupported,
)
from bridge.lower.floating.onnx2tf_driver import backend_name, run_onnx2tf
from bridge.lower.modes import MODES
from bridge.runtime import tflite_io

log = logging.getLogger(__name__)

#: ONNX ops that mark a quantized (QDQ) model, which the float modes must not receive.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


@MODES.register("fp32")
def lower_fp32(artifact: OnnxArtifact, *, nhwc: bool = False) -> TfliteArtifact:
    """The "fp32" mode: a float32 .tflite (see `lower_float`)."""
    reject_qdq(artifact, "fp32")
    return lower_float(artifact, nhwc=nhwc)


def lower_float(artifact: OnnxArtifact, *, nhwc: bool = False) -> TfliteArtifact:
    """Lower `artifact` to a float32 .tflite keeping its I/O contract.

    Args:
        artifact: an ONNX artifact whose contract is channel-first (as exported).
        nhwc: make channel-first inputs/outputs (NCW, NCHW, NCDHW) channel-last.

    Returns:
        A TfliteArtifact in mode "fp32" whose contract is `artifact.contract`, or its
        `as_nhwc()` form. Facts: backend, correspondence, op_counts, transpose_count, seconds.

    Raises:
        ConfigError: the contract is already channel-last.
        UnsupportedOpError: an ONNX node has no TFLite lowering.
        LoweringError: the conversion failed or the I/O contract could not be kept.
    """
    start = time.perf_counter()
    contract = artifact.contract
    if contract.nhwc:
        raise ConfigError(
            "lowering expects the exported (channel-first) contract; pass nhwc=True instead "
            "of a contract that is already channel-last"
        )
    _check_onnx_io(artifact)
    onnx_in, split, unrolled = _prepare_recurrent(artifact.model)
    result = run_onnx2tf(onnx_in, keep_shape_inputs=contract.input_names)
    model = tflite_io.load(result.tflite)
    if stateful := recurrent.stateful_tensors(model):
        log.warning("the .tflite keeps state between invokes in %s", stateful)
    _raise_unsupported(model, artifact.model)
    located = _repair_outputs(model, result.records, artifact.model, contract)
    target, moved = _finish_io(model, contract, nhwc=nhwc)
    data = tflite_io.save(model)
    facts = {
        "backend": backend_name(),
        "correspondence": correspondence.build(located, moved, model, target),
        **op_facts(model),
        "stateless_recurrent": unrolled,
        "split_lstm_directions": split,
        "stateful_tensors": stateful,
        "seconds": round(time.perf_counter() - start, 3),
        "onnx2tf_seconds": round(result.seconds, 3),
    }
    log.info(
        "lowered to fp32 .tflite: %d bytes, %d ops, %d transposes, %.2fs",
        len(data),
        sum(facts["op_counts"].values()),
        facts["transpose_count"],
        facts["seconds"],
    )
    return TfliteArtifact(data=data, contract=target, mode="fp32", source=artifact, facts=facts)


def _prepare_recurrent(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, list[str], list[str]]:
    """The ONNX model onnx2tf is given: LSTM directions split, recurrent states made runtime
    zeros, one-step GRUs padded and skipped outputs named; also (split, unrolled)."""
    onnx_in, split = lstm_directions.split_directions(model)
    onnx_in, unrolled = recurrent.runtime_zero_states(onnx_in)
    onnx_in, padded = recurrent_outputs.pad_single_step_grus(onnx_in)
    onnx_in, named = recurrent_outputs.name_skipped_outputs(onnx_in)
    if padded or named:
        log.info("one-step GRUs run two steps: %s; outputs named: %s", padded, named)
    return onnx_in, split, unrolled


def _raise_unsupported(model: Any, onnx_model: onnx.ModelProto) -> None:
    """Raise the first UnsupportedOpError (naming the others) for custom ops onnx2tf left."""
    errors = unsupported.custom_ops(model, onnx_model)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            others = ", ".join(f"{e.node} ({e.op})" for e in errors[1:])
            first = UnsupportedOpError(
                f"{first} Also unsupported: {others}.", node=first.node, op=first.op
            )
        raise first


def _repair_outputs(
    model: Any,
    records: tuple[dict[str, Any], ...],
    onnx_model: onnx.ModelProto,
    contract: IOContract,
) -> list[correspondence.Located]:
    """Undo what onnx2tf did to the outputs (fused, dynamic, channel-last, permuted, reordered)
    and check the I/O against `contract`; returns the located ONNX → TFLite correspondence."""
    fold_bias.fold_transpose_conv_bias(model)
    restored = fused_outputs.restore_fused_outputs(model, records)
    if restored:
        log.info("restored outputs onnx2tf fused into an activation: %s", restored)
    located = correspondence.locate(records, model, onnx_model)
    io_contract.match_io(model, contract)
    if pinned := io_contract.pin_static_outputs(model, contract):
        log.info("pinned static output shapes onnx2tf left dynamic: %s", pinned)
    if fixed := layout.restore_channel_first_outputs(model, contract):
        log.info("transposed channel-last outputs back to the contract's layout: %s", fixed)
    if permuted := layout.restore_permuted_outputs(model, contract):
        log.info("transposed outputs onnx2tf returned permuted back: %s", permuted)
    output_order.resolve_hidden_layouts(model, onnx_model, contract)
    io_contract.check_io(model, contract, source=onnx_model)
    return located


def _finish_io(
    model: Any, contract: IOContract, *, nhwc: bool
) -> tuple[IOContract, transposes.Moved]:
    """Make the I/O channel-last if asked, cancel transposes and write the signature; returns
    the final contract and what cancel_transposes moved."""
    target = contract
    if nhwc:
        target = contract.as_nhwc()
        layout.to_channel_last_io(
            model, _channel_first(contract.inputs), _channel_first(contract.outputs)
        )
    _, moved = transposes.cancel_transposes(model)
    tflite_graph.drop_metadata(model, "reduced_precision_support")
    io_contract.write_signature(model, target)
    io_contract.check_io(model, target)
    return target, moved


def op_facts(model: Any) -> dict[str, Any]:
    """{"op_counts": {op: n}, "transpose_count": n} for the main subgraph."""
    counts = Counter(tflite_io.op_name(model, op) for op in model.subgraphs[0].operators)
    return {"op_counts": dict(sorted(counts.items())), "transpose_count": counts["TRANSPOSE"]}


def reject_qdq(artifact: OnnxArtifact, mode: str) -> None:
    """Raise ConfigError if the model holds quantize/dequantize nodes (a float mode's input)."""
    found = sorted({n.op_type for n in artifact.model.graph.node if n.op_type in QDQ_OPS})
    if found:
        raise ConfigError(
            f"mode {mode!r} lowers float models, but this one contains {found} nodes; "
            "lower it with mode 'int8' or 'int16x8', or export it without quantization"
        )


def _channel_first(specs: Any) -> list[str]:
    return [s.name for s in specs if s.layout == CHANNEL_FIRST.get(s.rank)]


def _check_onnx_io(artifact: OnnxArtifact) -> None:
    """The ONNX graph's inputs and outputs must be the contract's (order may differ)."""
    graph = artifact.model.graph
    inits = {i.name for i in graph.initializer}
    onnx_in = [i.name for i in graph.input if i.name not in inits]
    onnx_out = [o.name for o in graph.output]
    c: IOContract = artifact.contract
    if set(onnx_in) != set(c.input_names) or set(onnx_out) != set(c.output_names):
        raise LoweringError(
            f"the ONNX model's inputs {onnx_in} / outputs {onnx_out} are not the contract's "
            f"{c.input_names} / {c.output_names}; a stage renamed a graph input or output"
        )
