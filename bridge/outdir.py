"""The output folder: files are staged beside it and moved in only when the conversion passed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from bridge.errors import OutputDirError

log = logging.getLogger(__name__)

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


def commit(
    staged: Path, path: Path, names: list[str], *, replaces: Iterable[str] = ()
) -> dict[str, Path]:
    """Move `names` from `staged` into `path`; a Ctrl-C arriving meanwhile waits until it is done.

    A new folder appears in a single rename. In an existing folder the old report goes first
    (a folder without report.json is visibly incomplete), then the files in `replaces` that
    this commit does not bring, then each new file (an atomic rename), the report last.
    """
    ordered = [n for n in names if n != REPORT] + [n for n in names if n == REPORT]
    with _deferred_interrupt():
        if not path.exists() and sorted(os.listdir(staged)) == sorted(names):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                staged.chmod(0o777 & ~_umask())
                os.rename(staged, path)
                return {name: path / name for name in ordered}
            except OSError:
                log.debug("could not rename %s to %s; moving file by file", staged, path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputDirError(f"cannot create output folder {path}: {e}") from e
        (path / REPORT).unlink(missing_ok=True)
        for name in set(replaces) - set(names):
            (path / name).unlink(missing_ok=True)
        placed: dict[str, Path] = {}
        for name in ordered:
            target = path / name
            os.replace(staged / name, target)
            placed[name] = target
    return placed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold SIGINT until the block ends (main thread only: signals are delivered there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)
