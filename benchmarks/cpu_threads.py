"""XLA:CPU's thread pool size against our small computations: one thread vs JAX's default, side by side.

    .venv/bin/python benchmarks/cpu_threads.py              # prints a table, writes JSON

Each case runs in its own subprocess (the pool is sized once, when JAX's backend starts), first with
JAX's default pool (one thread per core) and then with ``agents.runtime.set_cpu_threads(1)``:

* ``halfcheetah learner``: one PPO update of ``PRESETS["mujoco:HalfCheetah"]`` (20 epochs x 8
  minibatches of 64 through a 256x256 actor-critic) on a fixed random rollout; median of ``--repeats``
  jitted calls after a warm-up;
* ``cartpole training``: the whole jitted training scan of the CartPole default (4 envs x 128 steps,
  one seed, ``--timesteps``), best of 3 runs, and its compile seconds.

The ratio column is default / one thread (above 1: one thread is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _study import save_study

ROOT = Path(__file__).resolve().parent.parent


def worker(case: str, threads: int, repeats: int, timesteps: int) -> dict:
    if threads:
        from agents.runtime import set_cpu_threads

        set_cpu_threads(threads)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from agents import core
    from drifts import ppo

    drift = ppo()
    if case == "cartpole training":
        from agents import PPOConfig, make_env

        train = jax.jit(core.make_train(PPOConfig(total_timesteps=timesteps), make_env("CartPole-v1"), drift))
        key = jax.random.PRNGKey(0)
        t0 = time.perf_counter()
        jax.block_until_ready(train(key, drift.params))
        first = time.perf_counter() - t0
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(train(key, drift.params))
            runs.append(time.perf_counter() - t0)
        return {"compile_s": first - min(runs), "seconds": min(runs), "steps_per_s": timesteps / min(runs)}

    from agents.config import preset
    from agents.envs import ActionSpec, JaxEnv

    config = preset("mujoco:HalfCheetah")
    # HalfCheetah's spaces (17 observations, 6 actions in [-1, 1]): all the learner needs to know.
    env = JaxEnv("", "gymnasium", (17,), ActionSpec("continuous", 0, (6,), (-1.0,) * 6, (1.0,) * 6), None, None, 0)
    learn = jax.jit(core.make_learner(config, env, drift))
    params = core.init_params(config, env, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    shape = (config.num_steps, config.num_envs)

    def normal(*tail):
        return jnp.asarray(rng.standard_normal(shape + tail), jnp.float32)

    zeros = jnp.zeros(shape, jnp.float32)
    traj = core.Transition(normal(17), normal(6), normal() - 5.0, normal(), normal(), zeros, zeros, normal(17), zeros)
    args = (params, core.init_opt_state(config, params), jax.random.PRNGKey(1), traj,
            jnp.zeros((config.num_envs, 17)), core.ObsStats.create((17,)), drift.params, jnp.float32(0.0))
    jax.block_until_ready(learn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(learn(*args))
        times.append(time.perf_counter() - t0)
    return {"update_ms_median": 1e3 * float(np.median(times)), "update_ms_min": 1e3 * min(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15, help="timed learner updates per setting")
    p.add_argument("--timesteps", type=int, default=500_000, help="CartPole training steps")
    p.add_argument("--out", default="benchmarks/results/cpu_threads.json")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        case, threads = args.worker[0], int(args.worker[1])
        print(json.dumps(worker(case, threads, args.repeats, args.timesteps)))
        return

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    rows = []
    for case, metric in (("halfcheetah learner", "update_ms_median"), ("cartpole training", "seconds")):
        results = {}
        for threads in (0, 1):
            cmd = [sys.executable, __file__, "--worker", case, str(threads), "--repeats", str(args.repeats),
                   "--timesteps", str(args.timesteps)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if proc.returncode:
                raise SystemExit(f"{case} with threads={threads} failed:\n{proc.stderr[-2000:]}")
            results[threads] = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"case": case, "threads": "default" if threads == 0 else "1", **results[threads]})
        rows[-1]["speedup"] = results[0][metric] / results[1][metric]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{'case':20s} {'threads':>8s}  measurements")
    for row in rows:
        extra = "  ".join(f"{k} {v:.3g}" for k, v in row.items() if k not in ("case", "threads"))
        print(f"{row['case']:20s} {row['threads']:>8s}  {extra}")
    out = {"cores": cores, "jax": __import__("jax").__version__, "rows": rows}
    save_study(args.out, out)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
