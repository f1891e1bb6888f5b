"""The output folder every command writes to: checked before any work, and not left behind empty."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def user_path(text: str) -> str:
    """An argparse ``type`` for paths: ``~`` means the home folder, as the Python API reads it too.

    A shell expands an unquoted ``~`` itself; this covers ``--out "~/runs"`` and ``--out=~/runs``, which
    would otherwise create a folder literally named ``~`` (and disagree with where files are written).
    """
    return os.path.expanduser(text)


def output_folder(path: str | None, default: Callable[[], Path], writes: tuple[str, ...] = (),
                  overwrite: bool = True) -> tuple[Path, bool]:
    """``--out`` (or ``default()`` when it is None) as a created folder, and whether it existed before.

    Checked up front, so that a bad ``--out`` fails before minutes of training or search rather than
    after, with the results lost. ``writes`` are the command's output files (glob patterns): unless
    ``overwrite``, a folder already holding one of them (an earlier run's results) is refused.
    """
    out = Path(path) if path else default()  # ~ already expanded: every --out has type=user_path
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is an existing file, not a folder; name a folder for the outputs")
    existed = out.is_dir()
    if existed and not overwrite:
        held = sorted({p.name for pattern in writes for p in out.glob(pattern)})
        if held:
            raise ValueError(f"--out {str(out)!r} already holds results of an earlier run ({', '.join(held[:4])}); "
                             "name a new folder, or pass --overwrite to replace them")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {str(out)!r}: cannot create the folder ({err.strerror or err})") from None
    try:  # a folder we cannot write to would fail only when the results are saved, after all the work
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        if not existed:
            out.rmdir()
        raise ValueError(f"--out {str(out)!r}: cannot write there ({err.strerror or err}); name a folder you can "
                         "write to") from None
    return out, existed


@contextlib.contextmanager
def removed_if_empty_on_failure(out: Path, existed: bool) -> Iterator[None]:
    """If the work inside fails, remove ``out`` when this command created it and wrote nothing there."""
    try:
        yield
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


class FolderInUseError(ValueError):
    """Another process holds the run folder (see :func:`exclusive_folder`)."""


def _lock_holders(folder: Path) -> list[int]:
    """Pids holding a ``flock`` on ``folder`` (Linux's /proc/locks; empty where it cannot be read)."""
    try:
        inode = os.stat(folder).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        parts = line.split()
        if "->" in parts:  # a blocked waiter, not a holder
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
            if parts[4].isdigit():
                pids.append(int(parts[4]))
    return pids


@contextlib.contextmanager
def exclusive_folder(folder: Path, what: str = "run") -> Iterator[Path]:
    """Hold an advisory lock on ``folder`` (created if missing) for the block's lifetime.

    A second process asking for the same folder is refused at once with :class:`FolderInUseError`
    naming the holder, instead of both running and the later one silently replacing the earlier one's
    results. The lock is the folder's own ``flock`` (no lock file is written); the kernel releases it
    when the holder exits, even by SIGKILL. A folder this call created and left empty is removed.
    """
    import fcntl

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = [p for p in _lock_holders(folder) if p != os.getpid()]
            who = f"process {', '.join(map(str, holders))}" if holders else "another process"
            raise FolderInUseError(f"{str(folder)!r} is in use by another {what} ({who}); wait for it to finish, "
                                   "or give another folder (--out)") from None
        try:
            yield folder
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
