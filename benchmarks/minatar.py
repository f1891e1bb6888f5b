"""PPO vs DPO (or any drifts) on MinAtar (gymnax), >= 5 seeds, mean and standard error.

    python benchmarks/minatar.py --timesteps 300000 --seeds 5       # the study in docs/results.md
    python benchmarks/minatar.py --resume ...                         # finish a stopped study
    python benchmarks/minatar.py --games Breakout-MinAtar --drifts lpo distilled=my.drift \\
        --out benchmarks/results/minatar_distilled.json                # a learned drift vs its distillation
    python benchmarks/minatar.py --merge a.json b.json --out ab.json  # one study from runs made apart

Every agent uses the "minatar" preset (conv torso, purejaxrl's published MinAtar hyperparameters) and
trains all seeds in one vmapped, jitted call. ``--drifts`` entries are ``ppo``, ``dpo`` or
``label=spec`` with any ``drifts.get_drift`` spec (a name, a drift file, an expression). The score is
the deterministic evaluation return of each seed's final policy (``--eval-episodes`` each); each
seed's training return over its last 10% of updates with finished episodes is kept too
(``train_returns``: less noisy than a few deterministic episodes, where one stuck policy scores 0).
Each run is written to the JSON file as it finishes; prints a table, writes a PNG.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _study import add_study_args, finite_or_none, make_agent, mean_se, open_study, plot_curves, plot_path, save_study

GAMES = ["Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar"]



def _late_mean(returns: np.ndarray) -> float:
    """Mean of the last 10% of a seed's updates that saw episodes end (NaN if none did).

    Counted over updates with a finished episode, not over all updates: Freeway's episodes all last
    2,500 steps and end together, so most updates (the last 10% of a 300k-step run included) see none.
    """
    finite = returns[np.isfinite(returns)]
    return float(finite[-max(1, len(finite) // 10):].mean()) if len(finite) else float("nan")


DOCS_FIGURE = "docs/img/envs_minatar.png"


def run(spec: str, game: str, timesteps: int, seeds: int, eval_episodes: int, seed: int = 0) -> dict:
    start = time.perf_counter()
    agent = make_agent(spec, total_timesteps=timesteps, n_seeds=seeds, seed=seed).fit(game)  # one vmapped call
    wall = time.perf_counter() - start
    finals = agent.evaluate(n_episodes=eval_episodes, seed=1000)["returns"].mean(axis=1)
    per_seed = np.asarray(agent.history_["episode_return"], np.float64)  # (seeds, updates), NaN: no episode ended
    with np.errstate(all="ignore"):
        curve = np.nanmean(per_seed, axis=0)
    train_returns = np.array([_late_mean(row) for row in per_seed])
    return {"wall_s": wall, "final_returns": finals.tolist(), "train_returns": finite_or_none(train_returns),
            "curve_t": agent.history_["timesteps"].tolist(), "curve_return": finite_or_none(curve)}


def merge_studies(studies: list[dict]) -> dict:
    """One study from several run apart: other drifts (one process per drift), or other seed batches
    (``--seed``) of the same drift, whose seeds are joined. Refuses what cannot be pooled: other
    budgets or evaluation episodes, or the same drift's batch twice."""
    first = studies[0]["settings"]
    for study in studies[1:]:
        for name in ("timesteps", "eval_episodes"):
            if study["settings"][name] != first[name]:
                raise ValueError(f"cannot merge studies with different {name}: {first[name]} and {study['settings'][name]}")
    runs: dict[str, dict] = {}
    batches: dict[str, list] = {}
    for study in studies:
        seed = study["settings"].get("seed", 0)
        for key, run in study["runs"].items():
            if not isinstance(run, dict):  # a verdict: recomputed over the merged seeds
                continue
            if seed in batches.setdefault(key, []):
                raise ValueError(f"{key} has seed batch {seed} twice; run another batch with --seed")
            batches[key].append(seed)
            if key not in runs:
                runs[key] = {**run, "wall_s": [run["wall_s"]], "seed_batches": [seed]}
                continue
            merged = runs[key]
            if merged["curve_t"] != run["curve_t"]:
                raise ValueError(f"{key}: the batches logged different updates; were they run with other settings?")
            n_old, n_new = len(merged["final_returns"]), len(run["final_returns"])
            old = np.array([np.nan if v is None else v for v in merged["curve_return"]], np.float64)
            new = np.array([np.nan if v is None else v for v in run["curve_return"]], np.float64)
            with np.errstate(all="ignore"):  # a seed-weighted mean over the batches that have a point
                curve = np.nansum([old * n_old, new * n_new], axis=0) / (np.isfinite(old) * n_old + np.isfinite(new) * n_new)
            merged.update(final_returns=merged["final_returns"] + run["final_returns"],
                          train_returns=merged["train_returns"] + run["train_returns"],
                          curve_return=finite_or_none(curve), wall_s=merged["wall_s"] + [run["wall_s"]],
                          seed_batches=merged["seed_batches"] + [seed])
    drifts = list(dict.fromkeys(d for study in studies for d in study["settings"]["drifts"]))
    seeds = sorted({len(run["final_returns"]) for run in runs.values()})
    settings = {"timesteps": first["timesteps"], "seeds": seeds[0] if len(seeds) == 1 else seeds,
                "eval_episodes": first["eval_episodes"], "drifts": drifts,
                "merged_from": [study["settings"] for study in studies]}
    return {"settings": settings, "runs": runs}


def verdict(first: list, second: list) -> str:
    """'yes' when the second's mean exceeds the first's by more than both standard errors."""
    (m1, s1), (m2, s2) = mean_se(first), mean_se(second)
    return "yes" if m2 - s2 >= m1 + s1 else ("no" if m2 + s2 < m1 - s1 else "within s.e.")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--games", nargs="+", default=GAMES)
    p.add_argument("--drifts", nargs="+", default=["ppo", "dpo"])
    p.add_argument("--timesteps", type=int, default=300_000)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0,
                   help="base seed of the vmapped batch: another value gives another, independent batch of --seeds runs")
    p.add_argument("--merge", nargs="+", metavar="STUDY", help="write one study (--out) from these, run apart, "
                   "instead of training: other drifts, or other --seed batches of a drift, whose seeds are joined")
    add_study_args(p, "benchmarks/results/minatar.json", DOCS_FIGURE)
    args = p.parse_args(argv)
    if args.merge:
        return _write_merged(args, p.get_default("out"))

    labels = [d.split("=", 1)[0] for d in args.drifts]
    settings = {"timesteps": args.timesteps, "seeds": args.seeds, "eval_episodes": args.eval_episodes,
                "drifts": args.drifts}
    if args.seed:  # only when set, so that studies written before the flag existed still resume
        settings["seed"] = args.seed
    if args.plot is None:
        args.plot = plot_path(args.out, p.get_default("out"), DOCS_FIGURE)
    results = open_study(args.out, settings, args.resume, args.overwrite)
    for game in args.games:
        for spec, label in zip(args.drifts, labels, strict=True):
            key = f"{game}/{label}"
            if key in results["runs"]:
                continue
            r = results["runs"][key] = run(spec, game, args.timesteps, args.seeds, args.eval_episodes, args.seed)
            save_study(args.out, results)
            m, se = mean_se(r["final_returns"])
            print(f"{game:22s} {label}: {m:7.2f} +- {se:5.2f}   ({r['wall_s']:.0f} s)", flush=True)

    # The verdict compares the first drift with the last; a one-drift run (one side of a study split
    # over processes or machines) has nothing to compare, so it gets none.
    first, second = labels[0], labels[-1]
    compare = len(labels) > 1
    print(f"\n{'game':22s} " + " ".join(f"{lab + ' (mean +- s.e.)':>22s}" for lab in labels)
          + (f"  {second} >= {first}?" if compare else ""))
    for game in args.games:
        runs = [results["runs"][f"{game}/{lab}"]["final_returns"] for lab in labels]
        cells = " ".join(f"{m:14.2f} +- {s:5.2f}" for m, s in map(mean_se, runs))
        if compare:
            results["runs"][f"{game}/verdict"] = verdict(runs[0], runs[-1])
        print(f"{game:22s} {cells}" + (f"  {results['runs'][f'{game}/verdict']}" if compare else ""))
    save_study(args.out, results)
    plot_curves(results, args.games, lambda game: f"{game} ({args.seeds} seeds)", args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return results


def _write_merged(args, default_out: str) -> dict:
    if args.out == default_out or args.resume:
        raise SystemExit("--merge needs its own --out (not the default study) and no --resume")
    studies = [json.loads(Path(path).read_text()) for path in args.merge]
    try:
        results = merge_studies(studies)
    except ValueError as err:
        raise SystemExit(f"--merge: {err}") from None
    open_study(args.out, results["settings"], resume=False, overwrite=args.overwrite)  # refuses to replace a study
    games = list(dict.fromkeys(key.split("/", 1)[0] for key in results["runs"]))
    for game in games:
        labels = [key.split("/", 1)[1] for key in results["runs"] if key.startswith(game + "/")]
        first = mean_se(results["runs"][f"{game}/{labels[0]}"]["final_returns"])[0]
        for label in labels:
            run = results["runs"][f"{game}/{label}"]
            m, se = mean_se(run["final_returns"])
            t, tse = mean_se([v for v in run["train_returns"] if v is not None])
            print(f"{game:22s} {label:12s} {len(run['final_returns']):3d} seeds  final {m:7.2f} +- {se:5.2f} "
                  f"({100 * (m / first - 1):+5.1f}%)  median {np.median(run['final_returns']):6.1f}  "
                  f"training return {t:7.2f} +- {tse:5.2f}")
    save_study(args.out, results)
    plot = args.plot or plot_path(args.out, default_out, DOCS_FIGURE)
    plot_curves(results, games, lambda game: f"{game} (mean over seeds)", plot)
    print(f"wrote {args.out} and {plot}")
    return results


if __name__ == "__main__":
    main()
