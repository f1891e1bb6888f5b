"""Meta-training on two processes (jax.distributed on a loopback coordinator, gloo collectives): the same
drift as one process, one writer, and a lost peer is an error within a bounded time, not a hang."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from drifts import get_drift
from metalearn.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--population", "4", "--timesteps", "256", "--eval-episodes", "2", "--eval-every", "2", "--quiet",
        "--set", "num_envs=4", "num_steps=32", "num_minibatches=2", "update_epochs=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])}


def _launch(args: list[str], devices: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mirrorlearn", "meta-train", *args], cwd=ROOT, env=_env(devices),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    timers = [threading.Timer(timeout, p.kill) for p in procs]  # a hang fails the test instead of the suite
    for t in timers:
        t.start()
    try:
        return [(p.wait(), *p.communicate()) for p in procs]
    finally:
        for t in timers:
            t.cancel()


def _pair(tmp_path: Path, generations: int, out0: Path, out1: Path, port: int) -> list[subprocess.Popen]:
    common = ["--generations", str(generations), *TINY, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
              "--heartbeat-timeout", "10"]
    return [_launch([*common, "--process-id", "0", "--out", str(out0)], devices=1),
            _launch([*common, "--process-id", "1", "--out", str(out1)], devices=1)]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    procs = _pair(tmp, 3, tmp / "run", tmp / "other", _free_port())
    results = _finish(procs, timeout=240)
    single = _finish([_launch(["--generations", "3", *TINY, "--out", str(tmp / "single")], devices=2)], timeout=240)
    return tmp, results, single[0]


@pytest.mark.slow
def test_two_processes_give_the_same_drift_as_one(two_process_run):
    tmp, results, single = two_process_run
    for rc, _out, err in [*results, single]:
        assert rc == 0, err[-2000:]
    two, one = get_drift(tmp / "run" / "drift.drift"), get_drift(tmp / "single" / "drift.drift")
    for x, y in zip(two.params.values(), one.params.values(), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # 2 processes x 1 device = 1 process x 2
    assert load_checkpoint(tmp / "run")["meta"]["fingerprint"]["devices"] == 2


@pytest.mark.slow
def test_only_process_zero_writes(two_process_run):
    tmp, results, _ = two_process_run
    assert not (tmp / "other").exists()  # process 1's --out: not even an empty folder
    assert "process 1 done" in results[1][2] and '"generations": 3' in results[0][1]
    assert "generations" not in results[1][1]  # one summary, from process 0 (gloo prints its own line)


@pytest.mark.slow
def test_a_killed_peer_stops_the_other_with_an_error_naming_it_and_the_run_resumes(tmp_path):
    port = _free_port()
    procs = _pair(tmp_path, 10_000, tmp_path / "run", tmp_path / "run", port)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # wait for two complete generations (the checkpoint after gen 2)
        stored = load_checkpoint(tmp_path / "run") if (tmp_path / "run" / "checkpoint.npz").exists() else None
        if stored is not None and stored["meta"]["generation"] >= 2:
            break
        time.sleep(0.5)
    else:
        for p in procs:
            p.kill()
        pytest.fail("the two processes did not complete two generations")
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    (rc, _, err), = _finish([procs[0]], timeout=90)
    procs[1].wait()
    assert time.monotonic() - killed_at < 60, "process 0 did not stop within a bounded time"
    assert rc not in (0, -signal.SIGKILL), err[-1500:]
    assert "process 1 stopped" in err and "Relaunch all 2 processes" in err, err[-1500:]
    stored = load_checkpoint(tmp_path / "run")  # the last checkpoint is whole
    done = stored["meta"]["generation"]
    assert done >= 2
    # relaunching both with the same settings resumes from it
    results = _finish(_pair(tmp_path, done + 1, tmp_path / "run", tmp_path / "run", _free_port()), timeout=240)
    for rc, _, err in results:
        assert rc == 0, err[-2000:]
    assert load_checkpoint(tmp_path / "run")["meta"]["generation"] == done + 1
