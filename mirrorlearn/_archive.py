"""A small, safe file format shared by drift files and saved agents.

One ``.npz`` file (zip of ``.npy`` arrays, read with ``allow_pickle=False``) holding a JSON metadata
document under ``__meta__`` and any number of named float/int arrays. Nothing in it can execute code
when loaded. Writes are atomic: the archive is written to a temporary file in the target folder and
renamed over the destination, so an interrupted save never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import time
import tokenize
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

META_KEY = "__meta__"

# Bounds on what a file may declare before any of it is read: a saved agent or drift is kilobytes to a few
# megabytes, so these only ever refuse hostile or broken files (a 2 MB zip that inflates to 2 GiB).
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 1 << 30     # one array, uncompressed
MAX_TOTAL_BYTES = 2 << 30      # all arrays, uncompressed
MAX_META_BYTES = 16 << 20      # the JSON metadata document
MAX_JSON_DEPTH = 64


class ArchiveError(ValueError):
    """A file is missing, truncated, of the wrong kind or from a future version."""


def flatten_tree(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten nested dicts of arrays into ``{"a/b/c": array}`` (keys sorted, deterministic)."""
    out: dict[str, np.ndarray] = {}
    if tree is None:
        return out
    if isinstance(tree, Mapping):
        for key in sorted(tree):
            if "/" in str(key):
                raise ValueError(f"parameter key {key!r} may not contain '/'")
            out.update(flatten_tree(tree[key], f"{prefix}{key}/"))
        return out
    if isinstance(tree, (list, tuple)):
        raise TypeError(
            "parameters must be nested dicts of arrays (got a list/tuple); "
            "wrap sequences in a dict with string keys"
        )
    out[prefix[:-1]] = np.asarray(tree)
    return out


def unflatten_tree(flat: Mapping[str, np.ndarray]) -> dict:
    """Inverse of :func:`flatten_tree`.

    Raises :class:`ArchiveError` when a name is used both for a value and for a group of values
    (``"a"`` and ``"a/b"``), which :func:`flatten_tree` never writes: a foreign or corrupted file.
    """
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        parts = path.split("/")
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _name_clash("/".join(parts[: depth + 1]), path)
        if parts[-1] in node:  # "a/b" came first, so "a" is already a group
            raise _name_clash(path, path + "/...")
        node[parts[-1]] = value
    return tree


def _name_clash(value_name: str, group_name: str) -> ArchiveError:
    return ArchiveError(
        f"array names {value_name!r} and {group_name!r} clash: {value_name!r} is both a value and a group "
        "of values. The file was not written by mirrorlearn or is corrupted; re-create it."
    )


def write_archive(path: str | os.PathLike, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Path:
    """Atomically write ``meta`` (JSON-serialisable) and ``arrays`` to ``path`` (``~`` is expanded)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name such as {path / 'agent.npz'}")
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in payload.items():
        if value.dtype == object:
            raise TypeError(f"array {name!r} has dtype object, which cannot be saved safely")
    if META_KEY in payload:
        raise ValueError(f"{META_KEY!r} is reserved")
    payload[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    return atomic_write(path, lambda handle: np.savez(handle, **payload), kind=meta.get("kind"))


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb",
                 kind: str | None = None) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it and rename it over ``path``.

    A crash or an exception at any point leaves the previous file (if any) untouched and no temporary
    file behind. A saved mirrorlearn file of another kind (``kind``: what is written now; None for
    JSON and pictures) is never replaced: ``agent.save("lpo.drift")`` must not destroy a learned drift.
    ``~`` is expanded (``agent.save("~/agent.npz")`` writes to the home folder, not to a folder named ``~``).
    """
    path = Path(path).expanduser()
    held = archive_kind(path)
    if held is not None and held != kind:
        new = _noun(kind) if kind else "this output"
        what = f"{'an' if new[:1] in 'aeiou' else 'a'} {new} file" if kind else new
        raise FileExistsError(f"{str(path)!r} holds a saved {_noun(held)}; writing {what} there would destroy it. "
                              "Choose another path, or move that file first")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a component of the folder is a file
        blocking = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise NotADirectoryError(f"cannot write {str(path)!r}: {str(blocking)!r} is a file, not a folder; "
                                 "choose another path") from None
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode(path))  # mkstemp creates 0600; a saved file gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)  # the rename itself survives a power cut only once the folder is synced
    return path


# A temporary of an older version (no writer's pid in its name) counts as stale after this many seconds.
STALE_TEMPORARY_S = 3600.0


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries that killed writes of ``path`` left beside it (``.NAME.PID.XXXX.tmp``).

    A temporary is stale when the process that made it (the pid in its name) is gone; a live writer's
    is kept, so two processes saving at once never delete each other's work. Returns what was removed.
    """
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        middle = tmp.name[len(path.name) + 2:-len(".tmp")]
        pid_text = middle.split(".", 1)[0]
        try:
            if "." in middle and pid_text.isdigit():
                if _process_alive(int(pid_text)):
                    continue
            elif time.time() - tmp.stat().st_mtime < STALE_TEMPORARY_S:
                continue
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's live process (or not ours to judge): keep its file
    return True


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder; the file itself was synced
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int = 1, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``data`` as JSON beside ``path`` and rename it over: never a half-written file.

    NaN and infinities become ``null``: strict JSON (JavaScript, ``jq``, other languages) has no NaN.
    """
    text = json.dumps(_json_safe(data, default), indent=indent, sort_keys=sort_keys, allow_nan=False)
    return atomic_write(path, lambda handle: handle.write(text), mode="w")


def _json_safe(data: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``data`` with non-finite floats as None (recursively through dicts, lists and tuples)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _json_safe(v, default) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_json_safe(v, default) for v in data]
    if isinstance(data, (str, int, bool)) or data is None:
        return data
    if isinstance(data, (np.floating, np.integer, np.bool_)):
        return _json_safe(data.item(), default)
    if default is not None:
        return _json_safe(default(data), None)
    raise TypeError(f"cannot write {type(data).__name__} as JSON")


def save_figure_atomic(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """``fig.savefig(path)`` through a temporary file, so an earlier picture is replaced whole or kept."""
    savefig_kwargs.setdefault("format", Path(path).suffix.lstrip(".") or None)  # a handle has no name to go by
    return atomic_write(path, lambda handle: fig.savefig(handle, **savefig_kwargs))


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, or what ``open()`` would give a new one (0666 less the umask)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _noun(kind: str) -> str:
    """'mirrorlearn.agent' -> 'agent' (for messages)."""
    return {"mirrorlearn.metatrain": "meta-training checkpoint"}.get(kind, kind.removeprefix("mirrorlearn."))


ZIP_MAGIC = b"PK\x03\x04"  # every archive we write is a zip (.npz)


def _leading_bytes(path: Path, n: int = 4) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(n)


def archive_kind(path: Path) -> str | None:
    """The ``kind`` of the mirrorlearn archive at ``path`` (reads only its metadata), else None."""
    try:
        if not path.is_file() or _leading_bytes(path) != ZIP_MAGIC:  # JSON, pictures: no need to unzip
            return None
    except OSError:
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if META_KEY not in data.files:
                return None
            meta = json.loads(data[META_KEY].tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, UnicodeDecodeError):  # not an archive of ours
        return None
    kind = meta.get("kind") if isinstance(meta, dict) else None
    return kind if isinstance(kind, str) else None


def _check_members(path: Path) -> None:
    """Refuse, before reading any array, a zip whose members are too many or declare too many bytes."""
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"{path} holds {len(infos)} members, more than any mirrorlearn file ({MAX_MEMBERS}); "
                           "it was not read")
    total = 0
    for info in infos:
        limit = MAX_META_BYTES if info.filename == META_KEY + ".npy" else MAX_MEMBER_BYTES
        if info.file_size > limit:
            raise ArchiveError(f"{path}: member {info.filename!r} declares {info.file_size:,} bytes uncompressed, more "
                               f"than the {limit:,} a mirrorlearn file holds; it was not read (a corrupted or hostile file)")
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise ArchiveError(f"{path} declares {total:,} bytes uncompressed, more than the {MAX_TOTAL_BYTES:,} a "
                           "mirrorlearn file holds; it was not read")


def load_json_bounded(text: str) -> Any:
    """``json.loads`` that refuses, as a ValueError, nesting deeper than ``MAX_JSON_DEPTH`` and numbers too long
    to convert (instead of a RecursionError or a bare int-conversion error)."""
    import re

    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", re.sub(r'"(?:[^"\\]|\\.)*"', "", text)):  # outside strings
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested {deepest} levels deep, more than the {MAX_JSON_DEPTH} allowed")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as err:  # includes int conversions past Python's digit limit
        raise ValueError(f"unreadable JSON ({err})") from None


def read_archive(path: str | os.PathLike, kind: str, max_version: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and validate an archive written by :func:`write_archive`.

    ``kind`` is the expected ``meta["kind"]`` (e.g. ``"mirrorlearn.drift"``); ``max_version`` the newest
    ``meta["format_version"]`` this code understands. ``~`` is expanded.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_dir() and not path.is_file():  # a FIFO or a device would block or never end
        raise ArchiveError(f"{path} is not a regular file (a pipe, socket or device); give the path of a saved file")
    if path.is_file():
        magic = _leading_bytes(path)
        if magic != ZIP_MAGIC and len(magic) == len(ZIP_MAGIC):  # a shorter file is reported as truncated below
            what = {"mirrorlearn.drift": "drift file (.drift)", "mirrorlearn.agent": "saved agent (.npz)"}.get(
                kind, "mirrorlearn file")
            raise ArchiveError(f"{path} is not a {what} written by mirrorlearn (it is not an .npz archive); "
                               "check the path")
    try:
        _check_members(path)
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, SyntaxError, tokenize.TokenError) as err:  # a bad .npy header
        raise ArchiveError(
            f"{path} is not a readable mirrorlearn file (truncated or corrupted: {err}). "
            "Re-create it, or restore it from a backup."
        ) from None
    if META_KEY not in arrays:
        raise ArchiveError(f"{path} has no mirrorlearn metadata; it was not written by mirrorlearn")
    try:
        meta = load_json_bounded(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ArchiveError(f"{path} has corrupted metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        got = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
        raise ArchiveError(f"{path} holds a {got!r}, not a {kind!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:  # JSON true is a Python int
        raise ArchiveError(f"{path}: format_version {version!r} is not a version number (a whole number >= 1); "
                           "the file is corrupted or was not written by mirrorlearn")
    if version > max_version:
        raise ArchiveError(
            f"{path} uses format version {version}, newer than this mirrorlearn understands "
            f"({max_version}); upgrade mirrorlearn (pip install -U mirrorlearn)"
        )
    return meta, arrays
