"""A conversion's folder: its files, verify.npz and the three reports, staged and swapped in."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bridge import outdir
from bridge.outdir import FILES
from bridge.verify.html import render_html
from bridge.verify.report import render_markdown


def commit_folder(
    out: Path,
    report: dict[str, Any],
    *,
    write: Callable[[Path], list[str]],
    samples: Mapping[str, np.ndarray],
    overwrite: bool,
) -> dict[str, Path]:
    """Stage `write`'s files, verify.npz (`samples`) and the reports beside `out`, then swap the
    folder in (bridge.outdir). {file name: its final path}."""
    with outdir.staging(out) as tmp:
        names = write(tmp)
        np.savez(tmp / FILES["samples"], **samples)
        names += [FILES["samples"], *write_reports(tmp, report)]
        return outdir.commit(
            tmp,
            out,
            names,
            replaces=FILES.values(),
            fingerprint=report["fingerprint"],
            overwrite=overwrite,
        )


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
