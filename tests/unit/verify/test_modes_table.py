"""verify.modes_table: one row per mode folder (size, latency, worst torch ⇄ LiteRT SQNR,
TRANSPOSE and float-op counts), error rows for failed modes, and the text/Markdown tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import bridge
from bridge.errors import ModelLoadError
from bridge.outdir import FILES
from bridge.runtime import tflite_io
from bridge.verify.modes_table import (
    HEADER,
    MAX_RUNS,
    float_op_count,
    mode_row,
    render_markdown,
    render_text,
    summarize,
    table_rows,
)
from tests.unit.runtime.tiny_tflite import empty_model, op, relu_chain, tensor


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT/fp32: a verified conversion of a tiny Linear model."""
    out = tmp_path_factory.mktemp("modes")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    bridge.convert(model, (torch.randn(1, 8),), out / "fp32")
    return out


def test_float_op_count_counts_float_writers_but_not_boundary_ops() -> None:
    assert float_op_count(relu_chain(3)) == 3
    m = empty_model()
    x_f = tensor(m, "x_f", [1, 4], np.float32)
    x = tensor(m, "x", [1, 4], np.int8, qparams=(0.1, 0))
    r = tensor(m, "r", [1, 4], np.int8, qparams=(0.1, 0))
    y = tensor(m, "y", [1, 4], np.float32)
    op(m, "QUANTIZE", [x_f], [x])
    op(m, "RELU", [x], [r])
    op(m, "DEQUANTIZE", [r], [y])
    m.subgraphs[0].inputs, m.subgraphs[0].outputs = [x_f], [y]
    assert float_op_count(tflite_io.save(m)) == 0


def test_mode_row_reads_the_folder(root: Path) -> None:
    report = json.loads((root / "fp32" / FILES["report"]).read_text())
    row = mode_row(root / "fp32", "fp32")
    size = (root / "fp32" / FILES["tflite"]).stat().st_size
    assert row["size_mb"] == size / 1e6
    worst = min(c["sqnr_db"] for c in report["parity"]["torch_vs_tflite"].values())
    assert row["sqnr_db"] == worst
    assert row["transposes"] == 0 and row["float_ops"] == 1  # one FULLY_CONNECTED
    assert row["passed"] is True and row["report"] == report
    assert 0 < row["latency_ms"] < 1000 / MAX_RUNS  # a 8×4 matmul takes microseconds


def test_mode_row_of_a_folder_without_a_model_is_a_model_load_error(
    root: Path, tmp_path: Path
) -> None:
    shutil.copy(root / "fp32" / FILES["report"], tmp_path / FILES["report"])
    with pytest.raises(ModelLoadError, match=r"cannot read the fp16 conversion in .*model\.tflite"):
        mode_row(tmp_path, "fp16", latency=False)


def test_summarize_tables_and_markdown(root: Path) -> None:
    summary = summarize(root, ["fp32", "int8"], errors={"int8": "no calibration"}, latency=False)
    assert summary["model"] == json.loads((root / "fp32" / FILES["report"]).read_text())["model"]
    fp32, int8 = table_rows(summary["rows"])
    assert len(fp32) == len(HEADER)
    assert fp32[0] == "fp32" and fp32[2] == "" and fp32[-1] == "PASS"
    assert int8 == ["int8", "", "", "", "", "", "ERROR: no calibration"]
    text = render_text(summary).splitlines()
    assert len(text) == 4 and text[0].startswith("mode")
    md = render_markdown(summary)
    assert md.startswith(f"# bridge modes: {summary['model'] or 'model'}\n")
    assert "| int8 |  |  |  |  |  | ERROR: no calibration |" in md
    assert "- **fp32**: no diverging layer" in md
