"""Benchmark: check_drift on one LPO network and on an ES population of 32 (float64, CPU), and the symbolic
prover's reach on the suite of benchmarks/drift_suite.py (proved fraction, time per expression).

Run: ``.venv/bin/python benchmarks/drift_checks.py [--out benchmarks/results/drift_checks.json]``. Prints a table
and writes JSON. Times include compilation on the first call ("cold") and not on the second ("warm").
Targets (issue 3): one LPO < 5 s, a population of 32 < 20 s on the 2-core CPU; (issue 26) every covered
valid drift of the suite proved, every invalid one refuted, none falsely proved, < 2 s per expression.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from drifts import dpo, lpo, ppo  # noqa: E402
from drifts.checks import check_drift, check_drift_population  # noqa: E402
from drifts.library import lpo_init  # noqa: E402
from drifts.symbolic import check_drift_symbolic, to_sympy  # noqa: E402


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(population: int = 32) -> list[dict]:
    rows = []
    single = lpo(init_scale=1.0)
    for label in ("cold", "warm"):
        rep, s = _timed(lambda: check_drift(single))
        rows.append({"case": f"check_drift, one LPO (128 tanh), {label}", "seconds": s, "valid": int(rep.valid)})
    keys = jax.random.split(jax.random.PRNGKey(0), population)
    pop = jax.vmap(lambda k: lpo_init(k, init_scale=1.0))(keys)
    for label in ("cold", "warm"):
        rep, s = _timed(lambda: check_drift_population(lpo(), pop))
        rows.append({"case": f"check_drift_population, {population} LPOs, {label}", "seconds": s,
                     "valid": int(rep.valid.sum())})
    rep, s = _timed(lambda: check_drift(lpo(temporal=True, init_scale=1.0)))
    rows.append({"case": "check_drift, one TA-LPO (5 t values), cold", "seconds": s, "valid": int(rep.valid)})
    for name, d in (("PPO", ppo()), ("DPO", dpo())):
        rep, s = _timed(lambda d=d: check_drift(d))
        rows.append({"case": f"check_drift, {name}, cold", "seconds": s, "valid": int(rep.valid)})
        sym, s = _timed(lambda d=d: check_drift_symbolic(to_sympy(d)))
        rows.append({"case": f"check_drift_symbolic, {name} closed form", "seconds": s, "valid": int(bool(sym.valid))})
    return rows


def suite_rows() -> list[dict]:
    """check_drift_symbolic on every drift of the suite (default numeric settings where a proof is missing)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("drift_suite", Path(__file__).resolve().parent / "drift_suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    rows = []
    for kind, drifts_ in (("valid", suite.VALID), ("invalid", suite.INVALID)):
        for name, text in drifts_.items():
            rep, s = _timed(lambda text=text: check_drift_symbolic(text))
            rows.append({"kind": kind, "name": name, "expr": text, "seconds": s, "verdict": rep.valid,
                         "covered": name in suite.COVERED, "nonnegative_by": rep.conditions["nonnegative"].method})
    return rows


def suite_summary(rows: list[dict]) -> dict:
    valid = [r for r in rows if r["kind"] == "valid"]
    invalid = [r for r in rows if r["kind"] == "invalid"]
    return {"valid": len(valid), "invalid": len(invalid),
            "proved": sum(r["verdict"] is True for r in valid),
            "covered_proved": sum(r["verdict"] is True for r in valid if r["covered"]),
            "covered": sum(r["covered"] for r in valid),
            "refuted": sum(r["verdict"] is False for r in invalid),
            "false_proofs": sum(r["verdict"] is True for r in invalid),
            "valid_refuted": sum(r["verdict"] is False for r in valid),
            "max_seconds": max(r["seconds"] for r in rows), "median_seconds": sorted(r["seconds"] for r in rows)[len(rows) // 2]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/drift_checks.json")
    p.add_argument("--population", type=int, default=32)
    args = p.parse_args()
    rows = run(args.population)
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  seconds  valid")
    for r in rows:
        print(f"{r['case']:<{width}}  {r['seconds']:7.2f}  {r['valid']}")
    suite = suite_rows()
    print(f"\n{'suite drift':<28} {'kind':<8} {'verdict':<8} seconds  non-negativity by")
    for r in suite:
        print(f"{r['name']:<28} {r['kind']:<8} {str(r['verdict']):<8} {r['seconds']:7.2f}  {r['nonnegative_by'][:60]}")
    summary = suite_summary(suite)
    print(f"proved {summary['proved']}/{summary['valid']} valid ({summary['covered_proved']}/{summary['covered']} covered), "
          f"refuted {summary['refuted']}/{summary['invalid']} invalid, {summary['false_proofs']} false proofs; "
          f"median {summary['median_seconds']:.2f} s, max {summary['max_seconds']:.2f} s per expression")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__}
    out.write_text(json.dumps({"meta": meta, "rows": rows, "suite": suite, "suite_summary": summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
