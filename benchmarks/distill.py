"""Benchmark: symbolic distillation (issue 6) on the 2-core CPU.

Run: ``.venv/bin/python benchmarks/distill.py [--out benchmarks/results/distill.json] [--quick] [--evaluate]``.
Prints a table and writes JSON. Wall times include sampling, the backend's search and the checks of
every front member (symbolic proof attempt + numeric search).

Targets: from DPO itself a valid expression with held-out R^2 >= 0.999 within 60 s; from a
PPO-initialised LPO network perturbed (``lpo(init_scale=1.0)``, until a meta-trained one ships)
R^2 >= 0.99, valid, within 120 s; the recovery rate (valid and R^2 >= 0.999) over closed forms of
different shapes. ``--evaluate`` also trains agents with the distilled and the source drift
(CartPole-v1, 5 seeds) and reports the relative return gap (target: within 5%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# This file is named like the package: run as a script, its folder would shadow ``distill``.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import jax.numpy as jnp  # noqa: E402

from distill import distill  # noqa: E402
from drifts import dpo, from_callable, lpo, ppo  # noqa: E402

CLOSED_FORMS = {
    "dpo": lambda: dpo(),
    "ppo": lambda: ppo(),
    "square (r-1)^2 A^2": lambda: from_callable(lambda r, A: (r - 1) ** 2 * A**2),
    "asymmetric": lambda: from_callable(lambda r, A: jnp.where(A >= 0, jnp.log(r) ** 2 * A, 0.5 * (r - 1) ** 2 * A**2)),
    "log-abs log(r)^2 |A|": lambda: from_callable(lambda r, A: jnp.log(r) ** 2 * jnp.abs(A)),
    "tanh-shaped (r-1)^2 tanh(A)^2": lambda: from_callable(lambda r, A: (r - 1) ** 2 * jnp.tanh(A) ** 2),
}


def _row(case: str, backend: str, source, budget: float, target_r2: float, limit_s: float | None, **kw) -> dict:
    t0 = time.perf_counter()
    res = distill(source, backend=backend, time_budget=budget, seed=0, **kw)
    wall = time.perf_counter() - t0
    best = res.best
    ok = best is not None and best.valid and best.fidelity >= target_r2 and (limit_s is None or wall <= limit_s)
    return {
        "case": case, "backend": backend, "budget_s": budget, "wall_s": round(wall, 1),
        "fit_s": round(res.timings["fit_seconds"], 1), "check_s": round(res.timings["check_seconds"], 1),
        "valid": bool(best is not None and best.valid), "r2": None if best is None else round(best.fidelity, 6),
        "complexity": None if best is None else best.complexity, "front": len(res.front),
        "front_valid": sum(c.valid for c in res.front), "target_r2": target_r2, "limit_s": limit_s,
        "meets_target": bool(ok), "expression": None if best is None else best.to_string(3),
        "_result": res,
    }


def run(quick: bool = False, evaluate: bool = False) -> dict:
    rows = []
    scale = 0.25 if quick else 1.0
    for backend, budget in (("auto", 36 * scale), ("pyoperon", 36 * scale), ("linear", 10)):
        rows.append(_row("DPO itself", backend, dpo(), budget, 0.999, 60))
    for backend, budget in (("auto", 60 * scale), ("pyoperon", 60 * scale), ("linear", 10)):
        rows.append(_row("LPO lpo(init_scale=1.0)", backend, lpo(init_scale=1.0), budget, 0.99, 120))
    recovery = {}
    for backend, budget in (("linear", 5), ("pyoperon", 20 * scale)):
        hits = 0
        for name, make in CLOSED_FORMS.items():
            row = _row(f"recover {name}", backend, make(), budget, 0.999, None, max_front=4)
            rows.append(row)
            hits += row["meets_target"]
        recovery[backend] = {"recovered": hits, "total": len(CLOSED_FORMS), "rate": hits / len(CLOSED_FORMS)}
    evaluation = []
    if evaluate:
        for row in [r for r in rows if r["backend"] in ("auto", "linear") and not r["case"].startswith("recover")]:
            res = row["_result"]
            if res.best is None:
                continue
            out = res.evaluate("CartPole-v1", total_timesteps=100_000, n_seeds=5, n_episodes=10)
            evaluation.append({"case": row["case"], "backend": row["backend"], "env": "CartPole-v1",
                               "total_timesteps": 100_000, "n_seeds": 5,
                               "distilled_mean_return": out["distilled"]["mean_return"],
                               "source_mean_return": out["source"]["mean_return"],
                               "relative_gap": out["relative_gap"]})
    for row in rows:
        row.pop("_result")
    return {"rows": rows, "recovery": recovery, "evaluation": evaluation,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}


def _print(report: dict) -> None:
    head = f"{'case':<38} {'backend':<9} {'budget':>6} {'wall':>6} {'check':>6} {'R2':>9} {'valid':>5} {'cplx':>5} {'ok':>3}"
    print(head)
    print("-" * len(head))
    for r in report["rows"]:
        r2 = "-" if r["r2"] is None else f"{r['r2']:.6f}"
        print(f"{r['case']:<38} {r['backend']:<9} {r['budget_s']:>6.0f} {r['wall_s']:>6.1f} {r['check_s']:>6.1f} "
              f"{r2:>9} {str(r['valid']):>5} {r['complexity'] or '-':>5} {'yes' if r['meets_target'] else 'no':>3}")
    for backend, rec in report["recovery"].items():
        print(f"recovery rate ({backend}): {rec['recovered']}/{rec['total']} = {rec['rate']:.0%}")
    for e in report["evaluation"]:
        print(f"evaluate {e['case']} [{e['backend']}] on {e['env']}: distilled {e['distilled_mean_return']:.1f} vs "
              f"source {e['source_mean_return']:.1f} (gap {e['relative_gap']:+.1%})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/distill.json")
    p.add_argument("--quick", action="store_true", help="quarter budgets for pyoperon (smoke run)")
    p.add_argument("--evaluate", action="store_true", help="also train agents with distilled vs source drifts")
    args = p.parse_args()
    report = run(quick=args.quick, evaluate=args.evaluate)
    _print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
