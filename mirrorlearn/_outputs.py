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
