"""Output folders that are never lost or mixed: one writer at a time, and all-or-nothing
replacement.

- :func:`locked` takes an advisory lock (``flock``) on a folder for the time a command writes
  it: a second ``bitmcu`` process that wants the same folder is refused with the first one's
  pid and command. The lock lives in a small hidden file beside the folder
  (``.NAME.bitmcu-lock``, ignored by git), because the folder itself may be replaced while it
  is held; the kernel drops a lock when its process dies, so no lock is ever left stale.
  Readers take it shared; where the lock file cannot be made (a read-only place), nothing can
  write the folder either, and a reader goes on without a lock.
- :func:`staging` gives a fresh hidden folder beside the output to build everything in, and
  :func:`replace` puts it in place in one step: a rename where the output does not exist yet,
  an atomic exchange of the two folders (Linux ``renameat2(RENAME_EXCHANGE)``) where it does.
  A kill at any moment leaves the old folder or the new one, never a mix. Staging folders left
  by killed commands are removed the next time the same output is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import BitmcuError

STAGE = ".bitmcu-stage-"  # staging folders: .NAME.bitmcu-stage-XXXX beside NAME
OLD = ".bitmcu-old-"  # an old folder on its way out (fallback without RENAME_EXCHANGE)


def _lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.bitmcu-lock"


def _reader_fd(path: Path) -> int | None:
    """A descriptor of the lock file to take a reader's (shared) lock on: the file is made
    where it is missing and the place is writable, opened read-only where it exists; None
    where it is missing and cannot be made (a read-only mount, an installed package)."""
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        try:
            return os.open(path, flags, 0o644)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOENT):
                raise BitmcuError(f"{path.parent}: cannot read there ({e.strerror})") from None
    return None


@contextlib.contextmanager
def locked(folder: str | Path, shared: bool = False) -> Iterator[None]:
    """Hold ``folder`` for this process; shared: for reading (several readers may hold it,
    no writer meanwhile)."""
    folder = Path(folder).absolute()
    if STAGE in folder.parent.name:  # inside a staging folder: private to this process
        yield
        return
    path = _lock_path(folder)
    if shared:
        fd = _reader_fd(path)
        if fd is None:  # a read-only place: nothing can write the folder, so nothing to lock
            yield
            return
    else:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise BitmcuError(f"{folder.parent}: cannot write there ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text(errors="replace").strip() or "unknown"
            raise BitmcuError(f"{folder} is in use by another bitmcu process ({holder}); wait "
                              "for it to finish or choose another output folder") from None
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv) or 'python'}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _clean_leftovers(out: Path) -> None:
    """Staging and old folders of `out` left by killed commands (call with `out` locked); an
    old folder is put back where a kill came between the two renames of the fallback."""
    for p in out.parent.glob(f".{glob.escape(out.name)}{OLD}*"):
        if not out.exists():
            os.rename(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)
    for p in out.parent.glob(f".{glob.escape(out.name)}{STAGE}*"):
        shutil.rmtree(p, ignore_errors=True)


def check_target(out: Path, marker: str, what: str) -> None:
    """Refuse an output that is not a folder we may replace: a file, a mount point, or a
    non-empty folder without `marker` (not one of ours)."""
    if out.exists() and not out.is_dir():
        raise BitmcuError(f"{out}: exists and is not a folder; choose a folder for the {what}")
    if out.is_dir():
        if os.path.ismount(out):
            raise BitmcuError(f"{out}: a mount point; write the {what} into a folder inside it")
        if any(out.iterdir()) and not (out / marker).exists():
            raise BitmcuError(f"{out}: exists and is not a bitmcu {what} (no {marker}); "
                              "choose a new or empty folder")


def staging(out: Path) -> Path:
    """A new staging folder beside `out` (call with `out` locked: it also clears leftovers)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}{STAGE}", dir=out.parent))
    except OSError as e:
        raise BitmcuError(f"{out.parent}: cannot write there ({e.strerror})") from None


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system cannot (then nothing happened)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace(stage: Path, out: Path) -> None:
    """Put the finished staging folder in place of `out` in one step (call with `out` locked)."""
    try:
        if not out.exists():
            os.rename(stage, out)
            return
        if _exchange(stage, out):
            shutil.rmtree(stage, ignore_errors=True)  # the old folder, now at the stage's name
            return
        # no atomic exchange here: two renames; a kill between them leaves the old folder
        # under the OLD name, and the next writer of `out` puts it back (_clean_leftovers)
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}{OLD}", dir=out.parent))
        os.rename(out, old)  # onto an empty folder: replaces it
        os.rename(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise BitmcuError(f"{out}: cannot put the new folder in place ({e.strerror})") from None


@contextlib.contextmanager
def writing(out: str | Path, marker: str, what: str, lock: bool = True) -> Iterator[Path]:
    """Lock `out` (``lock=False``: the caller holds it already), give a staging folder to fill
    and, when the block ends without an error, replace `out` with it; on an error the staging
    folder goes and `out` stays as it was."""
    out = Path(out).absolute()
    with locked(out) if lock else contextlib.nullcontext():
        check_target(out, marker, what)
        stage = staging(out)
        try:
            yield stage
        except OSError as e:
            shutil.rmtree(stage, ignore_errors=True)
            raise BitmcuError(f"{out}: writing the {what} failed ({e.strerror}: "
                              f"{e.filename})") from None
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        replace(stage, out)
