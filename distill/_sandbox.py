"""Run a sympy job in a forked, time- and memory-limited child process.

sympy's ``simplify``/``integrate`` can take minutes and tens of GiB on a large genetic-programming
expression (measured here: 22 GiB RSS for the symbolic check of one ~100-node DPO fit). A child
process turns that into a clean "gave up" instead of a killed session. Jobs exchange *text* (sympy's
``sstr``), which the parent reads back only through the safe parser of :mod:`drifts.symbolic`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from collections.abc import Callable

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MEMORY_BYTES = 3 * 2**30


def _address_space_bytes() -> int:
    """This process's virtual size (Linux ``/proc``); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _limit_new_memory(memory: int) -> None:
    """Let this (forked) process map at most ``memory`` more bytes than it inherited.

    The limit counts address space, and a child forked from a process that has run JAX inherits
    gigabytes of it (reserved arenas, compiled code): an absolute 3 GiB cap made every sympy job that
    needed a fresh mapping fail with MemoryError there, and the caller silently lost its candidates.
    """
    import resource

    limit = _address_space_bytes() + memory
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:  # never loosen a limit the user set
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _child(job: Callable, text: str, memory: int, conn) -> None:
    try:
        _limit_new_memory(memory)
        conn.send(("ok", job(text)))
    except BaseException as err:  # noqa: BLE001 - report whatever stopped the job
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


class SandboxJob:
    """A running child; :meth:`result` waits (up to the timeout from the start) and cleans up."""

    def __init__(self, proc, conn, timeout: float):
        import time

        self._proc, self._conn = proc, conn
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout

    def result(self) -> tuple[str, object]:
        import time

        try:
            if self._conn.poll(max(0.0, self._deadline - time.monotonic())):
                return self._conn.recv()
            return "error", f"gave up after {self._timeout:.0f} s"
        except EOFError:
            return "error", "the child process died (out of memory?)"
        finally:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
            self._conn.close()


def start_sandboxed(job: Callable[[str], object], text: str, timeout: float = DEFAULT_TIMEOUT_S,
                    memory: int = DEFAULT_MEMORY_BYTES) -> SandboxJob:
    """Start ``job(text)`` in a forked child that may map ``memory`` more bytes; collect with ``.result()``."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(job, text, memory, child), daemon=True)
    with warnings.catch_warnings():
        # The child only runs sympy (no JAX calls); a lock inherited mid-use is caught by the timeout.
        warnings.filterwarnings("ignore", message=".*os.fork.*", category=RuntimeWarning)
        proc.start()
    child.close()
    return SandboxJob(proc, parent, timeout)


def run_sandboxed(job: Callable[[str], object], text: str, timeout: float = DEFAULT_TIMEOUT_S,
                  memory: int = DEFAULT_MEMORY_BYTES) -> tuple[str, object]:
    """``("ok", job(text))`` or ``("error", reason)``; the child is killed after ``timeout`` seconds."""
    return start_sandboxed(job, text, timeout, memory).result()
