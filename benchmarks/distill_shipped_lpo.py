"""Distil the shipped meta-trained LPO and train with the closed forms vs the network, side by side.

    .venv/bin/python benchmarks/distill_shipped_lpo.py --retrain             # re-train the saved forms, ~4 min
    .venv/bin/python benchmarks/distill_shipped_lpo.py --tag _new             # distil the 3 CartPole/Breakout
                                                                              # designs anew, ~15 min in all

The sampling designs, each ``distill(get_drift("lpo"), backend="auto", time_budget=80, seed=0)``:

* ``default``: 4000 pairs, log-uniform ``r in [e^-1, e]``, uniform ``A in [-4, 4]``;
* ``recorded``: 4000 ``(r, A)`` pairs recorded while the LPO trains on CartPole-v1
  (``distill.record_training_pairs``: 16,384 steps, 4 seeds, seeds disjoint from the evaluation's);
* ``pooled``: 2000 of those CartPole pairs and 2000 recorded while the LPO trains on
  Breakout-MinAtar (65,536 steps, 1 seed): one closed form for both the CartPole and the MinAtar
  comparison (``benchmarks/minatar.py --drifts lpo distilled=benchmarks/results/lpo_distilled_pooled.drift``).
* ``pooled_si``: the same with the MinAtar half recorded on SpaceInvaders-MinAtar (131,072 steps,
  1 seed), the game the MinAtar comparison runs on (a closed form holds where its pairs came from).
* ``pooled_si_full``: the same, recording over the MinAtar comparison's whole 300k-step run.
* ``si``: 4000 pairs recorded on SpaceInvaders-MinAtar alone (131,072 steps, 1 seed): pooled pairs
  weigh the game with the larger ratio moves most, so this is the closed form for that game alone.

``--designs`` picks which to distil (default: the first three); the others' closed forms already in the
JSON file are kept. ``--tag _x`` writes them as ``<design>_x`` (rows and drift files), leaving the
earlier ones in place; replacing a saved drift file, which other studies load, needs ``--overwrite``.
Every run then re-trains the source and *every* saved closed form, so that all returns in the table
come from one version of the trainer (training is reproducible within a version, not across versions:
the source scored 354.7 in session 2 and 324.2 in session 6 at 16,384 steps); ``--retrain`` does only
that (~4 min).

Training: CartPole-v1 at the LPO's meta-training budget (16,384 steps) and at 4x, 8 seeds each, 16
deterministic evaluation episodes per seed; mean and standard error over seeds. Prints a table,
writes ``benchmarks/results/distill_shipped_lpo.json`` and each distilled drift as
``benchmarks/results/lpo_distilled_<design>.drift`` (loadable with ``get_drift``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

# benchmarks/distill.py would shadow the distill package when this file runs as a script
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

BUDGETS = (16_384, 65_536)
RESULTS = Path("benchmarks/results")


def returns(drift, steps: int) -> dict:
    from agents import MirrorAgent

    agent = MirrorAgent(drift=drift, total_timesteps=steps, n_seeds=8, seed=100).fit("CartPole-v1")
    per_seed = agent.evaluate(n_episodes=16, seed=7)["returns"].mean(axis=1)
    return {"mean": float(per_seed.mean()), "se": float(per_seed.std(ddof=1) / np.sqrt(len(per_seed))),
            "per_seed": per_seed.tolist()}


def main(argv=None) -> None:
    import argparse

    from distill import distill, record_training_pairs
    from drifts import get_drift

    source = get_drift("lpo")

    def cartpole(n):
        return record_training_pairs(source, "CartPole-v1", n, total_timesteps=16_384, n_seeds=4, seed=50)

    def pooled(game, steps):
        (r1, a1), (r2, a2) = cartpole(2000), record_training_pairs(source, game, 2000, total_timesteps=steps, seed=50)
        return np.concatenate([r1, r2]), np.concatenate([a1, a2])

    all_designs = {"default": None, "recorded": lambda: cartpole(4000),
                   "pooled": lambda: pooled("Breakout-MinAtar", 65_536),
                   "pooled_si": lambda: pooled("SpaceInvaders-MinAtar", 131_072),
                   "pooled_si_full": lambda: pooled("SpaceInvaders-MinAtar", 300_000),
                   "si": lambda: record_training_pairs(source, "SpaceInvaders-MinAtar", 4000, total_timesteps=131_072,
                                                       seed=50)}
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--designs", nargs="+", default=["default", "recorded", "pooled"], choices=list(all_designs),
                   help="the designs to distil (default: the three CartPole/Breakout ones, ~4 min each; the "
                   "SpaceInvaders ones record 131k or 300k steps first)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing lpo_distilled_<design>.drift files (default: refuse, as other studies "
                   "load them; use --tag for a new set)")
    p.add_argument("--tag", default="", help="suffix for the designs' names and drift files, so that a re-run "
                   "keeps the files earlier studies used (e.g. --tag _s6 writes lpo_distilled_pooled_s6.drift)")
    p.add_argument("--target", default="drift", choices=["drift", "derivative"],
                   help="what the designs distilled by this run fit: the drift f, or its slope df/dr")
    p.add_argument("--retrain", action="store_true",
                   help="distil nothing: only re-train the source and every saved closed form")
    args = p.parse_args(argv)
    out = RESULTS / "distill_shipped_lpo.json"
    rows: dict = json.loads(out.read_text()) if out.exists() else {}
    if "designs" not in rows:  # a file from before the designs were compared
        rows = {"designs": {}, "source": {}}
    designs = {} if args.retrain else {d + args.tag: all_designs[d] for d in args.designs}
    taken = [str(RESULTS / f"lpo_distilled_{d}.drift") for d in designs
             if (RESULTS / f"lpo_distilled_{d}.drift").exists()]
    if taken and not args.overwrite:
        raise SystemExit(f"{', '.join(taken)} exist and other studies load them; pass --tag _new for a new set, "
                         "--retrain to re-train the saved ones, or --overwrite to replace them")
    for design, make_pairs in designs.items():
        start = time.perf_counter()
        pairs = None if make_pairs is None else make_pairs()
        record_s = time.perf_counter() - start
        start = time.perf_counter()
        result = distill(source, backend="auto", time_budget=80, seed=0, samples=pairs, target=args.target)
        seconds = time.perf_counter() - start
        best = result.best
        path = RESULTS / f"lpo_distilled_{design}.drift"
        best.drift.save(path)
        rows["designs"][design] = {"target": args.target, "record_seconds": record_s, "distill_seconds": seconds,
                                   "r2": float(best.fidelity),
                                   "valid": bool(best.report.valid), "expression": str(best.expression),
                                   "file": str(path)}
        out.write_text(json.dumps(rows, indent=1))  # each design as it finishes
        print(f"{design}: distilled in {seconds:.0f} s (+{record_s:.0f} s recording), held-out R^2 {best.fidelity:.4f}, "
              f"valid {best.report.valid}", flush=True)

    # Returns are compared within one run: training is reproducible for one version of the trainer, not
    # across versions, so a source row cached from an earlier run is no baseline for a new closed form.
    rows["source"] = {str(steps): returns(source, steps) for steps in BUDGETS}
    for row in rows["designs"].values():
        row["returns"] = {str(steps): returns(get_drift(row["file"]), steps) for steps in BUDGETS}

    designs = rows["designs"]
    print(f"\n{'CartPole-v1 steps':>18s} {'source LPO':>16s} " + " ".join(f"{d + ' closed form':>26s}" for d in designs))
    for steps in BUDGETS:
        src = rows["source"][str(steps)]
        cells = []
        for design in designs:
            d = rows["designs"][design]["returns"][str(steps)]
            cells.append(f"{d['mean']:7.1f} ± {d['se']:5.1f} ({100 * (d['mean'] / src['mean'] - 1):+5.1f}%)")
        print(f"{steps:>18d} {src['mean']:8.1f} ± {src['se']:5.1f} " + " ".join(f"{c:>26s}" for c in cells))
    out.write_text(json.dumps(rows, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
