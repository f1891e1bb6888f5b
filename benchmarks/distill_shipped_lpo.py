"""Distil the shipped meta-trained LPO and train with the closed form vs the network, side by side.

    .venv/bin/python benchmarks/distill_shipped_lpo.py            # ~2 min distillation + ~2 min training

Distillation: ``distill(get_drift("lpo"), backend="auto", time_budget=120, seed=0)``. Training:
CartPole-v1 at the LPO's meta-training budget (16,384 steps) and at 4x, 8 seeds each, 16 deterministic
evaluation episodes per seed; mean and standard error over seeds. Prints a table, writes
``benchmarks/results/distill_shipped_lpo.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

# benchmarks/distill.py would shadow the distill package when this file runs as a script
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> None:
    from agents import MirrorAgent
    from distill import distill
    from drifts import get_drift

    start = time.perf_counter()
    result = distill(get_drift("lpo"), backend="auto", time_budget=120, seed=0)
    seconds = time.perf_counter() - start
    best = result.best
    print(f"distilled in {seconds:.0f} s: R^2 {best.fidelity:.4f}, valid {best.report.valid}")
    rows = {"distill_seconds": seconds, "r2": float(best.fidelity), "valid": bool(best.report.valid),
            "expression": str(best.expression), "returns": {}}
    for steps in (16_384, 65_536):
        for name, drift in (("source LPO network", get_drift("lpo")), ("distilled closed form", best.drift)):
            agent = MirrorAgent(drift=drift, total_timesteps=steps, n_seeds=8, seed=100).fit("CartPole-v1")
            per_seed = agent.evaluate(n_episodes=16, seed=7)["returns"].mean(axis=1)
            mean, se = float(per_seed.mean()), float(per_seed.std(ddof=1) / np.sqrt(len(per_seed)))
            rows["returns"][f"{steps} {name}"] = {"mean": mean, "se": se, "per_seed": per_seed.tolist()}
            print(f"CartPole-v1 {steps:>6} {name:24s} {mean:7.1f} ± {se:5.1f}", flush=True)
    out = Path("benchmarks/results/distill_shipped_lpo.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
