"""The output folder: files are staged beside it and moved in only when the conversion passed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bridge.errors import OutputDirError

REPORT = "report.json"


def check_target(path: Path, *, fingerprint: str, overwrite: bool) -> None:
    """Refuse an unwritable folder, or one that holds a different model (unless `overwrite`)."""
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"output path {path} exists and is not a folder; choose another -o")
    probe = path if path.exists() else _existing_parent(path)
    try:  # a real write: os.access says yes to root even on read-only file systems
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise OutputDirError(
            f"cannot write to {probe} ({e.strerror}); choose a writable output folder"
        ) from e
    report = path / REPORT
    if overwrite or not report.exists():
        return
    try:
        old = json.loads(report.read_text()).get("fingerprint")
    except (OSError, ValueError):
        old = None
    if old != fingerprint:
        raise OutputDirError(
            f"{path} already holds a different model ({report}); "
            "pass overwrite=True (--overwrite) or choose another folder"
        )


def _existing_parent(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


@contextlib.contextmanager
def staging(path: Path) -> Iterator[Path]:
    """A private folder beside `path` to write into; removed afterwards whatever happens."""
    parent = _existing_parent(path / "x") if not path.exists() else path
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".bridge-staging-", dir=parent))
    except OSError as e:
        raise OutputDirError(f"cannot create a staging folder in {parent}: {e}") from e
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def commit(staged: Path, path: Path, names: list[str]) -> dict[str, Path]:
    """Move `names` from `staged` into `path` (each an atomic rename); the report goes last."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"cannot create output folder {path}: {e}") from e
    ordered = [n for n in names if n != REPORT] + [n for n in names if n == REPORT]
    placed: dict[str, Path] = {}
    for name in ordered:
        target = path / name
        os.replace(staged / name, target)
        placed[name] = target
    return placed
