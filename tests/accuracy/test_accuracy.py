"""Task accuracy of real trained models after bridge.convert(), against the targets.

Each case converts one real model in one mode, runs the evaluation split through torch,
ONNX Runtime and LiteRT (batch 1) and checks targets.TARGETS. Cases run in a child process
(models.real.isolated): a crash of native code fails that case, not the session. The failure
message holds the whole measured row (every runtime's score, the drop, the file sizes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.real.isolated import evaluate_isolated
from tests.accuracy.targets import KNOWN_FAILURES, TARGETS, Target, target_id

pytestmark = [pytest.mark.accuracy, pytest.mark.usefixtures("real_assets")]

# Evaluation samples per model: all 2,000 loaded for the small CNNs (0.3 pt = 6 samples);
# the 90 photo crops; 200 fortunes (20 per topic) for MiniLM, whose batch-1 runs are slow.
LIMITS = {
    "digits_mnist": 2000,
    "digits_opencv": 2000,
    "fashion_mnist": 2000,
    "efficientnet_lite0": 90,
    "minilm": 200,
}


@pytest.fixture(scope="session")
def torch_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where torch's outputs are kept across the cases of one model (computed once)."""
    return tmp_path_factory.mktemp("torch-outputs")


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(
            t,
            id=target_id(t),
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[target_id(t)])],
        )
        if target_id(t) in KNOWN_FAILURES
        else pytest.param(t, id=target_id(t))
        for t in TARGETS
    ],
)
def test_target(target: Target, torch_cache: Path, tmp_path: Path) -> None:
    row = evaluate_isolated(
        target.model,
        target.mode,
        tmp_path / "conversion",
        limit=LIMITS[target.model],
        cache=torch_cache,
    )
    measured = json.dumps(row.to_dict(), indent=1)
    assert row.error is None, f"conversion failed: {row.error}"
    assert row.torch is not None and row.ort is not None and row.tflite is not None
    why = f"{target.reason}\nmeasured: {measured}"
    if target.max_drop is not None:
        assert row.drop is not None and row.drop <= target.max_drop, why
        assert row.ort_drop is not None and row.ort_drop <= target.max_drop, why
    if target.min_cos is not None:
        assert row.tflite.cos_mean is not None and row.tflite.cos_mean >= target.min_cos, why
    if target.min_agree is not None:
        assert row.tflite.agree is not None and row.tflite.agree >= target.min_agree, why
