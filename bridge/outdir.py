"""The output folder: staged in a sibling folder, then swapped in whole by one rename.

A conversion into PARENT/OUT writes its files into PARENT/.OUT.bridge-staging-<pid>-<random>,
hard-links the old OUT's other entries (the user's own files) into it, and then, holding an
fcntl lock on PARENT/.OUT.bridge-lock, checks OUT again and exchanges the two folders with
renameat2(RENAME_EXCHANGE): at every instant OUT is the whole old or the whole new folder.
Where that call is missing, OUT is renamed to PARENT/.OUT.bridge-backup-* and the new folder
into its place; the next run restores a backup if it finds OUT missing. A staging folder is
flock-ed by its process while it lives, so the next conversion into OUT removes those of dead
processes. SIGINT and SIGTERM wait until the swap is done; during staging, SIGTERM removes the
staging folder as Ctrl-C does and then ends the process as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import glob
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from bridge.errors import OutputDirError

log = logging.getLogger(__name__)

#: The files of a conversion folder, by role.
FILES = {
    "onnx": "model.onnx",
    "opt": "model.opt.onnx",
    "qdq": "model.qdq.onnx",
    "tflite": "model.tflite",
    "samples": "verify.npz",
    "report": "report.json",
    "markdown": "report.md",
    "html": "report.html",
}
REPORT = FILES["report"]
STAGING, BACKUP, LOCK = "bridge-staging", "bridge-backup", "bridge-lock"
LEGACY_STAGING = ".bridge-staging-"  # what earlier versions left inside the folder: dropped
AT_FDCWD, RENAME_EXCHANGE = -100, 2
NO_EXCHANGE = (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP)  # the call or the file system lacks it


class _Terminated(BaseException):
    """SIGTERM arrived while staging; raised so the staging folder is removed first."""


def check_target(path: Path, *, fingerprint: str, overwrite: bool) -> None:
    """Refuse an unusable folder, or one that holds a different model (unless `overwrite`).

    Also clears what dead conversions into `path` left beside it (see `sweep`).
    """
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"output path {path} exists and is not a folder; choose another -o")
    real = _real(path)
    _refuse_unswappable(path, real)
    probe = _existing_parent(real)
    try:  # a real write: os.access says yes to root even on read-only file systems
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise OutputDirError(
            f"cannot write to {probe} ({e.strerror}); choose a writable output folder"
        ) from e
    sweep(real)
    _check_fingerprint(path, fingerprint=fingerprint, overwrite=overwrite)


def _check_fingerprint(path: Path, *, fingerprint: str, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"output path {path} exists and is not a folder; choose another -o")
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


def _refuse_unswappable(path: Path, real: Path) -> None:
    """The folder is replaced by a rename: not a mount point, not the current folder."""
    if real.exists() and os.path.ismount(real):
        raise OutputDirError(
            f"output folder {path} is a mount point, which cannot be replaced by a rename; "
            f"choose a folder inside it, e.g. -o {path / 'model'}"
        )
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise OutputDirError(
            f"output folder {path} is the current folder or holds it; bridge replaces the "
            "whole folder, which would leave you in a deleted one: run from elsewhere"
        )


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _existing_parent(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def _siblings(path: Path, kind: str) -> list[Path]:
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.{kind}-*"))


def sweep(path: Path) -> None:
    """Remove staging and backup folders of `path` left by dead processes; restore a lost one."""
    if not path.parent.is_dir():
        return
    with _locked(path):
        backups = sorted(_siblings(path, BACKUP), key=lambda p: p.lstat().st_ctime)
        if backups and not os.path.lexists(path):
            _restore(backups.pop(), path)
        for folder in backups + [s for s in _siblings(path, STAGING) if not _held(s)]:
            log.info("removing %s, left by a conversion that died", folder)
            shutil.rmtree(folder, ignore_errors=True)


def _restore(backup: Path, path: Path) -> None:
    log.warning("restoring %s from %s (a commit died half-way)", path, backup)
    try:
        os.rename(backup, path)
    except OSError as e:
        raise OutputDirError(
            f"{path} is missing and its previous version is in {backup}, which cannot be "
            f"moved back ({e.strerror}); rename it to {path.name} by hand"
        ) from e


def _held(folder: Path) -> bool:
    """Whether a live process holds `folder`'s flock (every staging folder has one)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return True  # gone already, or not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold PARENT/.NAME.bridge-lock (flock); the file is removed on release."""
    lock = path.parent / f".{path.name}.{LOCK}"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputDirError(f"cannot create the lock file {lock}: {e.strerror}") from e
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break  # not unlinked by the holder we waited for
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


@contextlib.contextmanager
def staging(path: Path) -> Iterator[Path]:
    """A private folder beside `path` to write into; removed afterwards whatever happens."""
    real = _real(path)
    made = _make_folders(real.parent)
    try:
        with _locked(real):  # so that no sweep sees it before it is held
            tmp = Path(
                tempfile.mkdtemp(prefix=f".{real.name}.{STAGING}-{os.getpid()}-", dir=real.parent)
            )
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OutputDirError:
        _remove_empty(made)
        raise
    except OSError as e:
        _remove_empty(made)
        raise OutputDirError(
            f"cannot create a staging folder in {real.parent} ({e.strerror}); "
            "choose an output folder whose parent is writable"
        ) from e
    with _sigterm_like_sigint():
        try:
            yield tmp
        finally:
            os.close(fd)
            shutil.rmtree(tmp, ignore_errors=True)
            if not real.exists():
                _remove_empty(made)


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns those created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"cannot create output folder {folder}: {e.strerror}") from e
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_like_sigint() -> Iterator[None]:
    """Turn SIGTERM into an exception for the block, then end the process by SIGTERM.

    Only where SIGTERM would kill the process anyway (its handler is the default one).
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)  # the usual exit status of a SIGTERM
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def commit(
    staged: Path,
    path: Path,
    names: list[str],
    *,
    replaces: Iterable[str] = (),
    fingerprint: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Swap `staged` (from `staging(path)`) in at `path` in one step; returns where `names` are.

    `staged` first receives the old folder's entries that are neither in `names` nor in
    `replaces` (the user's files). With `fingerprint`, the target is checked again under the
    lock, as check_target does, so of two conversions into one folder only one can win.
    SIGINT and SIGTERM arriving meanwhile wait until the swap is done.
    """
    real = _real(path)
    with _deferred_signals(path) as swapped, _locked(real):
        if fingerprint is not None:
            _check_fingerprint(path, fingerprint=fingerprint, overwrite=overwrite)
        try:
            if real.exists():
                _carry_over(real, staged, skip={*names, *replaces})
                staged.chmod(real.stat().st_mode & 0o7777)
            else:
                staged.chmod(0o777 & ~_umask())
            _swap(staged, real)
        except OSError as e:
            raise OutputDirError(
                f"cannot move the new model into {path} ({e.strerror}); the folder is unchanged"
            ) from e
        swapped.append(True)
    ordered = [n for n in names if n != REPORT] + [n for n in names if n == REPORT]
    return {name: path / name for name in ordered}


def _carry_over(old: Path, new: Path, *, skip: set[str]) -> None:
    """Hard-link (or copy) the entries of `old` that are not in `skip` into `new`."""
    for entry in os.scandir(old):
        if entry.name in skip or entry.name.startswith(LEGACY_STAGING):
            continue
        src, dst = Path(entry.path), new / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif entry.is_dir():
            shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(src, dst)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _swap(new: Path, path: Path) -> None:
    """Put folder `new` at `path` by one rename; the old folder, if any, is removed."""
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    exchange = _renameat2()
    if exchange is not None:
        sys.audit("bridge.outdir.exchange", str(new), str(path))
        if exchange(AT_FDCWD, os.fsencode(new), AT_FDCWD, os.fsencode(path), RENAME_EXCHANGE) == 0:
            shutil.rmtree(new, ignore_errors=True)  # `new` names the old folder now
            return
        code = ctypes.get_errno()
        if code not in NO_EXCHANGE:
            raise OutputDirError(f"cannot replace {path}: {os.strerror(code)}")
    backup = path.parent / f".{path.name}.{BACKUP}-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(path, backup)
    try:
        os.rename(new, path)
    except OSError as e:
        with contextlib.suppress(OSError):  # else the next run's sweep restores it
            os.rename(backup, path)
        raise OutputDirError(f"cannot replace {path}: {e.strerror}") from e
    shutil.rmtree(backup, ignore_errors=True)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """The C library's renameat2, or None where it has none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _deferred_signals(path: Path) -> Iterator[list[bool]]:
    """Hold SIGINT and SIGTERM until the block ends (main thread only: they arrive there).

    The block appends to the yielded list once the folder is swapped; a Ctrl-C held over the
    swap then becomes a KeyboardInterrupt that says the folder holds the new model.
    """
    swapped: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield swapped
        return
    caught: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, frame: caught.append(signum))
        for s in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(s) not in (None, signal.SIG_IGN)
    }
    try:
        yield swapped
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            if s == signal.SIGINT and swapped and previous[s] is signal.default_int_handler:
                raise KeyboardInterrupt(
                    f"{path} holds the new model (verified; the interrupt came as it was "
                    "being moved in)"
                )
            signal.raise_signal(s)
