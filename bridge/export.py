"""Stage 1: torch.nn.Module → ONNX, with named inputs and outputs and the I/O contract."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from bridge import trace_hazards
from bridge.artifact import OnnxArtifact
from bridge.contract import IOContract, TensorSpec, guess_layout
from bridge.errors import ConfigError, ExportError, ModelLoadError, ShapeError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
#: The ONNX opsets that convert end to end here (torch 2.13's TorchScript exporter, ONNX Runtime
#: and the lowering). Below 9, ORT has no kernels for some old op versions (Relu-1, Gemm-6) and
#: torch cannot export Upsample or LSTM; torch.onnx.export stops at 23.
MIN_OPSET, MAX_OPSET = 9, 23

#: Protobuf cannot serialise a message of 2 GiB or more, so a bigger ONNX model needs external
#: data files, which bridge does not handle (and a TFLite flatbuffer has the same 2 GiB limit).
#: Models whose weights pass this size (2 GiB less room for the graph) are refused up front.
MAX_MODEL_BYTES = 2**31 - 2**26

#: With dynamic_batch=True the model must also run on the example inputs repeated this often.
BATCH_REPEAT = 4


@dataclass(frozen=True)
class ExportConfig:
    """How to export. Names default to input_0.. / output_0..; layouts are guessed by rank."""

    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = False
    input_layouts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_opset(self.opset)


def check_opset(opset: object) -> None:
    """ConfigError unless `opset` is an ONNX opset that converts end to end here."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"opset {opset!r} is not supported: bridge converts with ONNX opset {MIN_OPSET} to "
            f"{MAX_OPSET} (older opsets lack kernels in ONNX Runtime; torch exports at most "
            f"{MAX_OPSET}); leave the default {DEFAULT_OPSET} unless you need another"
        )


def export(model: object, example_inputs: Sequence[object], config: ExportConfig) -> OnnxArtifact:
    """Export `model` to ONNX and describe its inputs and outputs in an IOContract.

    Raises:
        ShapeError: the example inputs are not tensors or the model rejects them.
        ExportError: torch.onnx.export failed; the message names the innermost module.
    """
    import torch

    module = _as_module(model)
    inputs = _check_inputs(example_inputs)
    _check_size(_weight_bytes(module), "weights (parameters and buffers)")
    with torch.inference_mode(), _module_trail(module) as trail:
        try:
            outputs = _flatten(module(*inputs))
        except Exception as e:
            where = trail[-1] if trail else "the model"
            raise ShapeError(
                f"the model fails on the example inputs in {where}: {e}. Check the shapes and "
                f"dtypes of example_inputs ({_describe(inputs)})"
            ) from e
    _check_data_hazards(module, inputs)
    in_names = _names(config.input_names, len(inputs), "input")
    out_names = _names(config.output_names, len(outputs), "output")
    if config.dynamic_batch:
        _check_batch(module, inputs, outputs, out_names)
    contract = _contract(inputs, outputs, in_names, out_names, config)
    proto = _torch_export(module, inputs, in_names, out_names, config)
    _check_size(proto.ByteSize(), "exported ONNX model")
    _check_graph_inputs(proto, in_names)
    _restore_output_names(proto, out_names)
    log.info("exported %d nodes, opset %d", len(proto.graph.node), config.opset)
    return OnnxArtifact(
        proto,
        contract,
        stage="export",
        facts={
            "export": {
                "opset": config.opset,
                "nodes": len(proto.graph.node),
                "dynamic_batch": config.dynamic_batch,
            }
        },
    )


def _as_module(model: object) -> object:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_no_script_parts(model)
    for kind, named in (("parameter", model.named_parameters), ("buffer", model.named_buffers)):
        for name, t in named():
            if t.device.type == "meta":
                raise ModelLoadError(
                    f"{kind} {name!r} is on the meta device (a shape without values): load the "
                    "weights before converting, e.g. model.to_empty(device='cpu') then "
                    "model.load_state_dict(...), or load_state_dict(..., assign=True)"
                )
            _check_cpu(t, f"the model's {kind} {name!r}")
    return model.eval()


def _check_no_script_parts(model: object) -> None:
    """ExportError for a plain module holding a TorchScript submodule: torch cannot trace it."""
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        return  # a ScriptModule as a whole exports as TorchScript
    for name, sub in model.named_modules():  # type: ignore[attr-defined]
        if isinstance(sub, torch.jit.ScriptModule):
            raise ExportError(
                f"submodule {name!r} is a TorchScript module inside a plain nn.Module, which "
                "torch.onnx.export cannot trace; pass the unscripted module, or script the "
                "whole model (torch.jit.script(model)) and convert that"
            )


def _check_cpu(t: object, what: str) -> None:
    """ConfigError unless `t` is on the CPU, where bridge traces and verifies."""
    device = t.device  # type: ignore[attr-defined]
    if device.type != "cpu":
        raise ConfigError(
            f"{what} is on {device}; bridge traces and verifies on the CPU: move the model and "
            "the example inputs there first (model.cpu(), x.cpu())"
        )


def _check_batch(module: object, inputs: tuple, outputs: list, out_names: list[str]) -> None:
    """ConfigError unless the model runs at BATCH_REPEAT times the batch and its outputs
    follow the batch (a model that hard-codes its batch cannot have a dynamic one)."""
    import torch

    bigger = tuple(torch.cat([t] * BATCH_REPEAT) if t.dim() else t for t in inputs)
    fix = (
        "Convert with a fixed batch (dynamic_batch=False), or remove batch-size assumptions "
        "from the model (x.view(1, -1) → x.flatten(1))"
    )
    with torch.inference_mode(), _module_trail(module) as trail:
        try:
            got = _flatten(module(*bigger))  # type: ignore[operator]
        except Exception as e:
            where = trail[-1] if trail else "the model"
            raise ConfigError(
                f"dynamic_batch=True, but the model fails at batch {len(bigger[0])} in {where}: "
                f"{str(e).splitlines()[0] if str(e) else e!r}. {fix}"
            ) from e
    for name, small, big in zip(out_names, outputs, got, strict=True):
        if small.dim() and big.shape[0] != small.shape[0] * BATCH_REPEAT:
            raise ConfigError(
                f"dynamic_batch=True, but output {name!r} has shape {tuple(big.shape)} at input "
                f"batch {len(bigger[0])} (shape {tuple(small.shape)} at the example's batch): "
                f"its first axis does not follow the batch. {fix}"
            )


def _check_graph_inputs(proto: onnx.ModelProto, in_names: list[str]) -> None:
    """torch.onnx.export drops inputs that no output depends on; the contract would lie."""
    kept = {i.name for i in proto.graph.input}
    dropped = [(k, n) for k, n in enumerate(in_names) if n not in kept]
    if dropped:
        listed = ", ".join(f"{n!r} (example_inputs[{k}])" for k, n in dropped)
        raise ExportError(
            f"input {listed} does not reach any output, so torch.onnx.export dropped it; "
            "use it in forward() or remove it from the model's inputs"
        )


def _restore_output_names(proto: onnx.ModelProto, out_names: list[str]) -> None:
    """Give back output names torch lost: an output folded to a constant (`self.prior * 2`)
    keeps the folded tensor's name ('16'); an Identity writes it under its own name again."""
    for out, name in zip(proto.graph.output, out_names, strict=True):
        if out.name != name:
            proto.graph.node.append(onnx.helper.make_node("Identity", [out.name], [name]))
            out.name = name


def _weight_bytes(module: object) -> int:
    tensors = [*module.parameters(), *module.buffers()]  # type: ignore[attr-defined]
    return sum(t.numel() * t.element_size() for t in tensors)


def _check_size(size: int, what: str) -> None:
    if size > MAX_MODEL_BYTES:
        raise ExportError(
            f"the model's {what} take {size / 2**30:.2f} GiB; bridge converts models up to "
            f"{MAX_MODEL_BYTES / 2**30:.2f} GiB (ONNX protobuf and TFLite flatbuffers stop at "
            "2 GiB and external-data ONNX is not supported). Convert the model in parts (for "
            "example encoder and decoder separately) or make it smaller"
        )


def _check_inputs(example_inputs: Sequence[object]) -> tuple:
    import torch

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    inputs = tuple(example_inputs)
    if not inputs:
        raise ShapeError("example_inputs is empty; pass a tuple with one tensor per model input")
    for i, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor):
            raise ShapeError(f"example_inputs[{i}] is a {type(t).__name__}, not a torch.Tensor")
        if t.device.type == "meta":
            raise ShapeError(
                f"example_inputs[{i}] is on the meta device, which holds no values, so nothing "
                "can be traced or verified; pass real CPU tensors (for example torch.randn(...))"
            )
        _check_cpu(t, f"example_inputs[{i}]")
        if t.numel() == 0:
            raise ShapeError(
                f"example_inputs[{i}] has shape {tuple(t.shape)}, with no elements; give an "
                "example of the real input shape (batch 1 or more, every dimension ≥ 1)"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ShapeError(
                f"example_inputs[{i}] holds NaN or Inf; give finite example values, as the "
                "conversion is verified on them"
            )
    return inputs


def _describe(inputs: Sequence) -> str:
    return ", ".join(f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in inputs)


def _names(given: Sequence[str] | None, n: int, kind: str) -> list[str]:
    if given is None:
        return [f"{kind}_{i}" for i in range(n)]
    names = list(given)
    if len(names) != n:
        raise ConfigError(
            f"{len(names)} {kind} names given ({names}) but the model has {n} {kind}s"
        )
    if len(set(names)) != n:
        raise ConfigError(f"{kind} names must be unique: {names}")
    return names


def _flatten(out: object) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in _flatten(v)]
    raise ExportError(f"the model returned a {type(out).__name__}; return tensors, tuples or dicts")


def _contract(inputs, outputs, in_names, out_names, config: ExportConfig) -> IOContract:
    layouts = list(config.input_layouts or [guess_layout(t.shape) for t in inputs])
    if len(layouts) != len(inputs):
        raise ConfigError(f"{len(layouts)} input layouts given for {len(inputs)} inputs")

    def spec(name: str, t: object, layout: str) -> TensorSpec:
        shape: tuple[int | None, ...] = tuple(int(d) for d in t.shape)
        if config.dynamic_batch and shape:
            shape = (None, *shape[1:])
        dtype = str(np.dtype(str(t.dtype).removeprefix("torch.")))
        return TensorSpec(name, shape, dtype, layout)

    ins = tuple(spec(n, t, lay) for n, t, lay in zip(in_names, inputs, layouts, strict=True))
    outs = tuple(spec(n, t, guess_layout(t.shape)) for n, t in zip(out_names, outputs, strict=True))
    return IOContract(ins, outs)


def _torch_export(module, inputs, in_names, out_names, config: ExportConfig) -> onnx.ModelProto:
    import torch

    dynamic_axes = None
    if config.dynamic_batch:
        dynamic_axes = {n: {0: "batch"} for n in [*in_names, *out_names]}
    buf = io.BytesIO()
    with _module_trail(module) as trail, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                module,
                inputs,
                buf,
                input_names=in_names,
                output_names=out_names,
                opset_version=config.opset,
                dynamo=False,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        except Exception as e:
            where = f" in module {trail[-1]}" if trail else _locate(module, inputs, str(e))
            raise ExportError(
                f"torch.onnx.export failed{where}: {str(e).splitlines()[0] if str(e) else e!r}. "
                "Rewrite that module with ONNX-exportable ops, or wrap it so it is traced in "
                "eval mode with static shapes"
            ) from e
    _check_frozen_shapes(module, inputs, caught, config)
    try:
        return onnx.load_from_string(buf.getvalue())
    except Exception as e:
        raise ExportError(f"torch produced an unreadable ONNX model: {e}") from e


def _check_data_hazards(module: object, inputs: tuple) -> None:
    """ExportError if forward() turns a tensor computed from the inputs into a Python value."""
    with _module_trail(module) as trail:
        try:
            hazards = trace_hazards.data_hazards(module, inputs, trail)
        except Exception as e:  # the model ran without the check: never block on the check
            log.warning("the tracing-hazard check could not run (%s); continuing without it", e)
            return
    if hazards:
        raise trace_hazards.data_error(hazards)


def _check_frozen_shapes(module, inputs: tuple, caught: list, config: ExportConfig) -> None:
    """ExportError if, with a dynamic batch, a Python value in the user's code follows it.

    Only user lines torch warned about (TracerWarnings outside torch) are suspects; they are
    harmless at a fixed shape. Retraced at batch 1 and BATCH_REPEAT × the example's, a value
    that changes is frozen wrongly by the export.
    """
    import torch

    suspects = trace_hazards.shape_hazards(caught)
    for h in suspects:
        log.debug("the trace freezes %s at %s", h.what, h.where)
    if not (suspects and config.dynamic_batch):
        return
    batch = len(inputs[0]) if inputs[0].dim() else 1
    others = [tuple(torch.cat([t] * BATCH_REPEAT) if t.dim() else t for t in inputs)]
    if batch > 1:
        others.append(tuple(t[:1] if t.dim() else t for t in inputs))
    try:
        with torch.inference_mode():
            found = trace_hazards.batch_hazards(module, inputs, others, suspects)
    except Exception as e:  # export itself worked; the retrace is only a check
        log.warning("could not retrace at other batch sizes to check %s: %s", suspects[0].where, e)
        return
    if found:
        raise trace_hazards.shape_error(found, batch)


_ATEN_OP = re.compile(r"'(aten::\w+)'")
_SCOPE = re.compile(r"scope: (\S+)")


def _locate(module: object, inputs: tuple, message: str) -> str:
    """' in module <path> (<Type>)' for an export failure the trail cannot place, else "".

    torch names an unsupported operator ('aten::fft_rfft') or the scope of the value that
    failed; a trace with module names as scopes finds the module that calls that operator.
    """
    modules = dict(module.named_modules())  # type: ignore[attr-defined]
    found = _SCOPE.search(message)
    path = found.group(1).rsplit("::", 1)[-1] if found else None
    op = _ATEN_OP.search(message)
    if op is not None:
        path = _trace_scope(module, inputs, op.group(1), modules)
    if path is None or path not in modules:
        return ""
    return f" in module {path or '<root>'} ({type(modules[path]).__name__})"


def _trace_scope(module: object, inputs: tuple, kind: str, modules: dict) -> str | None:
    """The qualified name of the module whose forward calls the traced operator `kind`."""
    import torch

    trace = torch.jit._trace
    saved = trace._trace_module_map
    trace._trace_module_map = {m: name or "<root>" for name, m in modules.items()}
    try:
        graph, _ = torch.jit._get_trace_graph(module, inputs)
    except Exception:  # a best-effort hint: the export error itself is what the user sees
        return None
    finally:
        trace._trace_module_map = saved
    for node in graph.nodes():
        if node.kind() == kind:
            name = node.scopeName().rsplit("/", 1)[-1]
            return "" if name == "<root>" else name
    return None


@contextlib.contextmanager
def _module_trail(module: object) -> Iterator[list[str]]:
    """Record the qualified names of modules entered, so a failure can name where it happened.

    TorchScript modules take no hooks (and run compiled code), so they are left out.
    """
    import torch

    trail: list[str] = []
    handles = []
    for name, sub in module.named_modules():  # type: ignore[attr-defined]
        if isinstance(sub, torch.jit.ScriptModule):
            continue
        label = f"{name or '<root>'} ({type(sub).__name__})"

        def hook(_mod, _args, _label=label):
            trail.append(_label)

        def done(_mod, _args, _out, _label=label):
            if trail and trail[-1] == _label:
                trail.pop()

        handles.append(sub.register_forward_pre_hook(hook))
        handles.append(sub.register_forward_hook(done))
    try:
        yield trail
    finally:
        for h in handles:
            h.remove()
