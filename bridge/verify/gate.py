"""The parity gate of convert(): run every runtime on the same feeds and check each pair."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract
from bridge.errors import ConfigError
from bridge.modes import MODES
from bridge.runtime.feeds import random_feeds
from bridge.runtime.runners import LiteRTRunner, OrtRunner, TorchRunner
from bridge.verify import noise, parity
from bridge.verify.folder import output_scales

#: dynamic_batch=True is verified at this batch size too, besides the batch-1 samples.
CHECK_BATCH = 4
RUNTIME_NAMES = {
    "torch": "PyTorch model",
    "ort": "exported ONNX model",
    "qdq": "quantized ONNX model",
    "tflite": "lowered .tflite",
}


@dataclass
class GateResult:
    """Every runtime's outputs and the verdict over its pairs.

    `samples` holds each runtime's outputs per sample; `results` the same joined on axis 0, as
    verify.npz stores them.
    """

    results: dict[str, dict[str, np.ndarray]]
    samples: dict[str, list[dict[str, np.ndarray]]]
    verdict: dict[str, Any]
    runtimes: tuple[str, ...]
    batched: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return bool(self.verdict["passed"])


def verification_feeds(
    example_inputs: object,
    contract: IOContract,
    held_out: Sequence[Mapping[str, np.ndarray]],
    *,
    samples: int,
    seed: int,
) -> list[dict[str, np.ndarray]]:
    """The example inputs, then `samples` held-out calibration samples or seeded random ones.

    The example inputs are always sample 0: the model's own input is always judged.
    """
    # export() has checked these: one torch tensor per contract input (or a lone tensor)
    tensors = (example_inputs,) if hasattr(example_inputs, "shape") else tuple(example_inputs)
    feeds = [
        {s.name: t.detach().cpu().numpy() for s, t in zip(contract.inputs, tensors, strict=True)}
    ]
    feeds.extend(dict(f) for f in held_out[:samples])
    next_seed = seed + 1
    while len(feeds) < 1 + samples:
        feeds.append(random_feeds(contract, seed=next_seed))
        next_seed += 1
    return feeds


def run_gate(
    model: object,
    optimised: OnnxArtifact,
    qdq: OnnxArtifact | None,
    lowered: TfliteArtifact,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    mode: str,
    model_name: str | None = None,
    dynamic_batch: bool = False,
    seed: int = 0,
) -> GateResult:
    """Run torch, ORT, [QDQ ORT] and LiteRT on `feeds`; judge every pair `mode` gates on every
    sample. Quantized modes also run the rounding-noise model (`noise.predict`) for their floors.

    With `dynamic_batch`, parity is also checked at batch CHECK_BATCH. `model_name` is kept
    for the caller's report only: every model is judged by the same rules.

    Raises:
        ConfigError: dynamic_batch was asked but a runtime cannot run CHECK_BATCH.
    """
    runners: dict[str, Any] = {
        "torch": TorchRunner(model, optimised.contract),
        "ort": OrtRunner(optimised.model, optimised.contract),
    }
    if qdq is not None and MODES.get(mode).integer:
        runners["qdq"] = OrtRunner(qdq.model, qdq.contract)
    runners["tflite"] = LiteRTRunner(
        lowered.data, lowered.contract, user_contract=optimised.contract
    )
    samples = parity.run_all(runners, feeds)
    scales = quantized_output_scales(qdq)
    names = optimised.contract.output_names
    noisy = qdq if "qdq" in runners else None
    verdict = parity.check(
        samples,
        mode=mode,
        output_names=names,
        lsb_scales=scales,
        predicted=_predict(noisy, feeds, samples),
    )
    gate = GateResult(
        results={k: parity.concat(v) for k, v in samples.items()},
        samples=samples,
        verdict=verdict,
        runtimes=tuple(runners),
    )
    if dynamic_batch:
        feed = random_feeds(optimised.contract, seed=seed + 100, batch=CHECK_BATCH)
        batched = {k: [v] for k, v in _run_batch(runners, feed).items()}
        gate.batched = parity.check(
            batched,
            mode=mode,
            output_names=names,
            lsb_scales=scales,
            predicted=_predict(noisy, [feed], batched),
        )
        verdict["failures"] += [f"batch {CHECK_BATCH}: {f}" for f in gate.batched["failures"]]
        verdict["passed"] = verdict["passed"] and gate.batched["passed"]
    return gate


def _predict(
    qdq: OnnxArtifact | None,
    feeds: Sequence[Mapping[str, np.ndarray]],
    samples: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
) -> dict[str, list[float]] | None:
    """The noise model's SQNR to torch per output and feed; None without a QDQ model."""
    if qdq is None or "torch" not in samples:
        return None
    return noise.predict(qdq.model, qdq.contract, feeds, samples["torch"])


def quantized_output_scales(qdq: OnnxArtifact | None) -> dict[str, float]:
    """{output name: its quantization scale} for LSB errors; empty for float models."""
    if qdq is None:
        return {}
    tensors = qdq.facts.get("quantization", {}).get("tensors", {})
    return output_scales(tensors, qdq.contract.output_names)


def _run_batch(runners: Mapping[str, Any], feed: Mapping[str, np.ndarray]) -> dict[str, Any]:
    results = {}
    for name, runner in runners.items():
        try:
            results[name] = runner.run(feed)
        except Exception as e:  # the model's own error in torch, or LiteRT failing to resize
            raise ConfigError(
                f"dynamic_batch=True, but the {RUNTIME_NAMES.get(name, name)} does not run at "
                f"batch {CHECK_BATCH}: {e}. Convert with a fixed batch (dynamic_batch=False), "
                "or remove batch-size assumptions from the model (x.view(1, -1) → x.flatten(1))"
            ) from e
    return results
