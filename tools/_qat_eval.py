"""The QAT rows of tools/eval_accuracy.py: Fashion-MNIST's trained FashionCNN fine-tuned with
quantization-aware training (FX: prepare_qat_fx with bridge.qat_qconfig_mapping(); PT2E:
torch.export + torchao's prepare_qat_pt2e with the XNNPACK quantizer, per-channel), converted
by bridge.convert_qat, and scored like the other rows on the same 2,000 held-out test images.

Recipe, fixed and seeded: start from the cached float weights, QAT_STEPS Adam steps (QAT_LR) on
shuffled QAT_BATCH-image batches of the training split, one thread, generator seeded QAT_SEED.
`torch` is the float model (so `drop` compares with the PTQ int8 row), `ort` the QDQ ONNX,
`tflite` the .tflite; `fakequant` is the fake-quant torch model and `fakequant_agree` the % of
images whose .tflite top-1 equals the fake-quant model's.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.real.evaluate import Evaluator, Row, run_all, torch_predict

QAT_MODES = ("qat_fx", "qat_pt2e")
QAT_STEPS, QAT_BATCH, QAT_LR, QAT_SEED = 300, 64, 1e-4, 0


class FunctionalFlatten(nn.Module):
    """FashionCNN with torch.flatten for its nn.Flatten: torch.ao FX QAT gives an nn.Flatten
    module its own output fake-quant, which TFLite's RESHAPE cannot requantize."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.features = model.features
        self.head = model.classifier[1:]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(image), 1))


def qat_row(mode: str, out_dir: Path, *, limit: int | None) -> dict[str, Any]:
    """One QAT row (Row.to_dict() plus `fakequant`, `fakequant_agree`, `recipe`)."""
    import bridge
    from bridge.errors import BridgeError
    from models.real.fashion_mnist import fashion_mnist, load_split

    real = fashion_mnist()
    ev = Evaluator("fashion_mnist", real, limit=limit)
    row = Row("fashion_mnist", mode, "top1", samples=ev.samples)
    row.torch = ev.score(ev.reference)
    t0 = time.perf_counter()
    train_x, train_y = load_split("train")
    model = train_qat(mode, real.model, train_x, train_y)
    row.seconds["qat"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    try:
        conversion = bridge.convert_qat(
            model,
            real.example_inputs,
            out_dir,
            input_names=["image"],
            output_names=["logits"],
            calibration=real.dataset.calibration_samples()[:8],
            overwrite=True,
            model_name=f"fashion_mnist {mode}",
        )
    except BridgeError as e:
        row.error = f"{type(e).__name__}: {e}"
        return {**row.to_dict(), "recipe": recipe()}
    row.seconds["convert"] = round(time.perf_counter() - t0, 2)
    row.tflite_mb = round(conversion.tflite_path.stat().st_size / 1e6, 3)
    row.ort_file = conversion.qdq_path.name
    row.ort = ev.score(ev._ort_outputs(conversion.qdq_path, conversion.report))
    tflite = ev._tflite_outputs(conversion)
    row.tflite = ev.score(tflite)
    fake = run_all(torch_predict(_reference(mode, model)), ev.inputs)
    agree = float(100.0 * np.mean(tflite.argmax(1) == fake.argmax(1)))
    return {
        **row.to_dict(),
        "fakequant": vars(ev.score(fake)),
        "fakequant_agree": round(agree, 4),
        "recipe": recipe(),
    }


def recipe() -> dict[str, Any]:
    return {"steps": QAT_STEPS, "batch": QAT_BATCH, "lr": QAT_LR, "seed": QAT_SEED}


def train_qat(mode: str, float_model: nn.Module, x: np.ndarray, y: np.ndarray) -> nn.Module:
    """A QAT-prepared copy of `float_model` (FX or PT2E by `mode`) trained by the recipe."""
    model = copy.deepcopy(float_model).train()
    example = (torch.from_numpy(x[:2]),)
    prepared = _prepare_fx(model, example) if mode == "qat_fx" else _prepare_pt2e(model, example)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(prepared, x, y)
    finally:
        torch.set_num_threads(threads)
    return prepared


def _prepare_fx(model: nn.Module, example: tuple) -> nn.Module:
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    import bridge

    return prepare_qat_fx(FunctionalFlatten(model), bridge.qat_qconfig_mapping(), example)


def _prepare_pt2e(model: nn.Module, example: tuple) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.testing.pt2e._xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    batch = torch.export.Dim("batch")
    exported = torch.export.export(model, example, dynamic_shapes=({0: batch},)).module()
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    return prepare_qat_pt2e(exported, XNNPACKQuantizer().set_global(config))


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(QAT_SEED)
        gen = torch.Generator().manual_seed(QAT_SEED)
        opt = torch.optim.Adam(model.parameters(), lr=QAT_LR)
        order = torch.randperm(len(x), generator=gen)[: QAT_STEPS * QAT_BATCH]
        for idx in order.split(QAT_BATCH):
            loss = nn.functional.cross_entropy(
                model(torch.from_numpy(x[idx.numpy()])), torch.from_numpy(y[idx.numpy()])
            )
            opt.zero_grad()
            loss.backward()
            opt.step()


def _reference(mode: str, model: nn.Module) -> nn.Module:
    from bridge.importqdq import pt2e, qat_freeze

    return qat_freeze.reference(model) if mode == "qat_fx" else pt2e.reference(model)
