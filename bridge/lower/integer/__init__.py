"""QDQ ONNX → integer TFLite with the QDQ model's own scales ("int8" and "int16x8" modes).

The route: strip the Q/DQ nodes (`qdq`), lower the float graph with onnx2tf
(`bridge.lower.floating.lower_float`), find each TFLite tensor's ONNX twin by value (`match`),
fold ReLUs into their producers (`fuse`), give every activation its QDQ scale and decide which
operators run integer (`assign`), then write int8/int16 tensors, int8 per-channel weights,
int32/int64 biases and the boundary QUANTIZE/DEQUANTIZE (`rewrite`). Operators without an
integer kernel stay float32 between a DEQUANTIZE and a QUANTIZE and are listed in
`facts["float_ops"]` with the reason; the constants of theirs that the QDQ model stores int8
(weight-only layers, embedding tables) stay int8 behind a DEQUANTIZE (`weight_only`).
The "dynamic" mode (int8 weights only, `dynamic`) reuses these modules.

int16x8 is the same path with int16 activations (symmetric, zero point 0), int8 weights and
int64 biases, as TFLite's 16x8 kernels expect.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, NamedTuple

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract
from bridge.errors import ConfigError, LoweringError
from bridge.lower.floating import lower_float
from bridge.lower.integer import assign, fuse, linear, match, pad, recurrent
from bridge.lower.integer.constants import ConstantWriter
from bridge.lower.integer.qdq import QdqModel, read_qdq
from bridge.lower.integer.rewrite import Rewrite, materialize
from bridge.lower.integer.weight_only import store_int8_weights
from bridge.lower.modes import MODES
from bridge.lower.tflite_graph import Graph
from bridge.modes import integer_mode
from bridge.runtime import sandbox, tflite_io

log = logging.getLogger(__name__)


@MODES.register("int8")
def lower_int8(
    qdq_artifact: OnnxArtifact, *, nhwc: bool = False, io_dtype: str | None = None
) -> TfliteArtifact:
    """Lower a QDQ ONNX model with int8 activations to an int8 TFLite model.

    Args:
        qdq_artifact: the quantizer's QDQ model (int8 activations, int8 weights).
        nhwc: channel-last image inputs and outputs.
        io_dtype: "float32" (QUANTIZE/DEQUANTIZE inside the model), "int8" or "uint8";
            None takes the quantizer's choice (facts["quantization"]["io_dtype"]), else float32.

    Raises:
        ConfigError: unknown `io_dtype`.
        LoweringError: the QDQ scales break a TFLite kernel rule, or LiteRT rejects the result.
    """
    return lower_integer(qdq_artifact, nhwc=nhwc, io_dtype=io_dtype, act_dtype="int8")


@MODES.register("int16x8")
def lower_int16x8(
    qdq_artifact: OnnxArtifact, *, nhwc: bool = False, io_dtype: str | None = None
) -> TfliteArtifact:
    """Lower a QDQ ONNX model with int16 activations to a 16x8 TFLite model (see lower_int8)."""
    return lower_integer(qdq_artifact, nhwc=nhwc, io_dtype=io_dtype, act_dtype="int16")


def lower_integer(
    qdq_artifact: OnnxArtifact, *, nhwc: bool, io_dtype: str | None, act_dtype: str
) -> TfliteArtifact:
    """The shared path of lower_int8 and lower_int16x8."""
    if io_dtype is None:
        io_dtype = qdq_artifact.facts.get("quantization", {}).get("io_dtype", "float32")
    _check_io(io_dtype, act_dtype)
    qdq = read_qdq(qdq_artifact.model)
    float_artifact = qdq_artifact.evolve(model=qdq.float_model)
    float_tflite = lower_float(float_artifact, nhwc=nhwc)
    return integerize(
        float_tflite, qdq_artifact, act_dtype=act_dtype, io_dtype=str(io_dtype), qdq=qdq
    )


def _check_io(io_dtype: str, act_dtype: str) -> None:
    mode = integer_mode(act_dtype)  # its io_dtypes: "float32" keeps QUANTIZE/DEQUANTIZE inside
    if io_dtype not in mode.io_dtypes:
        raise ConfigError(
            f"io_dtype {io_dtype!r} is not available for {mode.name}; choose one of "
            f"{', '.join(mode.io_dtypes)}"
        )


def integerize(
    float_tflite: TfliteArtifact,
    qdq_artifact: OnnxArtifact,
    *,
    act_dtype: str,
    io_dtype: str = "float32",
    qdq: QdqModel | None = None,
) -> TfliteArtifact:
    """Rewrite the float lowering of a QDQ model's float graph into an integer TFLite model.

    Args:
        float_tflite: the float TFLite of `read_qdq(qdq_artifact.model).float_model`.
        qdq_artifact: the QDQ model it came from (the scales are read from its Q/DQ nodes).
        act_dtype: "int8" or "int16".
        io_dtype: see `lower_int8`.
        qdq: `read_qdq(qdq_artifact.model)`, if already computed.
    """
    _check_io(io_dtype, act_dtype)
    qdq = qdq or read_qdq(qdq_artifact.model)
    model = tflite_io.load(float_tflite.data)
    graph = Graph(model)
    matches = _match(graph, float_tflite, qdq_artifact, qdq)
    steps = _rewrite(graph, matches, qdq, act_dtype=act_dtype, io_dtype=io_dtype)
    graph.commit()
    data = tflite_io.save(model)
    _load_check(data)
    facts = _facts(steps, graph, matches, qdq, float_tflite.facts)
    log.info(
        "%s: %d integer ops, %d float ops, %d ReLUs fused, %.2f MB",
        integer_mode(act_dtype).name,
        steps.quantized,
        len(steps.plan.float_ops),
        steps.fused,
        len(data) / 1e6,
    )
    contract = _io_contract(float_tflite.contract, graph)
    return TfliteArtifact(
        data=data,
        contract=contract,
        mode=integer_mode(act_dtype).name,
        source=qdq_artifact,
        facts=facts,
    )


def _match(
    graph: Graph, float_tflite: TfliteArtifact, qdq_artifact: OnnxArtifact, qdq: QdqModel
) -> dict[int, list[str]]:
    """Each TFLite tensor's ONNX twins, found by value (float recurrent interiors: none)."""
    onnx_vals, tfl_vals = match.float_values(
        qdq.float_model,
        float_tflite.data,
        contract=qdq_artifact.contract,
        tflite_contract=float_tflite.contract,
    )
    matches = match.match_activations(tfl_vals, onnx_vals)
    # a float recurrent layer's unrolled steps match slices of Y by value but stay float32
    matches.update({t: [] for t in recurrent.float_interior(graph, qdq_artifact.model)})
    return matches


class _Steps(NamedTuple):
    """What the rewrite of the float graph did, for the facts and the log."""

    act_dtype: str
    io_dtype: str
    plan: assign.Plan
    rewrite: Rewrite
    quantized: int
    fused: int
    linearized: int
    folded: int
    pads: int
    weight_only: list[dict[str, Any]]
    twins: list[tuple[Any, str]]  # (integer TFLite tensor, QDQ tensor whose scale it carries)


def _rewrite(
    graph: Graph, matches: dict[int, list[str]], qdq: QdqModel, *, act_dtype: str, io_dtype: str
) -> _Steps:
    """Linearize, fuse, assign qparams, then write the integer tensors into `graph`."""
    linearized = linear.linearize(graph, matches, qdq)
    fused = fuse.fuse_activations(graph)
    order = {o: i for i, n in enumerate(qdq.float_model.graph.node) for o in n.output}
    plan = assign.assign(graph, matches, qdq, act_dtype=act_dtype, onnx_order=order)
    assign.check(graph, plan, act_dtype=act_dtype)
    folded = fuse.fold_transposes_into_reductions(graph, plan.integer_ops)
    quantized = sum(id(op) in plan.integer_ops for op in graph.ops)
    rewrite = materialize(graph, plan, qdq, act_dtype=act_dtype, io_dtype=io_dtype)
    pads = pad.plain_pads(graph, plan.integer_ops) if act_dtype == "int8" else 0
    weight_only = store_int8_weights(graph, plan, ConstantWriter(graph, qdq, act_dtype=act_dtype))
    twins = [
        (graph.tensor(rewrite.integer_twin[t]), src)
        for t, src in plan.source.items()
        if t in rewrite.integer_twin
    ]
    return _Steps(
        act_dtype,
        io_dtype,
        plan,
        rewrite,
        quantized,
        fused,
        linearized,
        folded,
        pads,
        weight_only,
        twins,
    )


def _facts(
    steps: _Steps,
    graph: Graph,
    matches: dict[int, list[str]],
    qdq: QdqModel,
    float_facts: dict[str, Any],
) -> dict[str, Any]:
    """The integer lowering's facts, read once `graph` is committed."""
    alive = {id(t) for t in graph.sg.tensors}
    matched = {n for names in matches.values() for n in names}
    return {
        "float_ops": steps.plan.float_ops,
        "quantized_ops": steps.quantized,
        "qparams_source": "qdq",
        "activation_dtype": steps.act_dtype,
        "io_dtype": steps.io_dtype,
        "fused_activations": steps.fused,
        "matmuls_as_fully_connected": steps.linearized,
        "transposes_folded": steps.folded,
        "padv2_as_pad": steps.pads,
        "conversions": steps.rewrite.conversions,
        "computed_qparams": steps.rewrite.computed_qparams,
        "rescaled_weights": steps.rewrite.rescaled_weights,
        "int8_stored_float_weights": steps.weight_only,
        # TFLite integer tensor → the QDQ tensor whose scale it carries.
        "tensor_map": {
            tflite_io.tensor_name(t): qdq.qdq_name(s) for t, s in steps.twins if id(t) in alive
        },
        # Quantized QDQ tensors no TFLite tensor holds (e.g. inside an op onnx2tf fused).
        "unmatched_onnx": sorted(qdq.qdq_name(n) for n in set(qdq.activations) - matched),
        "float_lowering": {k: v for k, v in float_facts.items() if _jsonable(v)},
        "stateful_tensors": float_facts.get("stateful_tensors", []),
    }


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | dict | type(None))


def _io_contract(contract: IOContract, graph: Graph) -> IOContract:
    """The float lowering's contract with each I/O dtype set to what the tensor now holds."""
    dtypes = {
        graph.name(i): tflite_io.TENSOR_DTYPES[graph.tensor(i).type].name for i in graph.inputs
    }
    dtypes |= {
        graph.name(i): tflite_io.TENSOR_DTYPES[graph.tensor(i).type].name for i in graph.outputs
    }
    return replace(
        contract,
        inputs=tuple(replace(s, dtype=dtypes.get(s.name, s.dtype)) for s in contract.inputs),
        outputs=tuple(replace(s, dtype=dtypes.get(s.name, s.dtype)) for s in contract.outputs),
    )


def _load_check(data: bytes) -> None:
    """Raise LoweringError unless LiteRT can load the model and prepare every kernel."""
    from ai_edge_litert.interpreter import Interpreter

    sandbox.probe(data, sandbox.Options(num_threads=1))  # a native crash: RuntimeCrashError
    try:
        Interpreter(model_content=data, num_threads=1).allocate_tensors()
    except (RuntimeError, ValueError) as e:
        raise LoweringError(
            f"LiteRT rejects the integer model: {e}; a kernel does not accept its tensor types "
            "or scales (report this as a lowering bug with the QDQ model)"
        ) from e
