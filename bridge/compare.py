"""`bridge convert --modes`: convert one model once per mode into OUT/<mode>/, then write
OUT/report.md and OUT/report.html comparing them (the table: `bridge.verify.modes_table`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.api import convert
from bridge.errors import BridgeError, ConfigError
from bridge.modes import MODES
from bridge.verify.html import render_modes_html
from bridge.verify.modes_table import render_markdown, summarize

log = logging.getLogger(__name__)


def write_summary(
    out_dir: str | Path, modes: Sequence[str], *, errors: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Write OUT/report.md and OUT/report.html comparing `modes`; returns the summary."""
    root = Path(out_dir)
    summary = summarize(root, modes, errors=errors)
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("report.md", render_markdown(summary)),
        ("report.html", render_modes_html(summary)),
    ):
        tmp = root / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, root / name)
    return summary


def convert_modes(
    model: Any,
    example_inputs: Sequence[Any],
    out_dir: str | Path,
    modes: Sequence[str],
    *,
    calibration: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """`bridge.convert` once per mode into OUT/<mode>/, then OUT/report.md and OUT/report.html.

    A mode that fails (parity or any BridgeError) is recorded in the summary with its message
    and the others still run. Returns the summary; "failed" lists the modes that failed.
    """
    if not modes or any(m not in MODES for m in modes):
        raise ConfigError(f"modes {list(modes)}: choose from {', '.join(MODES)}")
    if calibration is not None and not isinstance(calibration, str | os.PathLike | list | tuple):
        calibration = list(calibration)  # every mode reads it again
    root = Path(out_dir)
    errors: dict[str, str] = {}
    for mode in dict.fromkeys(modes):
        log.info("mode %s → %s", mode, root / mode)
        needs_data = MODES.get(mode).needs_calibration
        try:
            convert(
                model,
                example_inputs,
                root / mode,
                quantize=mode,
                calibration=calibration if needs_data else None,
                **options,
            )
        except BridgeError as e:
            log.error("mode %s failed: %s", mode, e)
            errors[mode] = str(e)
    summary = write_summary(root, list(dict.fromkeys(modes)), errors=errors)
    summary["failed"] = sorted(errors)
    return summary
