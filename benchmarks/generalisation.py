"""Does a drift transfer? PPO, DPO and learned drifts on the meta-training environments at 1x and 4x the
inner budget and on held-out environments, each with its family's own preset. Prints one table, writes
JSON and a learning-curve picture (one panel per cell).

Each cell is ``ENV@TIMESTEPS`` (``ENV@TIMESTEPS@FIELD=VALUE,...`` adds PPOConfig overrides), trained
with ``--seeds`` seeds in one vmapped call per drift and scored by the mean of ``--episodes``
deterministic episodes per seed. A drift's normalised score on a cell is ``(R - random) / (PPO - random)``
(0 = a random policy, 1 = PPO; the scale floored as in meta-training), with its standard error over
seeds; the summary rows average the held-out cells. The study file is resumable: runs already in it
are kept, so a new drift adds its rows without re-running the others.

    python benchmarks/generalisation.py --resume                       # the docs/results.md table
    python benchmarks/generalisation.py --drift lpo-new=runs/x/drift.drift --resume
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# benchmarks/metalearn.py is named like the package: keep this folder off the import path, load _study by file.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _load_study():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_study", Path(__file__).resolve().parent / "_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_study = _load_study()
add_study_args, finite_or_none, mean_se = _study.add_study_args, _study.finite_or_none, _study.mean_se
open_study, plot_path, save_study = _study.open_study, _study.plot_path, _study.save_study

DEFAULT_OUT = "benchmarks/results/generalisation.json"
DOCS_FIGURE = "docs/img/generalisation.png"
DEFAULT_DRIFTS = ["ppo", "dpo", "lpo-cartpole=lpo-cartpole"]
# The meta-training environments at the inner budget's low end (1x) and 4x it ...
TRAIN_CELLS = ["CartPole-v1@16384", "CartPole-v1@65536", "Acrobot-v1@16384", "Acrobot-v1@65536"]
# ... and environments no drift here was meta-trained on, at budgets where PPO is between random and solved.
HELD_OUT_CELLS = ["Catch-bsuite@16384", "DeepSea-bsuite@16384", "FourRooms-misc@32768",
                  "MountainCarContinuous-v0@131072", "Pendulum-v1@200000",
                  "Breakout-MinAtar@500000@network=mlp"]


def parse_cell(cell: str) -> tuple[str, int, dict]:
    """``ENV@TIMESTEPS[@FIELD=VALUE,...]`` as ``(env id, timesteps, overrides)``."""
    from agents.config import parse_override

    parts = cell.split("@")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise SystemExit(f"cell {cell!r}: expected ENV@TIMESTEPS or ENV@TIMESTEPS@FIELD=VALUE,...")
    overrides = dict(parse_override(item) for item in parts[2].split(",")) if len(parts) == 3 else {}
    return parts[0], int(parts[1]), overrides


def label_of(spec: str) -> str:
    return spec.split("=", 1)[0]


def run_cell(spec: str, cell: str, seeds: int, episodes: int, seed: int) -> dict:
    env_id, steps, overrides = parse_cell(cell)
    start = time.perf_counter()
    agent = _study.make_agent(spec, total_timesteps=steps, n_seeds=seeds, seed=seed, **overrides).fit(env_id)
    wall = time.perf_counter() - start
    finals = agent.evaluate(n_episodes=episodes, seed=seed + 1000)["returns"].mean(axis=1)
    per_seed = np.asarray(agent.history_["episode_return"], np.float64)  # (seeds, updates)
    with np.errstate(all="ignore"), warnings.catch_warnings():  # updates where no seed saw an episode end: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        curve = np.nanmean(per_seed, axis=0)
        curve_se = np.nanstd(per_seed, axis=0) / np.sqrt(np.maximum(1, np.isfinite(per_seed).sum(axis=0)))
    return {"wall_s": wall, "final_returns": finals.tolist(), "curve_t": agent.history_["timesteps"].tolist(),
            "curve_return": finite_or_none(curve), "curve_se": finite_or_none(curve_se)}


def random_return(env_id: str, seed: int) -> float:
    import jax

    from agents.envs import make_env
    from metalearn.inner import random_policy_return

    return random_policy_return(make_env(env_id), 256, jax.random.PRNGKey(seed))


def normalised(results: dict, cell: str, label: str) -> tuple[float, float] | None:
    """A drift's normalised score on a cell and its standard error (None when a run is missing)."""
    from metalearn.inner import normalisation_scale

    run, ppo = results["runs"].get(f"{cell}/{label}"), results["runs"].get(f"{cell}/ppo")
    if run is None or ppo is None:
        return None
    rand = results["random"][parse_cell(cell)[0]]
    scale = normalisation_scale(rand, mean_se(ppo["final_returns"])[0])
    m, se = mean_se(run["final_returns"])
    return (m - rand) / scale, se / scale


def versus_ppo(results: dict, cell: str, label: str) -> tuple[float, float] | None:
    """``(drift - PPO) / scale`` on a cell with the standard error of that difference (independent seeds)."""
    from metalearn.inner import normalisation_scale

    run, ppo = results["runs"].get(f"{cell}/{label}"), results["runs"].get(f"{cell}/ppo")
    if run is None or ppo is None:
        return None
    rand = results["random"][parse_cell(cell)[0]]
    (m, se), (mp, sep) = mean_se(run["final_returns"]), mean_se(ppo["final_returns"])
    scale = normalisation_scale(rand, mp)
    return (m - mp) / scale, math.hypot(se, sep) / scale


def summary(results: dict, cells: list[str], label: str) -> dict | None:
    """Mean normalised score over ``cells``, its difference from PPO, and the cells where the drift trails
    PPO by more than one standard error of the difference."""
    scores = [normalised(results, c, label) for c in cells]
    diffs = [versus_ppo(results, c, label) for c in cells]
    if not cells or any(s is None for s in scores):
        return None
    n = len(cells)
    return {"score": sum(s[0] for s in scores) / n, "score_se": math.sqrt(sum(s[1] ** 2 for s in scores)) / n,
            "vs_ppo": sum(d[0] for d in diffs) / n, "vs_ppo_se": math.sqrt(sum(d[1] ** 2 for d in diffs)) / n,
            "worse_than_ppo": [c for c, d in zip(cells, diffs, strict=True) if d[0] < -d[1]]}


def print_table(results: dict, labels: list[str], train: list[str], held: list[str]) -> None:
    width = max(len(lab) for lab in labels) + 2
    head = f"{'cell':<40}" + "".join(f"{lab:>{width + 14}}" for lab in labels)
    print(head)
    for role, cells in (("train", train), ("held-out", held)):
        for cell in cells:
            row = f"{(role + ' ' + cell)[:39]:<40}"
            for lab in labels:
                run = results["runs"].get(f"{cell}/{lab}")
                if run is None:
                    row += f"{'-':>{width + 14}}"
                    continue
                m, se = mean_se(run["final_returns"])
                cell_text = f"{m:.2f} ± {se:.2f}"
                row += f"{cell_text:>{width + 14}}"
            print(row)
    for role, cells in (("train, normalised", train), ("held-out, normalised", held)):
        row = f"{role:<40}"
        for lab in labels:
            s = summary(results, cells, lab)
            cell_text = "-" if s is None else f"{s['score']:.3f} ± {s['score_se']:.3f}"
            row += f"{cell_text:>{width + 14}}"
        print(row)
    for lab in labels:
        if lab == "ppo":
            continue
        s = summary(results, held, lab)
        if s is not None:
            verdict = ("beats PPO by > 2 s.e." if s["vs_ppo"] > 2 * s["vs_ppo_se"] else
                       "trails PPO by > 2 s.e." if s["vs_ppo"] < -2 * s["vs_ppo_se"] else "within 2 s.e. of PPO")
            worse = s["worse_than_ppo"] + (summary(results, train, lab) or {"worse_than_ppo": []})["worse_than_ppo"]
            print(f"{lab}: held-out vs PPO {s['vs_ppo']:+.3f} ± {s['vs_ppo_se']:.3f} ({verdict}); "
                  f"more than 1 s.e. below PPO on: {', '.join(worse) or 'none'}")


def plot(results: dict, labels: list[str], cells: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    styles = ["-", "--", "-.", ":"]  # equal curves (two drifts at a task's maximum) stay visible
    for ax, cell in zip(axes.flat, cells, strict=False):
        for i, lab in enumerate(labels):
            run = results["runs"].get(f"{cell}/{lab}")
            if run is None:
                continue
            t = np.asarray(run["curve_t"], np.float64)
            y = np.array([np.nan if v is None else v for v in run["curve_return"]], np.float64)
            se = np.array([np.nan if v is None else v for v in run.get("curve_se", [None] * len(y))], np.float64)
            ax.plot(t, y, styles[i % len(styles)], color=f"C{i}", label=lab, lw=1.4)
            ax.fill_between(t, y - se, y + se, color=f"C{i}", alpha=0.15, lw=0)
        env_id, steps, _ = parse_cell(cell)
        ax.set_title(f"{env_id}, {steps:,} steps" + ("  (train)" if cell in TRAIN_CELLS else ""), fontsize=9)
        ax.set_xlabel("environment steps", fontsize=8)
        ax.set_ylabel("training return (mean ± s.e.)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--drift", action="append", default=None, metavar="LABEL=SPEC",
                   help=f"a drift to compare (repeat; 'ppo', 'dpo' or LABEL=any get_drift spec); PPO is always "
                   f"included. Default: {' '.join(DEFAULT_DRIFTS)}")
    p.add_argument("--train-cell", action="append", default=None, help=f"default: {' '.join(TRAIN_CELLS)}")
    p.add_argument("--held-out-cell", action="append", default=None, help=f"default: {' '.join(HELD_OUT_CELLS)}")
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table-only", action="store_true", help="print the table and picture of --out, train nothing")
    add_study_args(p, DEFAULT_OUT, DOCS_FIGURE)
    args = p.parse_args(argv)
    specs = args.drift or DEFAULT_DRIFTS
    if "ppo" not in specs:
        specs = ["ppo", *specs]
    labels = list(dict.fromkeys(label_of(s) for s in specs))
    train, held = args.train_cell or TRAIN_CELLS, args.held_out_cell or HELD_OUT_CELLS
    settings = {"seeds": args.seeds, "episodes": args.episodes, "seed": args.seed}
    results = open_study(args.out, settings, args.resume or args.table_only, args.overwrite)
    results.setdefault("random", {})
    if not args.table_only:
        for cell in train + held:
            env_id = parse_cell(cell)[0]
            if env_id not in results["random"]:
                results["random"][env_id] = random_return(env_id, args.seed)
            for spec in specs:
                key = f"{cell}/{label_of(spec)}"
                if key in results["runs"]:
                    continue
                results["runs"][key] = {"spec": spec, **run_cell(spec, cell, args.seeds, args.episodes, args.seed)}
                m, se = mean_se(results["runs"][key]["final_returns"])
                print(f"{key:<60} {m:9.2f} ± {se:<7.2f} ({results['runs'][key]['wall_s']:.0f} s)", flush=True)
                save_study(args.out, results)
    results["summary"] = {lab: {"train": summary(results, train, lab), "held_out": summary(results, held, lab)}
                          for lab in labels}
    save_study(args.out, results)
    print_table(results, labels, train, held)
    figure = args.plot or plot_path(args.out, DEFAULT_OUT, DOCS_FIGURE)
    plot(results, labels, train + held, figure)
    print(f"wrote {args.out} and {figure}")
    return results


if __name__ == "__main__":
    main()
