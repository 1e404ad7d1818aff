"""Freeze a PT2E QAT model (torch.export, then torchao's prepare_qat_pt2e, then training) into an
exportable copy that computes what the fake-quant model computes, with its learned scales.

- a copy in eval mode (`move_exported_model_to_eval`), observers off, fake-quant on;
- every fake-quant module's `calculate_qparams` is pinned to the scale and zero point it uses
  (its buffers): torchao's fused per-channel weight fake-quant recomputes qparams from its
  running min/max that differ from the buffers by up to ~0.5 %, and convert_pt2e would take those;
- `convert_pt2e(fold_quantize=False)` folds each QAT Conv-BN into the conv (its weight
  fake-quant already acts on w·γ/σ, the folded weight) and writes quantize/dequantize pairs;
- `pt2e_rules.check` refuses what TFLite's integer kernels cannot run exactly;
- each pair becomes torch's fake-quantize op, which the ONNX exporter writes as
  QuantizeLinear/DequantizeLinear: a weight is baked to its dequantized levels (the exported
  QuantizeLinear re-rounds nothing) and its range [−127, 127] widened to [−128, 127], the only
  signed range ONNX export takes: exact, since the rules proved no level is −128.

torch 2.13 ships no PT2E quantization (it moved to torchao: `torchao.quantization.pt2e`);
`is_pt2e` recognises such a model without importing torchao.
"""

from __future__ import annotations

import copy
from typing import Any

from bridge.errors import ConfigError
from bridge.importqdq import pt2e_rules


def is_pt2e(model: Any) -> bool:
    """True for a torch.export graph (aten operator nodes) that holds fake-quant modules."""
    import torch

    graph = getattr(model, "graph", None)
    if not isinstance(model, torch.fx.GraphModule) or graph is None:
        return False
    exported = any(
        n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) for n in graph.nodes
    )
    return exported and any(_is_fake_quant(m) for m in model.modules())


def reference(model: Any) -> Any:
    """A copy of the fake-quant model as verification runs it: eval, observers off."""
    from torchao.quantization.pt2e import (
        disable_observer,
        enable_fake_quant,
        move_exported_model_to_eval,
    )

    ref = copy.deepcopy(model)
    move_exported_model_to_eval(ref)
    ref.apply(disable_observer)
    ref.apply(enable_fake_quant)
    return ref


def freeze(model: Any) -> Any:
    """The exportable copy of `model` (a plain GraphModule; the original is not touched)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    ref = reference(model)
    for mod in ref.modules():
        if _is_fake_quant(mod):
            _pin_qparams(mod)
    try:
        converted = convert_pt2e(ref, fold_quantize=False)
    except Exception as e:  # torchao raises many types
        raise ConfigError(
            f"torchao's convert_pt2e failed on the PT2E QAT model: {e}; pass the model returned "
            "by prepare_qat_pt2e (trained), not one already converted"
        ) from e
    pt2e_rules.check(converted)
    _to_fake_quant_ops(converted)
    return torch.fx.GraphModule(converted, converted.graph)


def _is_fake_quant(mod: Any) -> bool:
    kind = type(mod)
    return kind.__module__.startswith("torchao.quantization.pt2e") and any(
        base.__name__ == "FakeQuantizeBase" for base in kind.__mro__
    )


def _pin_qparams(mod: Any) -> None:
    """Make convert_pt2e read the scale and zero point the fake-quant module computes with."""
    import torch

    scale, zero_point = mod.scale.detach().clone(), mod.zero_point.detach().to(torch.int64)
    mod.calculate_qparams = lambda: (scale, zero_point)


def _to_fake_quant_ops(gm: Any) -> None:
    """Replace each quantize → dequantize pair by torch's fake-quantize op, weights baked."""
    graph = gm.graph
    for dq in list(graph.nodes):
        if dq.op != "call_function" or dq.target not in pt2e_rules.dequantize_ops():
            continue
        q = dq.args[0]
        with graph.inserting_before(dq):
            new = graph.call_function(*_fake_quant_call(gm, q))
        dq.replace_all_uses_with(new)
        graph.erase_node(dq)
        if not q.users:
            graph.erase_node(q)
    graph.lint()
    gm.recompile()


def _fake_quant_call(gm: Any, q: Any) -> tuple[Any, tuple]:
    """(fake-quantize function, args) computing what the pair `q` → dequantize computes."""
    import torch

    spec = pt2e_rules.spec(gm, q)
    if spec.constant:
        _bake(spec)
    qmin, qmax = (-128, 127) if spec.constant else (spec.qmin, spec.qmax)
    if spec.axis is None:
        args = (q.args[0], float(spec.scale), int(spec.zero_point), qmin, qmax)
        return torch.fake_quantize_per_tensor_affine, args
    zp_name = f"{q.args[2].target}_int32"
    gm.register_buffer(zp_name, spec.zero_point.to(torch.int32))
    with gm.graph.inserting_before(q):
        zp = gm.graph.get_attr(zp_name)
    args = (q.args[0], q.args[1], zp, spec.axis, qmin, qmax)
    return torch.fake_quantize_per_channel_affine, args


def _bake(spec: pt2e_rules.QSpec) -> None:
    """Replace the constant (weight) `spec` reads with its dequantized levels, in place."""
    import torch

    with torch.no_grad():
        spec.value.copy_(spec.dequantize(spec.quantize(spec.value)))
