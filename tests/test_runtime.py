"""agents.runtime.set_cpu_threads: XLA:CPU's pool is sized at backend start, and the process keeps its cores."""

import os
import subprocess
import sys

import jax
import pytest

from agents.runtime import set_cpu_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import os, json
from agents.runtime import set_cpu_threads
before = sorted(os.sched_getaffinity(0))
got = set_cpu_threads(1)
import jax, jax.numpy as jnp
total = float(jax.jit(lambda x: (x @ x).sum())(jnp.ones((64, 64))))
tasks = os.listdir("/proc/self/task")
masks = {sorted(os.sched_getaffinity(int(t))).__repr__() for t in tasks}
pool = sum(open(f"/proc/self/task/{t}/comm").read().startswith("tf_XLAEigen") for t in tasks)
print(json.dumps({"before": before, "got": got, "total": total, "masks": sorted(masks), "pool": pool}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_set_cpu_threads_sizes_the_pool_and_gives_every_core_back():
    import json

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["got"] == 1
    assert out["total"] == 64.0 * 64 * 64
    # every thread (the pool's included) may run on every core the process had before
    assert out["masks"] == [repr(out["before"])]
    if out["pool"]:  # XLA names its pool threads tf_XLAEigen (jaxlib 0.10); only checked where it does
        assert out["pool"] == 1


def test_set_cpu_threads_refuses_once_the_backend_runs():
    jax.devices()
    with pytest.raises(RuntimeError, match="already started.*before any JAX array"):
        set_cpu_threads(1)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "1"])
def test_set_cpu_threads_rejects_non_positive_counts(bad):
    with pytest.raises(ValueError, match="positive number of threads"):
        set_cpu_threads(bad)


def test_progress_bar_rate_counts_all_seeds_and_time_left_excludes_compilation(monkeypatch, capsys):
    import io

    from agents import progress

    clock = iter([100.0, 101.0, 102.0])  # the first callback arrives after a long compile
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    bar = progress.ProgressBar(10 * 512, 512, desc="t", n_seeds=4)
    bar.bar.fp = io.StringIO()
    assert bar.bar.postfix == "status=compiling"
    bar(0, 10.0)
    bar(1, 20.0)  # one update of 512 steps per seed in 1 s: 2,048 steps/s over 4 seeds; 8 updates left
    post = bar.bar.postfix
    assert "steps/s (all seeds)=2,048" in post and "left=0:08" in post and "ret=20.0" in post
    bar.close()
