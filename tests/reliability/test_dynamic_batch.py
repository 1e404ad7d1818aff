"""dynamic_batch=True: a symbolic batch in ONNX and TFLite, verified at batch 4 as well; a
model that cannot run at another batch is refused with a ConfigError saying why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter
from torch import nn

import bridge
import models
from bridge.errors import ConfigError
from bridge.runtime.metrics import compare
from bridge.runtime.tolerances import floor
from tests.reliability.conftest import tiny_cnn

BATCH = 4


def _run_resized(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """LiteRT on `path` after resize_tensor_input to the inputs' shapes (a user's calls)."""
    interp = Interpreter(model_path=str(path), num_threads=1)
    details = interp.get_input_details()
    for d, x in zip(details, inputs, strict=True):
        interp.resize_tensor_input(d["index"], list(x.shape))
    interp.allocate_tensors()
    for d, x in zip(details, inputs, strict=True):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def test_symbolic_batch_runs_at_batch_4_with_parity(tmp_path: Path) -> None:
    model, inputs = tiny_cnn()
    conv = bridge.convert(model, inputs, tmp_path / "out", dynamic_batch=True)
    assert conv.report["contract"]["inputs"][0]["shape"] == [None, 3, 8, 8]
    assert conv.report["dynamic_batch"]["batch"] == BATCH
    assert conv.report["dynamic_batch"]["parity"]["torch_vs_tflite"]["output_0"]["passed"]
    interp = Interpreter(model_path=str(conv.tflite_path))
    assert list(interp.get_input_details()[0]["shape_signature"]) == [-1, 3, 8, 8]

    x = np.random.default_rng(7).standard_normal((BATCH, 3, 8, 8)).astype(np.float32)
    (got,) = _run_resized(conv.tflite_path, [x])
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    c = compare(
        ref,
        got,
        output="output_0",
        pair=("torch", "tflite"),
        min_sqnr_db=floor("fp32", "torch_vs_tflite"),
    )
    assert got.shape == (BATCH, 5) and c.passed, c


class _BatchInChannels(nn.Module):
    """Runs at any batch, but folds the batch into the features: the output keeps batch 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(1, -1)


def test_output_that_ignores_the_batch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        bridge.convert(_BatchInChannels(), (torch.randn(1, 8),), tmp_path / "o", dynamic_batch=True)
    assert "output 'output_0' has shape (1, 32) at input batch 4" in str(info.value)
    assert "its first axis does not follow the batch" in str(info.value)


class _FixedBatch(nn.Module):
    """Hard-codes batch 1 in a view: fine at batch 1, wrong at any other batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(1, 16))


def test_model_with_fixed_batch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        bridge.convert(_FixedBatch(), (torch.randn(1, 16),), tmp_path / "out", dynamic_batch=True)
    message = str(info.value)
    assert "dynamic_batch=True, but the model fails at batch 4 in <root> (_FixedBatch)" in message
    assert "Convert with a fixed batch (dynamic_batch=False)" in message
    assert not (tmp_path / "out").exists()


def test_zoo_sequence_model_converts_or_is_refused_clearly(tmp_path: Path) -> None:
    # kws_conv1d lowers to SHAPE/FILL ops that XNNPack cannot resize (onnx2tf 2.6.9): until the
    # lowering handles it, the conversion must refuse rather than write a .tflite that fails at
    # batch 4. Either outcome is acceptable; a crash or an unverified file is not.
    model, inputs = models.get("kws_conv1d")
    options = models.convert_options("kws_conv1d")
    try:
        conv = bridge.convert(model, inputs, tmp_path / "out", dynamic_batch=True, **options)
    except ConfigError as e:
        assert "does not run at batch 4" in str(e) and "dynamic_batch=False" in str(e)
        assert not (tmp_path / "out").exists()
        return
    x = np.random.default_rng(3).standard_normal((BATCH, *inputs[0].shape[1:]))
    (got,) = _run_resized(conv.tflite_path, [x.astype(np.float32)])
    with torch.inference_mode():
        ref = model(torch.from_numpy(x.astype(np.float32))).numpy()
    assert compare(
        ref,
        got,
        output="logits",
        pair=("torch", "tflite"),
        min_sqnr_db=floor("fp32", "torch_vs_tflite"),
    ).passed
