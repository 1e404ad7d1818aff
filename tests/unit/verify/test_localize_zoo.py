"""No clean conversion names a diverging layer: every zoo model in fp32 and int8 (the small
ones in fp16 and dynamic too), and the real MiniLM in fp32 and dynamic. Slow: each case is a
full conversion (3 to 90 s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bridge
import models
from bridge.errors import ParityError
from bridge.runtime import tolerances
from tests.parity.conftest import BIG, zoo_params

pytestmark = pytest.mark.slow

#: Calibration samples for int8 (3 of them are kept for verification).
CALIBRATION_SAMPLES = 16


def _calibration(name: str) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(1234)
    return [
        tuple(
            rng.standard_normal(s.concrete_shape()).astype(np.float32)
            for s in models.info(name).inputs
        )
        for _ in range(CALIBRATION_SAMPLES)
    ]


def check_clean(layers: dict, mode: str, model: str | None) -> None:
    """No divergence; torch modules bound and agreeing; most tensors compared on every link."""
    assert layers["first_divergence"] is None, layers["first_divergence"]["explanation"]
    floor = tolerances.floor(mode, "torch_vs_ort")
    torch_db = [
        r["metrics"]["torch_vs_ort"]["sqnr_db"]
        for r in layers["rows"]
        if "torch_vs_ort" in r["metrics"]
    ]
    assert torch_db and min(torch_db) >= floor, torch_db
    for link in layers["links"]:
        compared = sum(1 for r in layers["rows"] if link["pair"] in r["metrics"])
        assert compared >= 1, (link["pair"], layers["rows"])


def _cases() -> list:
    """Every zoo model in fp32 and int8; the small ones in fp16 and dynamic too."""
    cases = []
    for param in zoo_params(pytest):
        (name,) = param.values
        modes = ("fp32", "int8") if name in BIG else ("fp32", "fp16", "dynamic", "int8")
        cases += [pytest.param(name, m, marks=param.marks, id=f"{name}-{m}") for m in modes]
    return cases


@pytest.mark.parametrize(("name", "mode"), _cases())
def test_clean_zoo_conversion_names_no_divergence(name: str, mode: str, tmp_path: Path) -> None:
    model, inputs = models.get(name)
    result = bridge.convert(
        model,
        inputs,
        tmp_path / name,
        quantize=None if mode == "fp32" else mode,
        calibration=_calibration(name) if mode == "int8" else None,
        **models.convert_options(name),
    )
    check_clean(result.report["layers"], mode, name)


@pytest.mark.accuracy  # needs the real MiniLM: runs after ci/assets.sh
@pytest.mark.parametrize("mode", ["fp32", "dynamic"])
def test_clean_minilm_names_no_false_divergence(mode: str, tmp_path: Path) -> None:
    """MiniLM's false export error at its embedding LayerNorm (torch ⇄ ORT at -3 dB while the
    outputs agreed at 105 dB) is gone, and in dynamic mode the per-token states' accumulated
    noise below the floor (which mean pooling averages out) names no layer. Dynamic MiniLM sits
    near its output floor: where its outputs miss it, no export error may be named."""
    import torch

    from models.real.minilm import load_encoder, tokenize

    encoder = load_encoder()
    ids, mask = tokenize(["hello world, this is a test of the sentence encoder"])

    out = tmp_path / "minilm"
    try:
        report = bridge.convert(
            encoder,
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            out,
            quantize=None if mode == "fp32" else mode,
            input_names=["input_ids", "attention_mask"],
        ).report
    except ParityError as e:
        report = e.report
    layers = report["layers"]
    norm = next(r for r in layers["rows"] if r["tensor"] == "/norm/LayerNormalization_output_0")
    assert norm["metrics"]["torch_vs_ort"]["sqnr_db"] >= tolerances.floor(mode, "torch_vs_ort")
    if mode == "fp32" or report["passed"]:
        check_clean(layers, mode, None)
        # the folder alone (no QDQ file in dynamic mode) gives the same verdict
        again = bridge.verify(out, layers=True)["layers"]
        assert again["first_divergence"] is None, again["first_divergence"]
        pairs = [k["pair"] for k in layers["links"] if k["pair"] != "torch_vs_ort"]
        assert [k["pair"] for k in again["links"]] == pairs
    else:  # whatever is named (if anything: each link may meet its floor while their sum
        # misses the end-to-end one), it is not an export error
        found = layers["first_divergence"]
        assert found is None or found["kind"] != "export", found
