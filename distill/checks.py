"""Every candidate goes through both drift checks: a symbolic proof attempt and a numeric search.

Validity by construction is the plan; these checks are the audit. A candidate counts as valid only
when the symbolic check proves all three conditions *and* the numeric search finds no violation,
so a bug in either the construction or one checker cannot slip through on its own.
"""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace
from typing import Any

import sympy as sp


@dataclasses.dataclass(frozen=True)
class CandidateReport:
    """The two verdicts for one expression.

    ``valid`` needs all of: no violation found by the numeric search (``numeric.valid``), no refutation by
    the symbolic check (``symbolic.valid is not False``), and a proof: either the symbolic check proved
    every condition, or the construction certificate holds (each branch is ``Max(0, h)`` with ``h``
    smooth at ``r = 1`` and ``h(1, A) = h_r(1, A) = 0`` identically, which implies all three
    conditions; the symbolic checker cannot always resolve ``Max`` near ``r = 1`` when the sign of
    ``h`` there depends on ``A``, although the derivative is zero on both sides).
    """

    symbolic: Any
    numeric: Any
    valid: bool
    seconds: float
    error: str | None = None
    certificate: bool = False
    certificate_detail: str = ""

    @property
    def proved(self) -> bool:
        """All three conditions proved (by the symbolic check or by the construction certificate)."""
        return self.symbolic is not None and (self.symbolic.valid is True or self.certificate)

    def to_dict(self) -> dict:
        return {
            "valid": self.valid,
            "symbolic": _conditions(self.symbolic, "proved"),
            "numeric": _conditions(self.numeric, "passed"),
            "certificate": self.certificate,
            "certificate_detail": self.certificate_detail,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


def _conditions(report: Any, field: str) -> dict | None:
    if report is None:
        return None
    out = {"valid": bool(report.valid)}
    for name, cond in report.conditions.items():
        value = getattr(cond, field, None)
        out[name] = None if value is None else bool(value)
    return out


def _tools():
    from drifts.checks import check_drift
    from drifts.symbolic import check_drift_symbolic, to_jax

    return check_drift, check_drift_symbolic, to_jax


def to_drift(expr: sp.Expr, name: str = "distilled"):
    """The JAX drift of an expression, savable as the ``expression`` family."""
    return _tools()[2](expr, name=name)


@dataclasses.dataclass(frozen=True)
class SymbolicVerdict:
    """``drifts.symbolic.check_drift_symbolic``'s verdict, as returned from its sandbox process.

    ``valid``: True (all proved), False (a counterexample), None (undecided, or the prover ran out of
    time or memory: ``detail`` says which). ``conditions[name]`` has ``proved``, ``status``, ``method``,
    ``detail`` and ``counterexample``.
    """

    valid: bool | None
    conditions: dict
    detail: str = ""

    @classmethod
    def from_dict(cls, d: dict, detail: str = "") -> SymbolicVerdict:
        conds = {k: SimpleNamespace(**v) for k, v in d["conditions"].items()}
        return cls(d["valid"], conds, detail)

    @classmethod
    def unknown(cls, detail: str) -> SymbolicVerdict:
        names = ("nonnegative", "zero_at_identity", "zero_grad_at_identity")
        conds = {k: SimpleNamespace(proved=False, status="unknown", method="not run", detail=detail,
                                    counterexample=None) for k in names}
        return cls(None, conds, detail)


SYMBOLIC_TIMEOUT_S = 15.0


def _symbolic_job(text: str) -> dict:
    from drifts.symbolic import _parse_printed, check_drift_symbolic

    # sympy's own printing of a candidate, not typed input: exact rationals and high-precision floats
    # may print longer than the 60-digit literals a person is allowed to type
    return check_drift_symbolic(_parse_printed(text), numeric=False).to_dict()


def symbolic_verdict(expr: sp.Expr, timeout: float = SYMBOLIC_TIMEOUT_S) -> SymbolicVerdict:
    """``check_drift_symbolic(expr, numeric=False)`` in a sandboxed child (see :mod:`distill._sandbox`).

    An explosion of sympy becomes an ``undecided`` verdict instead of a killed session. The numeric
    search runs separately (:func:`check_candidate`).
    """
    return _verdict(start_symbolic(expr, timeout).result())


def start_symbolic(expr: sp.Expr, timeout: float = SYMBOLIC_TIMEOUT_S):
    """Start the sandboxed symbolic check; ``.result()`` waits for it (the numeric check runs meanwhile)."""
    from distill._sandbox import start_sandboxed

    return start_sandboxed(_symbolic_job, sp.sstr(expr), timeout)


def _verdict(outcome: tuple[str, object]) -> SymbolicVerdict:
    status, payload = outcome
    if status == "ok":
        return SymbolicVerdict.from_dict(payload)
    return SymbolicVerdict.unknown(f"symbolic prover: {payload}")


def check_candidate(expr: sp.Expr, drift) -> CandidateReport:
    """Run both checks; an exception in either makes the candidate invalid (with the reason)."""
    check_drift, _, _ = _tools()
    t0 = time.perf_counter()
    symbolic = numeric = None
    error = None
    job = start_symbolic(expr)  # sympy in a child process while JAX checks numerically here: 2 cores busy
    try:
        numeric = check_drift(drift)
    except Exception as err:  # noqa: BLE001 - any failure to check is a failure to validate
        error = f"{type(err).__name__}: {err}"
    symbolic = _verdict(job.result())
    cert, detail = construction_certificate(expr)
    valid = error is None and symbolic.valid is not False and (symbolic.valid is True or cert) and bool(numeric.valid)
    return CandidateReport(symbolic, numeric, valid, time.perf_counter() - t0, error, cert, detail)


def construction_certificate(expr: sp.Expr) -> tuple[bool, str]:
    """Check, exactly, that every branch is ``0`` or ``Max(0, h)`` with ``h`` smooth at ``r = 1``,
    ``h(1, A) = 0`` and ``dh/dr(1, A) = 0``.

    That implies the three conditions: ``Max(0, h) >= 0``; it is 0 at ``r = 1``; and
    ``0 <= Max(0, h) <= |h| = o(|r - 1|)`` makes its r-derivative at ``r = 1`` zero from both sides.
    Smoothness is what the projection needs: every ``Max``/``Min``/``Abs``/``sign``/``Heaviside`` inside ``h``
    must be decided the same way on a neighbourhood of ``r = 1`` (its switching argument is a nonzero
    number at ``r = 1``) or not depend on ``r``.
    """
    from distill.construct import r

    pieces = [p.expr for p in expr.args] if isinstance(expr, sp.Piecewise) else [expr]
    for piece in pieces:
        if piece == 0:
            continue
        if not (isinstance(piece, sp.Max) and len(piece.args) == 2 and 0 in piece.args):
            return False, f"branch {sp.sstr(piece)[:60]} is not of the form Max(0, h)"
        h = piece.args[1] if piece.args[0] == 0 else piece.args[0]
        if not _smooth_at_identity(h, r):
            return False, "h has a kink at r = 1"
        # Exact arithmetic (rational constants) makes both structurally zero; no simplify (it can explode).
        if h.subs(r, 1) != 0 or sp.diff(h, r).subs(r, 1) != 0:
            return False, "h or dh/dr is not identically zero at r = 1"
    return True, "every branch is Max(0, h) with h smooth at r = 1, h(1, A) = 0 and h_r(1, A) = 0 (exact)"


def _smooth_at_identity(h: sp.Expr, r: sp.Symbol) -> bool:
    def switch_away_from_one(x: sp.Expr) -> bool:
        if not x.has(r):
            return True
        x1 = x.subs(r, 1)
        return bool(x1.is_Number) and x1 != 0

    # A kink raised to an integer power >= 2 (e.g. Max(0, r - 1)**2) is continuously differentiable.
    smoothed = {p.base for p in h.atoms(sp.Pow) if p.exp.is_Integer and int(p.exp) >= 2}
    for node in sp.preorder_traversal(h):
        if node in smoothed:
            continue
        if isinstance(node, (sp.Max, sp.Min)):
            args = node.args
            if not all(switch_away_from_one(a - b) for i, a in enumerate(args) for b in args[i + 1:]):
                return False
        elif isinstance(node, (sp.Abs, sp.sign, sp.Heaviside)):
            if not switch_away_from_one(node.args[0]):
                return False
        elif isinstance(node, sp.Piecewise):
            return False
    return True
