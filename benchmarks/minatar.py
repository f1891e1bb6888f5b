"""PPO vs DPO on MinAtar (gymnax), >= 5 seeds, mean and standard error: the paper's Figure 7 claim.

    python benchmarks/minatar.py                                 # the issue's budget (about an hour here)
    python benchmarks/minatar.py --timesteps 100000 --seeds 5    # what fits a short CPU session

Both agents use the "minatar" preset (conv torso, purejaxrl's published MinAtar hyperparameters) and
train all seeds in one vmapped, jitted call. The score is the deterministic evaluation return of each
seed's final policy (``--eval-episodes`` episodes each). Prints a table, writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

GAMES = ["Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar"]


def run(algo: str, game: str, timesteps: int, seeds: int, eval_episodes: int) -> dict:
    from agents.estimators import DPO, PPO

    klass = {"ppo": PPO, "dpo": DPO}[algo]
    start = time.perf_counter()
    agent = klass(total_timesteps=timesteps, n_seeds=seeds, seed=0).fit(game)  # all seeds in one vmapped call
    wall = time.perf_counter() - start
    finals = agent.evaluate(n_episodes=eval_episodes, seed=1000)["returns"].mean(axis=1)
    with np.errstate(all="ignore"):
        curve = np.nanmean(agent.history_["episode_return"], axis=0)
    return {"wall_s": wall, "final_returns": finals.tolist(), "curve_t": agent.history_["timesteps"].tolist(),
            "curve_return": [None if not np.isfinite(c) else float(c) for c in curve]}


def mean_se(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--games", nargs="+", default=GAMES)
    p.add_argument("--timesteps", type=int, default=1_000_000)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/minatar.json")
    p.add_argument("--plot", default="docs/figures/envs_minatar.png")
    args = p.parse_args(argv)

    results: dict = {"timesteps": args.timesteps, "seeds": args.seeds, "runs": {}}
    for game in args.games:
        for algo in ("ppo", "dpo"):
            r = run(algo, game, args.timesteps, args.seeds, args.eval_episodes)
            results["runs"][f"{game}/{algo}"] = r
            m, se = mean_se(r["final_returns"])
            print(f"{game:22s} {algo}: {m:7.2f} +- {se:5.2f}   ({r['wall_s']:.0f} s)", flush=True)

    print(f"\n{'game':22s} {'PPO (mean +- s.e.)':>20s} {'DPO (mean +- s.e.)':>20s}  DPO >= PPO?")
    for game in args.games:
        (pm, ps), (dm, ds) = (mean_se(results["runs"][f"{game}/{a}"]["final_returns"]) for a in ("ppo", "dpo"))
        verdict = "yes" if dm - ds >= pm + ps else ("no" if dm + ds < pm - ps else "within s.e.")
        print(f"{game:22s} {pm:12.2f} +- {ps:5.2f} {dm:12.2f} +- {ds:5.2f}  {verdict}")
        results["runs"][f"{game}/verdict"] = verdict
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    _plot(results, args.games, args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return results


def _plot(results, games, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(games), figsize=(4 * len(games), 3.4), squeeze=False)
    for ax, game in zip(axes[0], games, strict=True):
        for algo in ("ppo", "dpo"):
            r = results["runs"][f"{game}/{algo}"]
            y = np.array([np.nan if v is None else v for v in r["curve_return"]], np.float64)
            keep = np.isfinite(y)  # updates in which no episode ended have no return
            ax.plot(np.asarray(r["curve_t"])[keep], y[keep], marker=".", label=algo.upper())
        ax.set_title(f"{game} ({results['seeds']} seeds)")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("training episode return")
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
