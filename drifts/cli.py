"""Command-line entry points for ``mirrorlearn check-drift`` and ``mirrorlearn plot-drift``.

``mirrorlearn/cli.py`` dispatches to :func:`check_drift_main` and :func:`plot_drift_main`; both can also
be run as ``python -m drifts.cli check-drift ...``. A DRIFT argument is a name (``ppo``, ``dpo``,
``lpo``...), a drift file, or an expression string in ``r`` and ``A`` (parsed safely).

Exit status (both commands): 0 success, 1 ``check-drift`` found the drift invalid, 2 an error (an
unknown name, an unreadable drift file, an expression that does not parse, bad options), like
``mirrorlearn distill``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from drifts.base import check_progress
from mirrorlearn._archive import save_figure_atomic, write_json_atomic
from mirrorlearn._outputs import user_path


def _resolve(spec: str):
    """(Drift, sympy expression or None) for a name, a drift file path, or an expression string.

    Raises ``ValueError`` (an ``ArchiveError`` for a bad drift file) with one message saying what is wrong.
    """
    from drifts.library import get_drift

    try:
        drift = get_drift(spec)
    except ValueError as name_err:
        from drifts.symbolic import parse_expression, to_jax

        # get_drift parses text with operators itself; a bare word ("0", "t") may still be an expression.
        # If it is not, get_drift's message is the one to show (it has "did you mean 'dpo'?"); joining
        # both would repeat a parse error twice or bury the hint under the parser's list of names.
        try:
            expr = parse_expression(spec)
        except ValueError:
            if not spec.strip():
                raise  # "empty expression" says more than "unknown drift ''"
            raise name_err from None
        return to_jax(expr), expr
    expr = None
    if drift.family in ("ppo", "dpo", "expression"):
        from drifts.symbolic import to_sympy

        expr = to_sympy(drift)
    return drift, expr


def _out_dir(path: str | None, prefix: str, writes: tuple[str, ...], overwrite: bool) -> tuple[Path, bool]:
    from mirrorlearn._outputs import output_folder

    return output_folder(path, lambda: Path(tempfile.mkdtemp(prefix=prefix)), writes=writes, overwrite=overwrite)


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in text)[:40].strip("_")
    return keep or "drift"


def _unique(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... if taken: ``ppo`` and ``runs/ppo.drift`` (or two long expressions
    with the same first 40 characters) must not overwrite each other's picture."""
    name, i = stem, 2
    while name in taken:
        name, i = f"{stem}-{i}", i + 1
    taken.add(name)
    return name


def _error(command: str, err: Exception) -> int:
    print(f"mirrorlearn {command}: error: {err}", file=sys.stderr)
    return 2


def check_drift_main(argv: list[str] | None = None) -> int:
    """``mirrorlearn check-drift EXPR_OR_FILE``: numeric (and, for closed forms, symbolic) drift checks.

    Prints a readable report and, with ``--out``, writes ``report.json`` there (without it nothing is
    written: the printed report is the result). Exit status 0 if valid, 1 if invalid, 2 on an error (e.g. an expression that does
    not parse).

    ``valid`` means: the numeric search found no violation on the checked domain and the symbolic check
    (closed forms only) refuted nothing. ``proved`` (in ``report.json``) is true only when the symbolic
    check proved all three conditions; a valid but unproved drift gets a ``note`` and a printed
    ``warning:`` line, because the numeric search can miss violations between its grid points.
    """
    p = argparse.ArgumentParser(prog="mirrorlearn check-drift",
                                description="Check the drift conditions f >= 0, f(1, A) = 0, df/dr(1, A) = 0.",
                                epilog="Exit status: 0 valid, 1 invalid, 2 error. 'valid' means no violation was "
                                       "found; report.json's 'proved' is true only when sympy proved all three "
                                       "conditions (closed forms only), otherwise a warning says validity is "
                                       "numeric only.")
    p.add_argument("drift", help="a drift name (ppo, dpo, lpo), a drift file, or an expression in r and A, "
                                 "e.g. 'Max(0, (r - 1)**2 * A**2)'")
    p.add_argument("--out", type=user_path, help="folder for report.json (default: write nothing, print the report)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report.json in --out")
    p.add_argument("--log-r-range", type=float, nargs=2, default=(-1.5, 1.5), metavar=("LO", "HI"))
    p.add_argument("--A-range", type=float, nargs=2, default=(-5.0, 5.0), metavar=("LO", "HI"))
    p.add_argument("--no-symbolic", action="store_true", help="skip the sympy proofs for closed-form drifts")
    args = p.parse_args(argv)
    from drifts.checks import check_drift

    try:
        drift, expr = _resolve(args.drift)
        out = None if args.out is None else _out_dir(args.out, "check-drift-", ("report.json",), args.overwrite)[0]
        report = check_drift(drift, log_r_range=tuple(args.log_r_range), A_range=tuple(args.A_range))
    except (ValueError, TypeError, OSError) as err:
        return _error("check-drift", err)
    result: dict[str, Any] = {"drift": args.drift, "numeric": report.to_dict()}
    print(report.summary())
    valid = report.valid
    sym = None
    if expr is not None and not args.no_symbolic:
        from drifts.symbolic import check_drift_symbolic

        sym = check_drift_symbolic(expr, log_r_range=tuple(args.log_r_range), A_range=tuple(args.A_range))
        result["symbolic"] = sym.to_dict()
        print("symbolic: " + sym.summary())
        valid = valid and sym.valid is not False
    result["valid"] = bool(valid)
    result["proved"] = bool(valid and sym is not None and sym.valid is True)
    if valid and not result["proved"]:
        result["note"] = _unproved_note(sym, expr is None)
        print(f"warning: {result['note']}")
    if out is not None:
        try:
            write_json_atomic(out / "report.json", result, indent=2, default=str)
        except (OSError, ValueError) as err:  # e.g. --out names an existing file
            return _error("check-drift", err)
        print(f"wrote {out / 'report.json'}")
    return 0 if valid else 1


def _unproved_note(sym: Any, no_closed_form: bool) -> str:
    """Why a valid verdict is numeric only: say it plainly, since exit status 0 reads as 'fine'."""
    if sym is not None:
        open_ = [k for k, c in sym.conditions.items() if not c.proved]
        why = f"the symbolic check could not prove {', '.join(open_)} (UNDECIDED)"
    elif no_closed_form:
        why = "this drift has no closed form to prove (only ppo, dpo and expressions have one)"
    else:
        why = "the symbolic proofs were skipped (--no-symbolic)"
    return (f"valid numerically only, not proved: {why}; the numeric search covers the checked domain and "
            "can miss a violation between its grid points")


MAX_DPI = 1200


def plot_drift_main(argv: list[str] | None = None) -> int:
    """``mirrorlearn plot-drift DRIFT... --out DIR``: one PNG per drift and, for several, a comparison."""
    p = argparse.ArgumentParser(prog="mirrorlearn plot-drift",
                                description="Heat maps of d/dr [r A - f(r, A)] and slices at fixed A "
                                            "(the paper's Figures 1, 3 and 5).")
    p.add_argument("drifts", nargs="+", help="drift names (ppo, dpo, lpo), drift files or expressions in r, A")
    p.add_argument("--out", type=user_path, help="folder for the PNG files and plots.json, which lists them (default: a new "
                   "temporary folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's pictures in --out")
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument("--t", type=float, default=0.0, help="training progress for temporal drifts (default 0)")
    args = p.parse_args(argv)
    from drifts.plotting import compare_drifts, plot_drift

    if not 1 <= args.dpi <= MAX_DPI:  # a huge dpi asks matplotlib for gigabytes of pixels
        return _error("plot-drift", ValueError(f"--dpi must be an integer from 1 to {MAX_DPI}, got {args.dpi}"))
    try:
        check_progress(args.t)
        resolved = [_resolve(s)[0] for s in args.drifts]
        if args.t != 0.0 and not any(d.temporal for d in resolved):
            raise ValueError(f"--t {args.t:g} is training progress for temporal drifts (ta-lpo), but "
                             f"{', '.join(args.drifts)} take{'s' if len(resolved) == 1 else ''} none; drop --t")
        out, _ = _out_dir(args.out, "plot-drift-", ("plots.json", "drift_*.png", "compare.png"), args.overwrite)
    except (ValueError, TypeError, OSError) as err:
        return _error("plot-drift", err)
    written, taken = [], set()
    for spec, drift in zip(args.drifts, resolved, strict=True):
        name = _unique(_slug(spec if not os.path.exists(spec) else Path(spec).stem), taken)
        path = out / f"drift_{name}.png"
        save_figure_atomic(plot_drift(drift, t=args.t), path, dpi=args.dpi)
        written.append(str(path))
    if len(resolved) > 1:
        path = out / "compare.png"
        save_figure_atomic(compare_drifts(resolved, t=args.t), path, dpi=args.dpi)
        written.append(str(path))
    write_json_atomic(out / "plots.json", {"drifts": args.drifts, "files": written}, indent=2)
    for w in written:
        print(f"wrote {w}")
    stale = sorted(p.name for pattern in ("drift_*.png", "compare.png") for p in out.glob(pattern)
                   if str(p) not in written)
    if stale:  # --overwrite replaced what this run draws; pictures of other drifts are the user's to delete
        print(f"note: {out} still holds pictures from an earlier run, not listed in plots.json: {', '.join(stale)}")
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
