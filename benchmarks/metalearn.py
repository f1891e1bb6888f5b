"""Meta-training measurements. Prints a table and writes JSON.

``speed``:      seconds per generation vs population size, and the ES overhead (ask/tell, scoring,
                checkpoint) relative to the inner training alone (target <= 10%).
``lpo-vs-ppo``: a meta-trained drift vs its PPO initialisation on several environments, n seeds each,
                mean and standard error of the final deterministic evaluation return.

    python benchmarks/metalearn.py speed --populations 8 16 32 64 --timesteps 16384 --out benchmarks/results/metalearn_speed.json
    python benchmarks/metalearn.py lpo-vs-ppo --drift drifts/data/lpo.drift --out benchmarks/results/lpo_vs_ppo.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# This file is named like the package it measures: keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def speed(populations, timesteps: int, generations: int, env: str) -> list[dict]:
    from agents.estimators import PPO
    from metalearn import MetaTrainer

    rows = []
    for pop in populations:
        with tempfile.TemporaryDirectory() as tmp:
            mt = MetaTrainer(envs=[env], inner=PPO(total_timesteps=timesteps), population_size=pop,
                             generations=generations + 1, eval_every=0, checkpoint_dir=tmp, progress=False)
            mt.fit()
        hist = mt.history_[1:]  # generation 0 includes compiling ask/tell
        total = float(np.mean([h["seconds"] for h in hist]))
        inner = float(np.mean([h["inner_seconds"] for h in hist]))
        # the checkpoint is written after `seconds` is measured: time it separately
        rows.append({"population": pop, "timesteps": timesteps, "s_per_gen": total, "inner_s_per_gen": inner,
                     "es_overhead_pct": 100.0 * (total - inner) / inner,
                     "inner_steps_per_s": pop * timesteps / inner})
        r = rows[-1]
        print(f"{pop:>4} {r['s_per_gen']:>9.2f} {r['inner_s_per_gen']:>9.2f} {r['es_overhead_pct']:>8.1f}% "
              f"{r['inner_steps_per_s']:>12,.0f}", flush=True)
    return rows


def lpo_vs_ppo(drift_path: str, envs: dict, n_seeds: int, n_episodes: int) -> list[dict]:
    from agents.estimators import MirrorAgent
    from drifts import Drift, lpo

    learned = Drift.load(drift_path)
    init = lpo(hidden=int(learned.kwargs.get("hidden", 128)), temporal=learned.temporal)
    rows = []
    for env, steps in envs.items():
        row = {"env": env, "timesteps": steps, "n_seeds": n_seeds}
        for name, drift in (("lpo_init_ppo", init), ("lpo_meta", learned)):
            t0 = time.perf_counter()
            # one seed per fit: a vmapped batch of seeds runs a batched LAPACK QR (orthogonal init) that can
            # wedge XLA:CPU on small machines (see metalearn.inner); the compiled function is reused.
            per_seed = np.array([
                MirrorAgent(drift=drift, total_timesteps=steps, seed=1000 + i).fit(env).evaluate(
                    n_episodes=n_episodes, seed=7)["mean_return"] for i in range(n_seeds)])
            row[name] = {"mean": float(per_seed.mean()), "sem": float(per_seed.std(ddof=1) / np.sqrt(n_seeds)),
                         "per_seed": per_seed.tolist(), "seconds": time.perf_counter() - t0}
        a, b = row["lpo_init_ppo"], row["lpo_meta"]
        print(f"{env:<16} {steps:>8} {a['mean']:>9.1f} ± {a['sem']:<6.1f} {b['mean']:>9.1f} ± {b['sem']:<6.1f}", flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--populations", type=int, nargs="+", default=[8, 16, 32, 64])
    s.add_argument("--timesteps", type=int, default=16_384)
    s.add_argument("--generations", type=int, default=2)
    s.add_argument("--env", default="CartPole-v1")
    s.add_argument("--out", default="benchmarks/results/metalearn_speed.json")
    e = sub.add_parser("lpo-vs-ppo")
    e.add_argument("--drift", default="drifts/data/lpo.drift")
    e.add_argument("--env", nargs="+", default=["CartPole-v1:16384", "CartPole-v1:65536", "Acrobot-v1:65536",
                                                "Catch-bsuite:16384"], help="ENV:TIMESTEPS")
    e.add_argument("--seeds", type=int, default=8)
    e.add_argument("--episodes", type=int, default=16)
    e.add_argument("--out", default="benchmarks/results/lpo_vs_ppo.json")
    args = p.parse_args(argv)
    if args.cmd == "speed":
        print(f"{'pop':>4} {'s/gen':>9} {'inner s':>9} {'ES ovh':>9} {'steps/s':>12}")
        rows = speed(args.populations, args.timesteps, args.generations, args.env)
    else:
        print(f"{'env':<16} {'steps':>8} {'PPO-init LPO':>18} {'meta-trained LPO':>18}")
        rows = []
        for spec in args.env:
            name, _, steps = spec.rpartition(":")
            rows += lpo_vs_ppo(args.drift, {name: int(steps)}, args.seeds, args.episodes)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": args.cmd, "args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
