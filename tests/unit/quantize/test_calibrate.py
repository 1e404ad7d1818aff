"""Calibration: validation errors, streaming, overrides, and the data loaders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bridge.artifact import OnnxArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.errors import CalibrationError
from bridge.quantize import QuantConfig, calibrate, load_calibration
from bridge.quantize.observers import HistogramObserver, MinMaxObserver
from bridge.runtime import runners

from .conftest import export, export_tensors, random_samples


def good(art: OnnxArtifact) -> np.ndarray:
    return random_samples(art, 1)[0][0]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), "NaN/Inf"),
        (lambda x: np.full_like(x, np.inf), "NaN/Inf"),
        (lambda x: x[:, :, :8], "expected shape"),
        (lambda x: x.astype(np.float64), "expected dtype float32"),
    ],
    ids=["nan", "inf", "shape", "dtype"],
)
def test_bad_sample_names_input_and_index(cnn: OnnxArtifact, bad, match: str) -> None:
    x = good(cnn)
    data = [(x,), (x,), (bad(x),)]
    with pytest.raises(CalibrationError, match=match) as err:
        calibrate(cnn, data, QuantConfig())
    assert "sample 2" in str(err.value) and "'x0'" in str(err.value)


def test_empty_data(cnn: OnnxArtifact) -> None:
    with pytest.raises(CalibrationError, match=r"empty.*\['x0'\]"):
        calibrate(cnn, [], QuantConfig())
    with pytest.raises(CalibrationError, match="empty"):
        calibrate(cnn, iter(()), QuantConfig())


def test_wrong_number_of_arrays(cnn: OnnxArtifact) -> None:
    x = good(cnn)
    with pytest.raises(CalibrationError, match=r"sample 0 has 2 arrays.*\['x0'\]"):
        calibrate(cnn, [(x, x)], QuantConfig())
    with pytest.raises(CalibrationError, match="missing \\['x0'\\]"):
        calibrate(cnn, [{"image": x}], QuantConfig())


def test_mapping_samples_and_observer_counts(cnn: OnnxArtifact) -> None:
    data = [{"x0": s[0]} for s in random_samples(cnn, 5)]
    observers = calibrate(cnn, data, QuantConfig())
    assert "x0" in observers and "y" in observers
    assert all(o.count == 5 for o in observers.values())
    assert all(isinstance(o, HistogramObserver) for o in observers.values())


def test_streams_one_sample_at_a_time(cnn: OnnxArtifact, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    original = runners.OrtRunner.run

    def run(self, feeds):  # type: ignore[no-untyped-def]
        events.append("run")
        return original(self, feeds)

    monkeypatch.setattr(runners.OrtRunner, "run", run)
    x = good(cnn)

    def samples() -> Iterator[tuple[np.ndarray]]:
        for i in range(50):
            events.append("yield")
            yield (x + np.float32(i * 0.01),)

    observers = calibrate(cnn, samples(), QuantConfig())
    assert events[:100] == ["yield", "run"] * 50  # never two samples pulled at once
    assert set(events[100:]) == {"run"}  # then the cross-fit check runs its QDQ models
    assert observers["x0"].count == 50


def test_num_samples_stops_pulling(cnn: OnnxArtifact) -> None:
    pulled = 0
    x = good(cnn)

    def samples() -> Iterator[tuple[np.ndarray]]:
        nonlocal pulled
        for _ in range(50):
            pulled += 1
            yield (x,)

    observers = calibrate(cnn, samples(), QuantConfig(num_samples=7))
    assert pulled == 7 and observers["x0"].count == 7


def test_per_tensor_override(cnn: OnnxArtifact) -> None:
    config = QuantConfig(observer_options={"method": "kl"}, per_tensor_overrides={"x0": "minmax"})
    observers = calibrate(cnn, random_samples(cnn, 3), config)
    assert isinstance(observers["x0"], MinMaxObserver)
    assert observers["y"].method == "kl"  # type: ignore[attr-defined]


IMAGE = IOContract((TensorSpec("img", (1, 3, 6, 8), "float32", "NCHW"),), ())
GRAY = IOContract((TensorSpec("img", (None, 1, 4, 4), "float32", "NCHW"),), ())


def test_load_npy(tmp_path: Path) -> None:
    data = np.random.default_rng(0).standard_normal((5, 3, 6, 8))  # float64 on disk
    np.save(tmp_path / "cal.npy", data)
    samples = list(load_calibration(tmp_path / "cal.npy", IMAGE))
    assert len(samples) == 5
    assert samples[2][0].shape == (1, 3, 6, 8) and samples[2][0].dtype == np.float32
    np.testing.assert_allclose(samples[2][0][0], data[2], rtol=1e-6)


def test_load_npz_two_inputs(tmp_path: Path) -> None:
    contract = IOContract(
        (TensorSpec("a", (1, 4), "float32"), TensorSpec("b", (1, 2), "int64")), ()
    )
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.arange(6, dtype=np.int64).reshape(3, 2)
    np.savez(tmp_path / "cal.npz", a=a, b=b)
    samples = list(load_calibration(str(tmp_path / "cal.npz"), contract))
    assert len(samples) == 3
    np.testing.assert_array_equal(samples[1][0], a[1:2])
    np.testing.assert_array_equal(samples[1][1], b[1:2])
    assert samples[1][1].dtype == np.int64
    np.savez(tmp_path / "bad.npz", a=a)
    with pytest.raises(CalibrationError, match=r"no array for inputs \['b'\]"):
        load_calibration(tmp_path / "bad.npz", contract)


def test_load_npy_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.zeros(10, np.float32))
    with pytest.raises(CalibrationError, match="does not stack samples of input 'img'"):
        load_calibration(tmp_path / "flat.npy", IMAGE)
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "missing.npy", IMAGE)
    with pytest.raises(CalibrationError, match="not supported"):
        load_calibration(np.zeros((2, 3)), IMAGE)  # type: ignore[arg-type]


def test_load_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    samples = list(load_calibration(tmp_path, IMAGE, mean=mean, std=std))
    assert len(samples) == 3
    x = samples[0][0]
    assert x.shape == (1, 3, 6, 8) and x.dtype == np.float32
    first = np.asarray(Image.open(tmp_path / "0.png").resize((8, 6), Image.Resampling.BILINEAR))
    expected = (first / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(x[0], expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def test_load_gray_images_and_errors(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4, 3), 255, np.uint8)).save(tmp_path / "white.png")
    (sample,) = list(load_calibration(tmp_path, GRAY))
    assert sample[0].shape == (1, 1, 4, 4)
    np.testing.assert_allclose(sample[0], 1.0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="holds no images"):
        load_calibration(empty, GRAY)
    with pytest.raises(CalibrationError, match="std has 2 values"):
        load_calibration(tmp_path, IMAGE, std=(1.0, 2.0))


def test_quantize_accepts_a_path(cnn: OnnxArtifact, tmp_path: Path) -> None:
    from bridge.quantize import quantize

    np.save(tmp_path / "cal.npy", np.concatenate([s[0] for s in random_samples(cnn, 4)]))
    q = quantize(cnn, QuantConfig(), tmp_path / "cal.npy")
    assert q.facts["quantization"]["calibration_samples"] == 4


def test_torch_tensors_are_samples(cnn: OnnxArtifact) -> None:
    import torch

    tensors = [torch.from_numpy(s[0]).requires_grad_() for s in random_samples(cnn, 3)]
    samples = list(load_calibration(tensors, cnn.contract))
    assert [s[0].shape for s in samples] == [(1, 3, 16, 16)] * 3
    observers = calibrate(cnn, tensors, QuantConfig())
    assert observers["x0"].count == 3


# Calibration data without a range (bridge.quantize.input_ranges): refused up front, naming the
# input, where ranges would be useless; legitimate constant inputs are kept.


class MaskedConv(nn.Module):
    """An image through a normalising Sub/Div into a conv, times a 4-D float mask."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.conv((image - 0.5) / 0.25) * mask


@pytest.fixture(scope="module")
def masked() -> OnnxArtifact:
    return export(MaskedConv(), (1, 3, 8, 8), (1, 1, 8, 8))


def _samples(n: int, image, mask=None) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        x = image(rng) if callable(image) else np.full((1, 3, 8, 8), image, np.float32)
        out.append((x,) if mask is None else (x, np.full((1, 1, 8, 8), mask, np.float32)))
    return out


def _image(rng: np.random.Generator) -> np.ndarray:
    return rng.random((1, 3, 8, 8), dtype=np.float32)


def test_all_zero_calibration_is_refused_naming_the_input(cnn: OnnxArtifact) -> None:
    data = [(np.zeros((1, 3, 16, 16), np.float32),)] * 4
    with pytest.raises(CalibrationError) as err:
        calibrate(cnn, data, QuantConfig())
    message = str(err.value)
    assert "input 'x0' is zero in every element of all 4 samples" in message, message
    assert "representative data" in message, message


def test_constant_image_is_refused_through_normalisation(masked: OnnxArtifact) -> None:
    with pytest.raises(CalibrationError) as err:
        calibrate(masked, _samples(3, 0.7, mask=1.0), QuantConfig())
    message = str(err.value)
    assert "input 'x0' feeds convolution" in message, message
    assert "single value 0.7 in every element of all 3 samples" in message, message
    assert "'x1'" not in message, message  # the mask of ones is legitimate


def test_mask_of_ones_is_kept_but_an_all_zero_mask_is_not(masked: OnnxArtifact) -> None:
    observers = calibrate(masked, _samples(3, _image, mask=1.0), QuantConfig(), crossfit=False)
    assert observers["x1"].count == 3  # the 4-D float mask, constant 1 in every sample
    with pytest.raises(CalibrationError, match=r"input 'x1' is zero in every element of all 3"):
        calibrate(masked, _samples(3, _image, mask=0.0), QuantConfig())


def test_every_offending_input_is_named(masked: OnnxArtifact) -> None:
    with pytest.raises(CalibrationError) as err:
        calibrate(masked, _samples(2, 0.0, mask=0.0), QuantConfig())
    assert "input 'x0' is zero" in str(err.value) and "input 'x1' is zero" in str(err.value)


def test_a_zero_sample_among_real_ones_is_kept(cnn: OnnxArtifact) -> None:
    data = [(np.zeros((1, 3, 16, 16), np.float32),), *random_samples(cnn, 2)]
    assert calibrate(cnn, data, QuantConfig(), crossfit=False)["x0"].count == 3


def test_integer_inputs_are_never_refused() -> None:
    from .transformer_models import TOKENS, Embedder

    art = export_tensors(Embedder(), torch.zeros(1, TOKENS, dtype=torch.int64))
    data = [(np.zeros((1, TOKENS), np.int64),)] * 3  # token id 0 everywhere: constant, legal
    observers = calibrate(art, data, QuantConfig(), crossfit=False)
    assert "ids" not in observers and "x0" not in observers and observers


def test_convert_refuses_before_lowering(tmp_path: Path) -> None:
    import bridge

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    zeros = [(np.zeros((1, 3, 8, 8), np.float32),)] * 8
    out = tmp_path / "out"
    with pytest.raises(CalibrationError, match=r"'input_0' is zero in every element"):
        bridge.convert(model, (torch.randn(1, 3, 8, 8),), out, quantize="int8", calibration=zeros)
    assert not out.exists()
