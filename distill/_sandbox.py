"""Run a sympy job in a forked, time- and memory-limited child process.

sympy's ``simplify``/``integrate`` can take minutes and tens of GiB on a large genetic-programming
expression (measured here: 22 GiB RSS for the symbolic check of one ~100-node DPO fit). A child
process turns that into a clean "gave up" instead of a killed session. Jobs exchange *text* (sympy's
``sstr``), which the parent reads back only through the safe parser of :mod:`drifts.symbolic`.
"""

from __future__ import annotations

import multiprocessing as mp
import warnings
from collections.abc import Callable

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MEMORY_BYTES = 3 * 2**30


def _child(job: Callable, text: str, memory: int, conn) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
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
    """Start ``job(text)`` in a forked child limited to ``memory`` bytes; collect with ``.result()``."""
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
