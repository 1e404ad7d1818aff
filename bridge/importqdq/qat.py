"""convert_qat(): a torch.ao FX QAT model (prepare_qat_fx, then training) or a PT2E QAT model
(torch.export, torchao's prepare_qat_pt2e, then training; recognised by its aten graph and
torchao fake-quant modules) → a verified integer .tflite that keeps the scales and zero points
the model learned.

freeze (eval, observers off, Conv-BN folded, weights baked to their fake-quant values:
`qat_freeze`, or `pt2e` through torchao's convert_pt2e with the fake-quant modules' own qparams)
→ check the config against TFLite's integer kernels (`qat_rules`, `pt2e_rules`) → export to
QDQ ONNX and fold the constant-computed Q/DQ parameters (torch exports per-channel zero points
through Cast nodes) → the QDQ import path: kernel rules, lowering, every scale proven kept,
QDQ ORT ⇄ LiteRT in output steps → and the .tflite against the fake-quant torch model itself,
in output steps under the same rule (`fakequant_vs_tflite` in the report). Any pair beyond its
budget is a ParityError and nothing is written.

The recommended QConfig is `qat_qconfig_mapping()`: quint8 activations over [0, 255] (moving
average min/max) and per-channel symmetric qint8 weights over [−127, 127]. torch's own
`get_default_qat_qconfig_mapping("x86")` converts exactly too as long as no weight lands on
level −128 (its weight range is [−128, 127]; reduce_range only coarsens activation scales);
"qnnpack"'s per-tensor weights likewise. A QConfig TFLite cannot run (asymmetric weights, a
narrowed activation clamp, a −128 weight level) is refused with a QdqRuleError naming the
module and this mapping. torch.ao gives an `nn.Flatten` module its own output fake-quant, which
TFLite's RESHAPE cannot requantize: use `torch.flatten(x, 1)` (it shares its input's qparams).
Measured (tools/eval_accuracy.py: Fashion-MNIST FashionCNN, 2000 test images, 300 seeded QAT
steps from the float weights, tools/_qat_eval.py): float 89.20 %, PTQ int8 89.30 %, FX QAT int8
.tflite 89.60 % (fake-quant torch 89.55 %), PT2E QAT int8 .tflite 89.55 % (fake-quant 89.50 %);
the .tflite gives the fake-quant model's top-1 on 99.95 % of images in both.
PT2E: torch 2.13 ships no PT2E quantization (torch.ao.quantization.quantize_pt2e is gone); it
lives in torchao (0.18.0 measured): `XNNPACKQuantizer` with
`get_symmetric_quantization_config(is_per_channel=True, is_qat=True)` converts exactly.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bridge import outdir
from bridge.errors import ConfigError, ExportError, QdqRuleError
from bridge.importqdq import convert, pt2e, qat_freeze, qat_rules, read
from bridge.passes.fold_constants import fold_constants
from bridge.verify import parity
from bridge.verify.folder import output_scales

#: The opset of the exported QDQ graph (per-channel QuantizeLinear needs ≥ 13).
OPSET = 17
PAIR = "fakequant_vs_tflite"


def qat_qconfig_mapping() -> Any:
    """The QConfigMapping whose fake-quant TFLite runs exactly, for prepare_qat_fx."""
    import torch
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
    )

    act = FakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8
    )
    weight = FakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver,
        quant_min=-127,
        quant_max=127,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )
    return QConfigMapping().set_global(QConfig(activation=act, weight=weight))


def convert_qat(
    model: Any,
    example_inputs: Sequence[Any],
    output_dir: str | Path,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    **options: Any,
) -> Any:
    """Convert a trained FX or PT2E QAT model to a verified .tflite with its learned scales.

    Args:
        model: the GraphModule from prepare_qat_fx or torchao's prepare_qat_pt2e (trained);
            it is not modified.
        example_inputs: a tuple of example tensors (shapes of the exported model).
        output_dir: written only once every check has passed (as convert_qdq writes it).
        input_names, output_names: the .tflite's I/O names (default input_0.., output_0..).
        **options: see ImportOptions (calibration: verify on its first samples).

    Raises:
        ConfigError: `model` has no fake-quant module (not a QAT model).
        QdqRuleError: the QConfig breaks a TFLite kernel rule (names the module or node, and
            the rule).
        ParityError: LiteRT disagrees with QDQ ORT or with the fake-quant torch model.
    """
    opts = convert._options(options)
    out = Path(output_dir)
    frozen, reference, kind = _freeze(model)
    inputs = tuple(example_inputs)
    names_in = list(input_names or [f"input_{i}" for i in range(len(inputs))])
    qdq = export(frozen, inputs, names_in, output_names)
    data = qdq.SerializeToString()
    outdir.check_target(out, fingerprint=convert.fingerprint(data), overwrite=opts.overwrite)
    try:
        built = convert.build(qdq, data, f"torch {kind} QAT model {type(model).__name__}", opts)
    except QdqRuleError as e:
        raise _qat_advice(e) from e
    judge_fake_quant(built, reference)
    return convert.finish(out, built, opts)


def _freeze(model: Any) -> tuple[Any, Any, str]:
    """(exportable frozen copy, fake-quant reference, "FX" or "PT2E") of a trained QAT model."""
    if pt2e.is_pt2e(model):
        return pt2e.freeze(model), pt2e.reference(model), "PT2E"
    _require_fake_quant(model)
    frozen = qat_freeze.freeze(model)
    qat_rules.check(frozen)
    return frozen, qat_freeze.reference(model), "FX"


def _require_fake_quant(model: Any) -> None:
    """Raise ConfigError unless `model` holds a torch.ao fake-quant module (an FX QAT model)."""
    from torch.ao.quantization import FakeQuantizeBase

    modules = model.modules() if hasattr(model, "modules") else ()
    if not any(isinstance(m, FakeQuantizeBase) for m in modules):
        raise ConfigError(
            f"{type(model).__name__} is not a QAT model (it has no fake-quant module): prepare "
            "it with prepare_qat_fx(model, bridge.qat_qconfig_mapping(), example_inputs) or "
            "torchao's prepare_qat_pt2e, train it, then convert it"
        )


def _qat_advice(e: QdqRuleError) -> QdqRuleError:
    """The QDQ rule error with what to change in the torch model (same_scale only)."""
    if e.rule != "same_scale":
        return e
    return QdqRuleError(
        f"{e}; in the QAT model torch.ao gave that op its own fake-quant (e.g. nn.Flatten as a "
        "module): call the functional form (torch.flatten(x, 1)) so it shares its input's qparams",
        node=e.node,
        tensor=e.tensor,
        rule=e.rule,
        violations=e.violations,
    )


def export(
    frozen: Any, inputs: tuple, input_names: list[str], output_names: Sequence[str] | None
) -> onnx.ModelProto:
    """The frozen model as QDQ ONNX, every Q/DQ scale and zero point a stored constant."""
    import torch

    buf = io.BytesIO()
    try:
        with torch.no_grad():
            torch.onnx.export(
                frozen,
                inputs,
                buf,
                input_names=input_names,
                output_names=list(output_names) if output_names else None,
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as e:  # torch's exporter raises many types
        raise ExportError(f"torch.onnx.export of the frozen QAT model failed: {e}") from e
    model = fold_constants(onnx.load_from_string(buf.getvalue())).model
    read.require_constant_params(model, Path("<exported QAT model>"))
    return model


def judge_fake_quant(built: convert.Built, reference: Any) -> None:
    """Add `fakequant_vs_tflite` (output steps, the qdq_vs_tflite rule) to built's report."""
    contract = built.artifact.contract
    torch_samples = [_run_torch(reference, f, contract) for f in built.feeds]
    tensors = built.artifact.facts["quantization"]["tensors"]
    verdict = parity.check(
        {"qdq": torch_samples, "tflite": built.result["samples"]["tflite"]},
        mode=built.lowered.mode,
        output_names=contract.output_names,
        lsb_scales=output_scales(tensors, contract.output_names),
    )
    report = built.report
    report["parity"][PAIR] = verdict["pairs"].get("qdq_vs_tflite", {})
    failures = [f.replace("qdq_vs_tflite", PAIR, 1) for f in verdict["failures"]]
    report["failures"] = [*report["failures"], *failures]
    report["passed"] = bool(report["passed"] and verdict["passed"])
    report["qat"] = {"reference": "torch fake-quant model (eval, observers off)"}


def _run_torch(model: Any, feed: dict[str, np.ndarray], contract: Any) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        outs = model(*[torch.from_numpy(feed[n]) for n in contract.input_names])
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    return {
        n: o.detach().numpy().astype(np.float32)
        for n, o in zip(contract.output_names, outs, strict=True)
    }
