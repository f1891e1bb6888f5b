"""PPO and DPO (mirrorlearn) vs Stable-Baselines3 PPO on Gymnasium MuJoCo, same budget, one run.

    python benchmarks/mujoco.py                                   # the issue's budget: 1M steps x 3 seeds
    python benchmarks/mujoco.py --timesteps 30000 --seeds 3       # what fits a short CPU session

mirrorlearn trains all seeds in one call (one host vector env of seeds x num_envs sub-envs, jitted
policy and update) with the preset ``fit`` picks: ``mujoco:HalfCheetah`` (RL-Zoo's tuned settings) for
HalfCheetah, the generic "continuous" one (8 envs x 256 steps, obs normalisation, reward scale 0.1)
for Hopper; our PPO uses RL-Zoo's clip range as its drift's ``eps``. Stable-Baselines3 runs its
RL-Zoo MuJoCo hyperparameters (VecNormalize on observations and rewards, one env), one seed after
the other. Both are scored by the same deterministic evaluation (5 episodes per seed) after training.
Prints a table, writes JSON and a learning-curve PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    # This file shares its name with the ``mujoco`` package: run as a script, its folder must not
    # shadow it on sys.path (the repository root goes there instead, for ``agents``).
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    sys.path.append(str(Path(__file__).resolve().parent))  # for _study

from _study import add_study_args, finite_or_none, mean_se, open_study, plot_curves, plot_path, save_study  # noqa: E402

# RL-Zoo (rl-baselines3-zoo hyperparams/ppo.yml) tuned PPO settings for these tasks (v3 entries;
# v5 is the same task with corrected physics details).
SB3_ZOO = {
    "HalfCheetah-v5": dict(batch_size=64, n_steps=512, gamma=0.98, learning_rate=2.0633e-05, ent_coef=0.000401762,
                           clip_range=0.1, n_epochs=20, gae_lambda=0.92, max_grad_norm=0.8, vf_coef=0.58096),
    "Hopper-v5": dict(batch_size=32, n_steps=512, gamma=0.999, learning_rate=9.80828e-05, ent_coef=0.00229519,
                      clip_range=0.2, n_epochs=5, gae_lambda=0.99, max_grad_norm=0.7, vf_coef=0.835671),
}


def run_ours(algo: str, env_id: str, timesteps: int, seeds: int, eval_episodes: int, overrides: dict | None = None) -> dict:
    from agents.estimators import DPO, PPO

    kwargs = dict(overrides or {})
    if algo == "ppo":  # PPO's clip range is its drift's parameter, so not part of the preset
        kwargs["eps"] = SB3_ZOO[env_id]["clip_range"]
    agent = {"ppo": PPO, "dpo": DPO}[algo](total_timesteps=timesteps, n_seeds=seeds, seed=0, **kwargs)
    start = time.perf_counter()
    agent.fit(f"gymnasium:{env_id}")
    train_s = time.perf_counter() - start
    returns = agent.evaluate(n_episodes=eval_episodes, seed=1000)["returns"]  # (seeds, episodes)
    with np.errstate(all="ignore"):
        curve = np.nanmean(agent.history_["episode_return"], axis=0)
    return {"wall_s": train_s, "final_returns": returns.mean(axis=1).tolist(),
            "curve_t": agent.history_["timesteps"].tolist(), "curve_return": finite_or_none(curve)}


def run_sb3(env_id: str, timesteps: int, seeds: list[int], eval_episodes: int) -> dict:
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(int(os.environ.get("SB3_THREADS", os.cpu_count() or 1)))

    class Episodes(BaseCallback):
        def __init__(self):
            super().__init__()
            self.points: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.points.append((self.num_timesteps, float(info["episode"]["r"])))
            return True

    wall, finals, curves, per_seed = 0.0, [], [], []
    for seed in seeds:
        venv = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), gamma=SB3_ZOO[env_id]["gamma"])
        model = SB3PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **SB3_ZOO[env_id],
                       policy_kwargs=dict(log_std_init=-2, ortho_init=False, activation_fn=torch.nn.ReLU,
                                          net_arch=dict(pi=[256, 256], vf=[256, 256])))
        callback = Episodes()
        start = time.perf_counter()
        model.learn(total_timesteps=timesteps, callback=callback)
        seconds = time.perf_counter() - start
        wall += seconds
        venv.training, venv.norm_reward = False, False
        env = gym.make(env_id)
        rets = []
        for ep in range(eval_episodes):
            obs, _ = env.reset(seed=1000 + ep)
            done, total = False, 0.0
            while not done:
                action, _ = model.predict(venv.normalize_obs(obs[None]), deterministic=True)
                obs, reward, terminated, truncated, _ = env.step(action[0])
                total += reward
                done = terminated or truncated
            rets.append(total)
        finals.append(float(np.mean(rets)))
        curves.append(callback.points)
        per_seed.append({"seed": seed, "wall_s": seconds, "final_return": finals[-1]})
    grid = np.linspace(0, timesteps, 21)[1:]
    curve = [_window_mean(curves, t, timesteps / 20) for t in grid]
    return {"wall_s": wall, "final_returns": finals, "curve_t": grid.tolist(), "curve_return": curve,
            "per_seed": per_seed, "seed_curves": [_binned(pts, grid, timesteps / 20) for pts in curves]}


def _binned(points, grid, width):
    return [_window_mean([points], t, width) for t in grid]


def merge_sb3(base: dict, extra: dict) -> dict:
    """One SB3 entry from two runs of different seeds (run apart to use both cores): returns and
    per-seed wall-clock concatenated, the curve averaged over seeds' binned curves."""
    if base["curve_t"] != extra["curve_t"]:
        raise ValueError("the two SB3 runs used different budgets; merge only runs of one --timesteps")
    seed_curves = base.get("seed_curves", [base["curve_return"]]) + extra.get("seed_curves", [extra["curve_return"]])
    per_seed = base.get("per_seed", [{"seed": 0, "wall_s": base["wall_s"], "final_return": base["final_returns"][0]}])
    per_seed = per_seed + extra.get("per_seed", [])
    seen = [s["seed"] for s in per_seed]
    if len(set(seen)) != len(seen):
        raise ValueError(f"seed(s) run twice: {sorted(seen)}")
    curve = [float(np.mean(v)) if (v := [c[i] for c in seed_curves if c[i] is not None]) else None
             for i in range(len(base["curve_t"]))]
    return {"wall_s": base["wall_s"] + extra["wall_s"], "final_returns": base["final_returns"] + extra["final_returns"],
            "curve_t": base["curve_t"], "curve_return": curve, "per_seed": per_seed, "seed_curves": seed_curves}


def _window_mean(curves, t, width):
    vals = [r for pts in curves for (s, r) in pts if t - width < s <= t]
    return float(np.mean(vals)) if vals else None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    p.add_argument("--algos", nargs="+", default=["ppo", "dpo", "sb3"], choices=["ppo", "dpo", "sb3"])
    p.add_argument("--timesteps", type=int, default=1_000_000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sb3-seeds", type=int, default=None, help="seeds for the peer (default: --seeds)")
    p.add_argument("--sb3-first-seed", type=int, default=0,
                   help="the peer's first seed (to run its seeds in separate processes, then --merge-sb3)")
    p.add_argument("--merge-sb3", nargs="+", default=[], metavar="JSON",
                   help="add the SB3 runs of these study files (other seeds, same budget) to --out, then report")
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="config overrides for our agents (e.g. normalize_reward=True); runs are keyed with them")
    p.add_argument("--cpu-threads", type=int, default=1,
                   help="XLA:CPU threads per computation for our agents (agents.runtime.set_cpu_threads; "
                        "0: JAX's default, one per core). One is faster here, and SB3 also runs one torch thread")
    add_study_args(p, "benchmarks/results/mujoco.json", "docs/img/envs_mujoco.png")
    args = p.parse_args(argv)
    if args.plot is None:
        args.plot = plot_path(args.out, p.get_default("out"), "docs/img/envs_mujoco.png")
    sb3_seeds = args.sb3_seeds or args.seeds
    if args.cpu_threads:
        from agents.runtime import set_cpu_threads

        set_cpu_threads(args.cpu_threads)
    from agents.config import parse_override

    try:
        overrides = dict(parse_override(item) for item in args.set)
    except ValueError as err:
        p.error(f"--set: {err}")
    suffix = f" ({', '.join(args.set)})" if args.set else ""

    settings = {"timesteps": args.timesteps, "seeds": args.seeds, "sb3_seeds": sb3_seeds,
                "eval_episodes": args.eval_episodes}
    if args.merge_sb3:  # the study in --out as it is, whatever settings this command line has
        results = json.loads(Path(args.out).read_text())
    else:
        results = open_study(args.out, settings, args.resume, args.overwrite)
    for path in args.merge_sb3:
        other = json.loads(Path(path).read_text())
        if other["settings"]["timesteps"] != results["settings"]["timesteps"]:
            raise SystemExit(f"{path} ran {other['settings']['timesteps']} steps, {args.out} ran "
                             f"{results['settings']['timesteps']}: merge only runs of one budget")
        for key, run in other["runs"].items():
            if key.endswith("/sb3"):
                results["runs"][key] = merge_sb3(results["runs"][key], run) if key in results["runs"] else run
        results["settings"]["sb3_seeds"] = max(len(r["final_returns"]) for k, r in results["runs"].items()
                                               if k.endswith("/sb3"))
        save_study(args.out, results)
    if args.merge_sb3:
        args.algos = []
    for env_id in args.envs:
        for algo in args.algos:
            key = f"{env_id}/{algo}" + (suffix if algo != "sb3" else "")
            if key in results["runs"]:
                continue
            print(f"{env_id} {algo} ...", flush=True)
            if algo == "sb3":
                seeds = list(range(args.sb3_first_seed, args.sb3_first_seed + sb3_seeds))
                r = run_sb3(env_id, args.timesteps, seeds, args.eval_episodes)
            else:
                r = run_ours(algo, env_id, args.timesteps, args.seeds, args.eval_episodes, overrides)
            results["runs"][key] = r
            save_study(args.out, results)
            m, se = mean_se(r["final_returns"])
            print(f"  wall {r['wall_s']:.1f}s  return {m:.1f} +- {se:.1f}", flush=True)

    print(f"\n{'env':16s} {'algo':5s} {'seeds':>5s} {'wall-clock s':>13s} {'per seed s':>11s} "
          f"{'final return (mean +- s.e.)':>30s}")
    for key, r in results["runs"].items():
        env_id, algo = key.split("/")
        m, se = mean_se(r["final_returns"])
        n = len(r["final_returns"])
        print(f"{env_id:16s} {algo:5s} {n:5d} {r['wall_s']:13.1f} {r['wall_s'] / n:11.1f} {m:22.1f} +- {se:.1f}")
    settings = results["settings"]
    plot_curves(results, [e for e in args.envs if any(k.startswith(e + "/") for k in results["runs"])],
                lambda env_id: f"{env_id} (ours {settings['seeds']} seeds, SB3 {settings['sb3_seeds']})", args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return results


if __name__ == "__main__":
    main()
