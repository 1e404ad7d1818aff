"""QAT on real data: FashionCNN fine-tuned with FX and PT2E quantization-aware training (the
fixed, seeded recipe of tools/_qat_eval.py), converted by convert_qat and scored on the 2,000
held-out Fashion-MNIST test images against targets.QAT_TARGETS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.accuracy.targets import QAT_TARGETS, Target, target_id
from tools._qat_eval import qat_row

pytestmark = [pytest.mark.accuracy, pytest.mark.usefixtures("real_assets")]

SAMPLES = 2000


@pytest.mark.parametrize("target", QAT_TARGETS, ids=target_id)
def test_qat_target(target: Target, tmp_path: Path) -> None:
    if target.mode == "qat_pt2e":
        pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")
    row = qat_row(target.mode, tmp_path / "conversion", limit=SAMPLES)
    why = f"{target.reason}\nmeasured: {json.dumps(row, indent=1)}"
    assert row["error"] is None, why
    assert row["samples"] == SAMPLES
    assert row["drop"] <= target.max_drop and row["ort_drop"] <= target.max_drop, why
    assert row["fakequant_agree"] >= target.min_agree, why
