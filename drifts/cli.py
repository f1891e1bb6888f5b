"""Command-line entry points for ``mirrorlearn check-drift`` and ``mirrorlearn plot-drift``.

``mirrorlearn/cli.py`` dispatches to :func:`check_drift_main` and :func:`plot_drift_main`; both can also
be run as ``python -m drifts.cli check-drift ...``. A DRIFT argument is a name (``ppo``, ``dpo``,
``lpo``...), a drift file, or an expression string in ``r`` and ``A`` (parsed safely).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def _resolve(spec: str):
    """(Drift, sympy expression or None) for a name, a drift file path, or an expression string."""
    from drifts.library import get_drift

    try:
        drift = get_drift(spec)
    except ValueError as name_err:
        from drifts.symbolic import parse_expression, to_jax

        try:
            expr = parse_expression(spec)
        except ValueError as parse_err:
            raise SystemExit(f"error: {spec!r} is neither a drift name/file ({name_err}) nor a valid expression "
                             f"({parse_err})") from None
        return to_jax(expr), expr
    expr = None
    if drift.family in ("ppo", "dpo", "expression"):
        from drifts.symbolic import to_sympy

        expr = to_sympy(drift)
    return drift, expr


def _out_dir(path: str | None, prefix: str) -> Path:
    out = Path(path) if path else Path(tempfile.mkdtemp(prefix=prefix))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in text)[:40].strip("_")
    return keep or "drift"


def check_drift_main(argv: list[str] | None = None) -> int:
    """``mirrorlearn check-drift EXPR_OR_FILE``: numeric (and, for closed forms, symbolic) drift checks.

    Prints a readable report, writes ``report.json`` to ``--out`` (default: a new temporary folder) and
    prints the folder. Exit status 0 if valid, 1 if invalid.
    """
    p = argparse.ArgumentParser(prog="mirrorlearn check-drift",
                                description="Check the drift conditions f >= 0, f(1, A) = 0, df/dr(1, A) = 0.")
    p.add_argument("drift", help="a drift name (ppo, dpo, lpo), a drift file, or an expression in r and A, "
                                 "e.g. 'Max(0, (r - 1)**2 * A**2)'")
    p.add_argument("--out", help="folder for report.json (default: a new temporary folder)")
    p.add_argument("--log-r-range", type=float, nargs=2, default=(-1.5, 1.5), metavar=("LO", "HI"))
    p.add_argument("--A-range", type=float, nargs=2, default=(-5.0, 5.0), metavar=("LO", "HI"))
    p.add_argument("--no-symbolic", action="store_true", help="skip the sympy proofs for closed-form drifts")
    args = p.parse_args(argv)
    from drifts.checks import check_drift

    drift, expr = _resolve(args.drift)
    report = check_drift(drift, log_r_range=tuple(args.log_r_range), A_range=tuple(args.A_range))
    result: dict[str, Any] = {"drift": args.drift, "numeric": report.to_dict()}
    print(report.summary())
    valid = report.valid
    if expr is not None and not args.no_symbolic:
        from drifts.symbolic import check_drift_symbolic

        sym = check_drift_symbolic(expr, log_r_range=tuple(args.log_r_range), A_range=tuple(args.A_range))
        result["symbolic"] = sym.to_dict()
        print("symbolic: " + sym.summary())
        valid = valid and sym.valid is not False
    result["valid"] = bool(valid)
    out = _out_dir(args.out, "check-drift-")
    (out / "report.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out / 'report.json'}")
    print(out)
    return 0 if valid else 1


def plot_drift_main(argv: list[str] | None = None) -> int:
    """``mirrorlearn plot-drift DRIFT... --out DIR``: one PNG per drift and, for several, a comparison."""
    p = argparse.ArgumentParser(prog="mirrorlearn plot-drift",
                                description="Heat maps of d/dr [r A - f(r, A)] and slices at fixed A "
                                            "(the paper's Figures 1, 3 and 5).")
    p.add_argument("drifts", nargs="+", help="drift names (ppo, dpo, lpo), drift files or expressions in r, A")
    p.add_argument("--out", help="folder for the PNG files (default: a new temporary folder)")
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument("--t", type=float, default=0.0, help="training progress for temporal drifts (default 0)")
    args = p.parse_args(argv)
    from drifts.plotting import compare_drifts, plot_drift

    out = _out_dir(args.out, "plot-drift-")
    resolved = [_resolve(s)[0] for s in args.drifts]
    written = []
    for spec, drift in zip(args.drifts, resolved, strict=True):
        name = _slug(spec if not os.path.exists(spec) else Path(spec).stem)
        path = out / f"drift_{name}.png"
        plot_drift(drift, t=args.t).savefig(path, dpi=args.dpi)
        written.append(str(path))
    if len(resolved) > 1:
        path = out / "compare.png"
        compare_drifts(resolved, t=args.t).savefig(path, dpi=args.dpi)
        written.append(str(path))
    (out / "plots.json").write_text(json.dumps({"drifts": args.drifts, "files": written}, indent=2))
    for w in written:
        print(f"wrote {w}")
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"check-drift": check_drift_main, "plot-drift": plot_drift_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m drifts.cli {check-drift,plot-drift} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
