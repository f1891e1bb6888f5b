"""Meta-training on several processes (hosts) with ``jax.distributed``.

Every process runs the same program. After :func:`initialize`, ``jax.devices()`` lists every process's
devices, the population is sharded over all of them (:mod:`metalearn.inner`), and each process makes
the same ES update from the gathered fitness, so all hold the same ES state. Process 0 alone reads
and writes the run folder: it sends the checkpoint it found (or its refusal) to the others, which
need no shared file system and write nothing.

A lost peer is an error, not a hang: the next gather of results fails once the peer's connection
closes (or, for a peer that vanishes without closing it, once the coordinator misses its heartbeats
for ``heartbeat_timeout_s``), and :class:`PeerLostError` names the processes still alive. The last
checkpoint stays whole (writes are atomic), and relaunching every process resumes from it.

On CPUs the cross-process collectives go through gloo (``jax_cpu_collectives_implementation``), which
is how this is tested on one machine: several processes with a loopback coordinator.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_HEARTBEAT_TIMEOUT_S = 30


class PeerLostError(RuntimeError):
    """A process of a multi-process meta-training stopped; the others cannot go on."""


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S,
               initialization_timeout_s: int = 300) -> None:
    """Join (or, as process 0, start) a ``jax.distributed`` cluster; call before any other JAX work.

    With no arguments the cluster is found from the environment, as ``jax.distributed.initialize()``
    does (SLURM, Open MPI, TPU pods, or ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``). CPU collectives use gloo.
    """
    import jax

    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("give all of coordinator_address (--coordinator HOST:PORT), num_processes (--num-processes) "
                         "and process_id (--process-id), or none of them to read the cluster from the environment")
    if num_processes is not None:
        if not isinstance(num_processes, int) or num_processes < 1:
            raise ValueError(f"num_processes must be a positive integer, got {num_processes!r}")
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ValueError(f"process_id must be an integer in [0, {num_processes}), got {process_id!r}")
        if not isinstance(coordinator_address, str) or ":" not in coordinator_address:
            raise ValueError(f"coordinator_address must be HOST:PORT (e.g. 127.0.0.1:5000), got {coordinator_address!r}")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):  # jax reads only the coordinator itself
        num_processes, process_id = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ.get("JAX_PROCESS_ID", "0"))
        coordinator_address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               heartbeat_timeout_seconds=int(heartbeat_timeout_s),
                               initialization_timeout=int(initialization_timeout_s))


def process_index() -> int:
    import jax

    return int(jax.process_index())


def process_count() -> int:
    import jax

    return int(jax.process_count())


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0; the only one without ``jax.distributed``)."""
    return process_index() == 0


def broadcast_bytes(data: bytes | None) -> bytes:
    """Process 0's ``data`` on every process (the others pass None); a no-op on one process."""
    if process_count() == 1:
        return data or b""
    from jax.experimental import multihost_utils

    length = int(multihost_utils.broadcast_one_to_all(np.int64(len(data) if is_writer() else 0)))
    if length == 0:
        return b""
    buffer = np.frombuffer(data, np.uint8) if is_writer() else np.zeros(length, np.uint8)
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer), np.uint8))


def shared_checkpoint(folder: Path | None, load: Any, check: Any) -> tuple[Any, str | None]:
    """``(stored, None)``, the checkpoint process 0 found in ``folder`` (``load(folder)``, None when there is
    none) and ``check(stored)`` accepted, on every process; ``(None, message)`` on every process when process
    0 refused it. Process 0 reads the file; the others get its bytes and read a private copy."""
    from metalearn.checkpoint import checkpoint_path

    if folder is None:
        return None, None
    if process_count() == 1:
        stored = load(folder)
        check(stored)
        return stored, None
    message = b""
    raw = b""
    if is_writer():
        path = checkpoint_path(folder)
        try:
            check(load(folder))  # a corrupted checkpoint or earlier outputs: refused on every process alike
            raw = path.read_bytes() if path.exists() else b""
        except (OSError, ValueError) as err:
            message = str(err).encode()
    message = broadcast_bytes(message if is_writer() else None)
    if message:
        return None, message.decode()
    raw = broadcast_bytes(raw if is_writer() else None)
    if is_writer():
        return load(folder), None
    if not raw:
        return None, None
    with tempfile.TemporaryDirectory(prefix="mirrorlearn-peer-") as tmp:
        checkpoint_path(tmp).write_bytes(raw)
        stored = load(Path(tmp))
    stored["path"] = checkpoint_path(folder)  # messages name the run's file, not the private copy
    return stored, None


def live_processes(timeout_hint_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S) -> list[int] | None:
    """The processes the coordinator still hears from (blocks up to about the heartbeat timeout), or None."""
    try:
        from jax._src import distributed

        client = distributed.global_state.client
        if client is None:
            return None
        return sorted(int(p) for p in client.get_live_nodes(list(range(process_count()))))
    except Exception:  # noqa: BLE001 - the cluster is already broken: report what we can
        return None


def peer_lost(err: BaseException, generation: int, folder: Path | None) -> PeerLostError:
    """The error a surviving process raises when a collective fails because a peer stopped."""
    alive = live_processes()
    everyone = list(range(process_count()))
    lost = [p for p in everyone if alive is not None and p not in alive]
    who = (f"process {', '.join(map(str, lost))} stopped" if lost else "a peer process stopped or cannot be reached")
    kept = (f"; {folder} keeps the checkpoint of generation {generation}" if folder is not None else "")
    return PeerLostError(f"process {process_index()} of {len(everyone)}: {who} during generation {generation + 1} "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:160]}){kept}. Relaunch all "
                         f"{len(everyone)} processes with the same command to resume")
