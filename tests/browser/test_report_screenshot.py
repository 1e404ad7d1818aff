"""report.html rendered by a real headless Chromium: the page and its plots must show.

Chromium is installed by ci/browser.sh; without it this test fails (it never skips).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import models
from bridge.compare import convert_modes

MODEL = "digits_cnn"
WIDTH, HEIGHT = 1200, 1600
CANDIDATES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
#: matplotlib's first plot colour (#1f77b4): the first line of the per-layer plot, the first
#: bar of the modes plot.
PLOT_BLUE = np.array([31, 119, 180])
#: Share of pixels that differ from the page background (text, tables, plots): a blank or
#: error page has well under 0.5 %, the digits reports about 3 %.
MIN_INK = 0.01


def find_chromium() -> str:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "Chromium is not installed: run ci/browser.sh (it apt-installs chromium), then "
        "run `pytest -m browser tests/browser` again"
    )


def screenshot(chromium: str, page: Path, png: Path, profile: Path) -> np.ndarray:
    """Render `page` at WIDTH x HEIGHT and return the screenshot as an RGB array."""
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--screenshot={png}",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert png.exists(), f"no screenshot written: {done.stderr[-2000:]}"
    return np.asarray(Image.open(png).convert("RGB"))


def _check_rendered(img: np.ndarray, name: str) -> None:
    assert img.shape == (HEIGHT, WIDTH, 3), (name, img.shape)
    background = img[5, 5]
    differs = np.any(np.abs(img.astype(int) - background.astype(int)) > 24, axis=-1).mean()
    colours = len(np.unique(img.reshape(-1, 3)[::7], axis=0))
    blue = np.all(np.abs(img.astype(int) - PLOT_BLUE) < 30, axis=-1).sum()
    assert differs > MIN_INK, f"{name}: only {differs:.1%} of the page differs from its background"
    assert colours > 100, f"{name}: {colours} colours; the page looks blank"
    assert blue > 200, f"{name}: {blue} plot-blue pixels; the plot image did not render"


@pytest.mark.browser
def test_reports_render_in_headless_chromium(tmp_path: Path) -> None:
    chromium = find_chromium()
    model, inputs = models.get(MODEL)
    out = tmp_path / "out"
    summary = convert_modes(model, inputs, out, ["fp32", "fp16"], **models.convert_options(MODEL))
    assert summary["failed"] == [], summary["failed"]
    for page in (out / "report.html", out / "fp32" / "report.html", out / "fp16" / "report.html"):
        name = page.parent.name
        img = screenshot(chromium, page, tmp_path / f"{name}.png", tmp_path / "profile")
        _check_rendered(img, str(page))
