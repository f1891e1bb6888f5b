"""How many CPU threads XLA runs one computation on (set before JAX's CPU backend starts).

XLA:CPU executes a computation on a pool of intra-op threads, one per core the process may run on,
counted from the CPU affinity of the thread that starts the backend. For this project's small
networks, spreading one computation over two cores costs more in hand-offs than it gains: on the
2-core CPU here, HalfCheetah's learner update (160 minibatch steps of a 256x256 actor-critic) takes
~120-130 ms with a one-thread pool against ~200-280 ms with the default two (3 runs each, median of
15 updates), and one CartPole seed trains at 184k instead of 162k steps/s
(``benchmarks/cpu_threads.py``). Seeds sharded over several host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``) share the pool, so 8 seeds on 2 devices need
two threads (410k steps/s, against 215k with one). So a one-thread pool pays for single-device runs
(host-stepped Gymnasium training above all), not for sharded ones.
"""

from __future__ import annotations

import os


def set_cpu_threads(n: int) -> int:
    """Start JAX's CPU backend with ``n`` intra-op threads; returns the pool size it got.

    Must run before anything starts a JAX backend (the first ``jax.devices()``, array or jitted call).
    It narrows this thread's CPU affinity to ``n`` cores while the backend starts (XLA sizes its pool
    from it), then restores every thread's affinity, so the process may still use every core (the
    Gymnasium environments and the Python rollout loop run beside the pool). Linux only: elsewhere it
    changes nothing and returns the core count.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_cpu_threads needs a positive number of threads, got {n!r}")
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise RuntimeError(
            "JAX's backend has already started, so its CPU thread pool is fixed for this process. "
            "Call agents.runtime.set_cpu_threads(...) first, before any JAX array or computation is made."
        )
    if not hasattr(os, "sched_setaffinity"):
        return os.cpu_count() or 1
    allowed = os.sched_getaffinity(0)
    n = min(n, len(allowed))
    os.sched_setaffinity(0, set(sorted(allowed)[:n]))
    try:
        import jax

        jax.devices()
    finally:
        os.sched_setaffinity(0, allowed)
        # The pool's threads inherited the narrow mask; let them (and any other thread) move again.
        for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ():
            try:
                os.sched_setaffinity(int(tid), allowed)
            except OSError:  # a thread that ended meanwhile
                pass
    return n
