"""Write a conversion's report.md, report.html and report.json into a (staging) folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bridge.outdir import FILES
from bridge.verify.html import render_html
from bridge.verify.report import render_markdown


def write_reports(folder: Path, report: dict[str, Any]) -> list[str]:
    """Write the three reports of `report` into `folder`; report.json last. Their file names."""
    (folder / FILES["markdown"]).write_text(render_markdown(report))
    (folder / FILES["html"]).write_text(render_html(report))
    (folder / FILES["report"]).write_text(json.dumps(report, indent=1, default=json_default))
    return [FILES["markdown"], FILES["html"], FILES["report"]]


def json_default(o: Any) -> Any:
    """JSON for numpy arrays and scalars and paths in a report."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
