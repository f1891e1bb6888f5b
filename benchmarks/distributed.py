"""Meta-training generations per second on 1 process (all cores as devices) and on 2 processes (jax.distributed,
loopback coordinator, gloo), same settings and same total device count. Prints a table, writes JSON.

    python benchmarks/distributed.py [--generations 6] [--out benchmarks/results/distributed.json]

On one 2-core machine this measures the cost of the cross-process machinery (the coordinator, gathering
fitness through gloo every generation), not a speed-up: both layouts use the same two cores. A gain
needs processes on separate machines (or GPUs), where each brings its own devices.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["--env", "CartPole-v1", "--population", "16", "--timesteps", "16384", "--eval-every", "0", "--quiet"]


def _env(devices: int) -> dict:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes: int, generations: int, total_devices: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        base = [sys.executable, "-m", "mirrorlearn", "meta-train", *SETTINGS, "--generations", str(generations),
                "--out", str(out)]
        start = time.perf_counter()
        if processes == 1:
            procs = [subprocess.Popen(base, cwd=ROOT, env=_env(total_devices), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)]
        else:
            port = _port()
            procs = [subprocess.Popen([*base, "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
                                       "--process-id", str(i)], cwd=ROOT, env=_env(total_devices // processes),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for i in range(processes)]
        errors = [p.communicate()[1] for p in procs]
        wall = time.perf_counter() - start
        if any(p.returncode for p in procs):
            raise SystemExit(f"{processes} process(es) failed:\n" + "\n".join(e[-1500:] for e in errors))
        history = json.loads((out / "history.json").read_text())["history"]
    steady = [h["seconds"] for h in history[1:]]  # generation 1 includes compiling ask/tell
    return {"processes": processes, "devices": total_devices, "generations": generations, "wall_s": wall,
            "s_per_generation": sum(steady) / len(steady), "generations_per_s": len(steady) / sum(steady)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--out", default="benchmarks/results/distributed.json")
    args = p.parse_args(argv)
    rows = [run(1, args.generations), run(2, args.generations)]
    print(f"{'processes':>9} {'devices':>7} {'s/generation':>13} {'generations/s':>14} {'wall s':>8}")
    for r in rows:
        print(f"{r['processes']:>9} {r['devices']:>7} {r['s_per_generation']:>13.2f} {r['generations_per_s']:>14.3f} "
              f"{r['wall_s']:>8.1f}")
    print(f"2 processes / 1 process, generations per second: {rows[1]['generations_per_s'] / rows[0]['generations_per_s']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": SETTINGS, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
