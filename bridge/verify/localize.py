"""The first diverging layer: every intermediate tensor compared across torch, ORT and LiteRT.

Runtimes form a chain, and each link blames one stage when it breaks:

    torch ──export──▶ ORT (float ONNX) ──quantization──▶ "qdq" ──conversion──▶ LiteRT

"qdq" is ORT on the model the .tflite must reproduce: the QDQ ONNX (int8, int16x8, dynamic) or
the float ONNX with float16-rounded weights (fp16). fp32 has no middle link: ORT ⇄ LiteRT is
the conversion. In the other modes ORT ⇄ LiteRT is the end-to-end link, judged at the floor the
parity gate applies to the outputs: it catches quantization and conversion errors that each meet
their own floor but add up below it. A conversion error means the .tflite disagrees with the
ONNX model it was lowered from; a quantization error means the quantized ONNX already disagrees
with the float one while the .tflite agrees with it.

Rows follow the float ONNX graph order; the first row where a link misses its floor names the
first diverging layer. The links and their floors are each mode's (`bridge.modes`). Metrics are
accumulated over the stored verification samples one sample at a time, so memory holds one
sample's tensors per runtime.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract
from bridge.errors import ConfigError
from bridge.lower.floating.fp16 import FP16_MAX, MIN_ELEMENTS
from bridge.modes import MODES, Link
from bridge.outdir import FILES
from bridge.quantize import QuantConfig, quantize
from bridge.runtime import tolerances
from bridge.runtime.capture import OrtTensors, TfliteTensors, float_tensors
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import TorchRunner
from bridge.runtime.torch_layers import TorchLayers
from bridge.verify.divergence import first_divergence
from bridge.verify.folder import _load_onnx, _load_tflite, load_folder
from bridge.verify.layer_stats import LayerStats
from bridge.verify.unscale import Unscaler

log = logging.getLogger(__name__)


#: What each runtime is called in tables and plots.
LABELS = {"torch": "torch", "ort": "ORT", "qdq": "QDQ ORT", "tflite": "LiteRT"}
FP16_LABEL = "fp16-weight ORT"


@dataclass(frozen=True)
class LayerInputs:
    """Everything the per-layer comparison needs, in memory.

    Attributes:
        mode: the conversion mode.
        onnx: the float ONNX model the rows follow (model.opt.onnx).
        contract: its channel-first I/O contract.
        tflite: the .tflite bytes or path.
        tflite_contract: the .tflite's own I/O contract.
        correspondence: ONNX tensor → {"tflite", "channel_last", "fused"} from the lowering.
        qdq: the QDQ ONNX model (int8, int16x8, dynamic).
        quant_tensors: the quantizer's facts per tensor (scale, zero point, range, dq name).
        module: the torch module, for per-layer torch values (optional).
        exported: the ONNX model as exported, whose node names map torch modules to tensors.
        model_name: the zoo name, for per-model tolerance overrides.
        equalization: tensor → per-channel factors t_c of cross-layer equalization (the QDQ
            model and the .tflite hold x_c / t_c; see `bridge.verify.unscale`).
    """

    mode: str
    onnx: onnx.ModelProto
    contract: IOContract
    tflite: bytes | Path
    tflite_contract: IOContract
    correspondence: Mapping[str, Any] = field(default_factory=dict)
    qdq: onnx.ModelProto | None = None
    quant_tensors: Mapping[str, Any] = field(default_factory=dict)
    module: Any = None
    exported: onnx.ModelProto | None = None
    model_name: str | None = None
    equalization: Mapping[str, Any] = field(default_factory=dict)


def localize(inputs: LayerInputs, feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """Compare every intermediate tensor across the runtimes and find the first divergence.

    Returns:
        {"mode", "links": [{"pair", "ref", "cand", "kind", "floor", "accumulates"}], "labels",
        "samples", "torch_modules" (how torch modules were bound), "tflite_state" (variable
        tensors, if any),
        "rows": [{"index", "tensor", "node", "op", "shape", "range", "metrics": {pair: {...}}}],
        "first_divergence": {...} or None, "seconds"}. JSON-serialisable.
    """
    if inputs.mode not in MODES:
        raise ConfigError(
            f"no per-layer links for mode {inputs.mode!r}; choose one of {MODES.names()}"
        )
    if not feeds:
        raise ConfigError("per-layer comparison needs at least one verification sample")
    start = time.perf_counter()
    tensors = float_tensors(inputs.onnx)
    runtimes = _runtimes(inputs, [t for t, _ in tensors])
    links = [
        link
        for link in MODES.get(inputs.mode).links
        if link.ref in runtimes and link.cand in runtimes
    ]
    stats = LayerStats()
    unscaler = Unscaler.from_facts(inputs.equalization)
    for feed in feeds:
        values, scales = _run(runtimes, feed)
        stats.add(unscaler.runtimes(values), scales, links, inputs.quant_tensors, unscaler)
    rows = stats.rows(tensors, links)
    layers: dict[str, Any] = {
        "mode": inputs.mode,
        "links": _link_rows(inputs, links),
        "labels": _labels(inputs.mode, runtimes),
        "samples": len(feeds),
        "rows": rows,
    }
    if "torch" in runtimes:
        layers["torch_modules"] = runtimes["torch"].summary()
    state = runtimes["tflite"].state
    if state:
        layers["tflite_state"] = state
    layers["first_divergence"] = first_divergence(layers, inputs.onnx, inputs.quant_tensors)
    layers["seconds"] = round(time.perf_counter() - start, 3)
    log.info(
        "per-layer comparison: %d tensors, %d links, %.2fs",
        len(rows),
        len(links),
        layers["seconds"],
    )
    return layers


def _link_rows(inputs: LayerInputs, links: Sequence[Link]) -> list[dict[str, Any]]:
    """The report's "links": each compared runtime pair with its floor."""
    return [
        {
            "pair": k.pair,
            "ref": k.ref,
            "cand": k.cand,
            "kind": k.kind,
            "floor": _floor(inputs, k),
            "accumulates": k.accumulates,
        }
        for k in links
    ]


def _labels(mode: str, runtimes: Mapping[str, Any]) -> dict[str, str]:
    """Display names of the runtimes that ran (fp16's "qdq" is its float16 model)."""
    labels = {k: LABELS[k] for k in ("torch", "ort", "qdq", "tflite") if k in runtimes}
    if mode == "fp16" and "qdq" in labels:
        labels["qdq"] = FP16_LABEL
    return labels


def _run(
    runtimes: Mapping[str, Any], feed: Mapping[str, np.ndarray]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float | None]]:
    """One sample through every runtime: ({runtime: {tensor: value}}, {tensor: .tflite scale})."""
    values = {"ort": runtimes["ort"].run(feed)}
    scales: dict[str, float | None] = {}
    for key, runtime in runtimes.items():
        if key == "tflite":  # QDQ values, the closest to the .tflite, decide layouts shapes hide
            got = runtime.run(feed, {**values["ort"], **values.get("qdq", {})})
            values[key] = {t: tv.value for t, tv in got.items()}
            scales = {t: tv.scale for t, tv in got.items()}
        elif key == "torch":
            values[key] = runtime.run(feed, values["ort"])
        elif key != "ort":
            values[key] = runtime.run(feed)
    return values, scales


def _runtimes(inputs: LayerInputs, names: list[str]) -> dict[str, Any]:
    runtimes: dict[str, Any] = {
        "ort": OrtTensors(inputs.onnx, inputs.contract, {t: t for t in names}),
    }
    if inputs.module is not None and inputs.exported is not None:
        runtimes["torch"] = TorchLayers(
            inputs.module, inputs.contract, inputs.exported, floor_db=_export_floor(inputs)
        )
    if inputs.mode == "fp16":
        runtimes["qdq"] = OrtTensors(
            fp16_weights(inputs.onnx), inputs.contract, {t: t for t in names}
        )
    elif inputs.qdq is not None:
        runtimes["qdq"] = OrtTensors(
            inputs.qdq, inputs.contract, qdq_names(inputs.qdq, inputs.quant_tensors, names)
        )
    runtimes["tflite"] = TfliteTensors(
        inputs.tflite,
        inputs.tflite_contract,
        user_contract=inputs.contract,
        correspondence=inputs.correspondence,
        names={t: node.name for t, node in float_tensors(inputs.onnx)},
    )
    return runtimes


def qdq_names(qdq: onnx.ModelProto, quant: Mapping[str, Any], names: list[str]) -> dict[str, str]:
    """Float ONNX tensor → where the QDQ model holds its (fake-quantized) value."""
    have = {o for n in qdq.graph.node for o in n.output}
    out = {}
    for t in names:
        fact = quant.get(t) or {}
        read = fact.get("dq") if fact.get("kind") == "activation" else None
        read = read if read in have else (t if t in have else None)
        if read:
            out[t] = read
    return out


def fp16_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose float32 initializers are rounded through float16, as the fp16
    lowering stores them (same size threshold, constants beyond float16's range kept)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        if w.size < MIN_ELEMENTS or (w.size and float(np.abs(w).max()) > FP16_MAX):
            continue
        init.CopyFrom(numpy_helper.from_array(w.astype(np.float16).astype(np.float32), init.name))
    return copy


def _export_floor(inputs: LayerInputs) -> float:
    return MODES.get(inputs.mode).floor("torch_vs_ort")


def _floor(inputs: LayerInputs, link: Link) -> float | None:
    if link.floor is None:
        return None
    mode, pair = link.floor
    return MODES.get(mode or inputs.mode).floor(pair)


def localize_dir(
    path: str | Path, *, module: Any = None, samples: int | None = None
) -> dict[str, Any]:
    """The per-layer comparison of a conversion folder, from its files alone.

    Args:
        path: a folder written by `bridge.convert`.
        module: the torch module that was converted, to compare torch layers too; it must
            reproduce the torch outputs stored in verify.npz.
        samples: use at most this many stored verification samples (default: all).

    Raises:
        ModelLoadError: a file is missing or unreadable.
        ConfigError: `module` does not reproduce the stored torch outputs.
    """
    stored = load_folder(path)
    root, report, contract, mode = stored.root, stored.report, stored.contract, stored.mode
    tflite_contract, feeds, reference = stored.tflite_contract, stored.feeds, stored.reference
    feeds = feeds[:samples] if samples else feeds
    tflite = _load_tflite(root / FILES["tflite"])
    qdq_path = root / FILES["qdq"]
    exported = None
    if module is not None:
        _check_module(module, contract, feeds[0], reference)
        exported = _load_onnx(root / FILES["onnx"])
    optimised = _load_onnx(root / FILES["opt"])
    qdq = _load_onnx(qdq_path) if qdq_path.exists() else None
    quant = report.get("quantization", {})
    if qdq is None and mode == "dynamic":
        rebuilt = dynamic_qdq(OnnxArtifact(optimised, contract, stage="passes"), quant)
        qdq, quant = rebuilt.model, rebuilt.facts.get("quantization", {})
    inputs = LayerInputs(
        mode=mode,
        onnx=optimised,
        contract=contract,
        tflite=tflite,
        tflite_contract=tflite_contract,
        correspondence=report_correspondence(report),
        qdq=qdq,
        quant_tensors=quant.get("tensors", {}),
        module=module,
        exported=exported,
        model_name=report.get("model"),
        equalization=quant.get("equalization", {}),
    )
    return localize(inputs, feeds)


def dynamic_qdq(optimised: OnnxArtifact, quantization: Mapping[str, Any]) -> OnnxArtifact:
    """The weight-only QDQ model of a dynamic conversion, rebuilt from the float model and the
    quantization config saved in its report (a conversion folder does not store it; it needs
    no calibration data, so the same config gives the same model)."""
    saved = dict(quantization.get("config") or {})
    known = {f.name for f in fields(QuantConfig)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known}
    kwargs["mode"] = "dynamic"
    return quantize(optimised, QuantConfig(**kwargs), None)


def localize_conversion(
    module: Any,
    exported: OnnxArtifact,
    optimised: OnnxArtifact,
    qdq: OnnxArtifact | None,
    lowered: TfliteArtifact,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    model_name: str | None = None,
) -> dict[str, Any]:
    """The per-layer comparison of a conversion still in memory (see `localize`)."""
    facts = qdq.facts.get("quantization", {}) if qdq is not None else {}
    quant = facts.get("tensors", {})
    inputs = LayerInputs(
        mode=lowered.mode,
        onnx=optimised.model,
        contract=optimised.contract,
        tflite=lowered.data,
        tflite_contract=lowered.contract,
        correspondence=report_correspondence({"lowering": lowered.facts}),
        qdq=qdq.model if qdq is not None else None,
        quant_tensors=quant,
        module=module,
        exported=exported.model,
        model_name=model_name,
        equalization=facts.get("equalization", {}),
    )
    return localize(inputs, feeds)


def report_correspondence(report: Mapping[str, Any]) -> dict[str, Any]:
    """The ONNX → .tflite tensor correspondence saved in a report (integer modes keep the float
    lowering's under "float_lowering")."""
    low = report.get("lowering", {})
    return dict(
        low.get("correspondence") or low.get("float_lowering", {}).get("correspondence") or {}
    )


def _check_module(module: Any, contract: IOContract, feed, reference) -> None:
    out = TorchRunner(module, contract).run(feed)
    floor = tolerances.FP32_MIN_SQNR_DB
    for name, ref in reference.items():
        got = out[name]
        n = got.shape[0] if got.ndim else 1
        s = sqnr_db(ref[:n] if ref.ndim else ref, got)
        if s < floor:
            raise ConfigError(
                f"the torch model given does not reproduce the stored output {name!r} "
                f"(SQNR {s:.1f} dB < {floor:.0f} dB); pass the model that was converted"
            )
