"""Validity by construction: turn any fitted expression ``g(r, A)`` into a valid drift.

Mirror Learning asks for (1) ``f >= 0``, (2) ``f(1, A) = 0`` and (3) ``df/dr(1, A) = 0``. A fitter
approximates a valid source but never exactly: its constants break (2) and (3) by small amounts.
So instead of hoping, we project. With sympy computing ``g(1, A)`` and ``g_r(1, A)`` exactly,

    h(r, A) = g(r, A) - g(1, A) - g_r(1, A) * (r - 1)

satisfies (2) and (3) identically for any ``g`` smooth at ``r = 1``, and ``f = Max(0, h)`` adds (1)
without undoing them (``h`` and its slope are both zero at ``r = 1``). When ``g`` already fits a valid
source well the two subtracted terms are small, so fidelity is kept. The same projection applied to a
``g`` whose terms already vanish to second order at ``r = 1`` is the identity.

With ``split_advantage`` each sign of ``A`` gets its own branch, joined with ``Piecewise``: that is
the update asymmetry behind DPO, and each branch is projected separately (the conditions are
pointwise in ``A``).
"""

from __future__ import annotations

import sympy as sp

r = sp.Symbol("r", positive=True)
A = sp.Symbol("A", real=True)

SIGNIFICANT_DIGITS = 6


def round_floats(expr: sp.Expr, digits: int = SIGNIFICANT_DIGITS) -> sp.Expr:
    """Every float constant as the exact rational of its ``digits``-significant-digit decimal.

    Exact arithmetic is what makes the projection exact: with floats, ``g_r(1, A)`` is collapsed into
    one rounded coefficient and ``h_r(1, A)`` comes out as ``1e-16 * A`` instead of 0.
    """
    floats = expr.atoms(sp.Float)
    return expr.xreplace({x: sp.Rational(f"{float(x):.{digits}g}") for x in floats}) if floats else expr


def project(g: sp.Expr) -> sp.Expr:
    """``g - g(1, A) - g_r(1, A) (r - 1)``: exactly zero with zero r-slope at ``r = 1``."""
    g = sp.Integer(0) + g  # accept Python numbers
    at_one = g.subs(r, 1)
    slope_at_one = sp.diff(g, r).subs(r, 1)
    return g - at_one - slope_at_one * (r - 1)


def make_valid(g: sp.Expr) -> sp.Expr:
    """``Max(0, project(g))``: a drift satisfying all three conditions by construction."""
    h = project(g)
    if h == 0:
        return sp.Integer(0)
    return sp.Max(0, h, evaluate=False)  # no assumption queries: they can explode on large fits


def join_branches(positive: sp.Expr, negative: sp.Expr) -> sp.Expr:
    """One drift from a branch for ``A >= 0`` and one for ``A < 0``."""
    if positive == negative:
        return positive
    return sp.Piecewise((positive, A >= 0), (negative, True))


def complexity(expr: sp.Expr) -> int:
    """Number of nodes in the expression tree: the same measure whichever backend produced it."""
    return sum(1 for _ in sp.preorder_traversal(expr))


def integrate_slope(p: sp.Expr, timeout: float = 10.0) -> sp.Expr | None:
    """For derivative targets: ``int_1^r p(s, A) - p(1, A) ds`` in closed form, or ``None``.

    Subtracting ``p(1, A)`` makes the slope at ``r = 1`` zero; integrating from 1 makes the value
    zero. sympy runs in a sandbox (integration can hang); ``None`` if it finds no closed form in
    ``timeout`` seconds or the result uses functions outside the safe parser's whitelist (the
    candidate is then dropped).
    """
    from distill._sandbox import run_sandboxed
    from drifts.symbolic import parse_expression

    status, payload = run_sandboxed(_integrate_job, sp.sstr(p), timeout)
    if status != "ok" or payload is None:
        return None
    try:
        return parse_expression(payload)
    except ValueError:
        return None


def _integrate_job(text: str) -> str | None:
    from drifts.symbolic import as_expression

    p = as_expression(text)
    s = sp.Symbol("s", positive=True)
    q = (p - p.subs(r, 1)).subs(r, s)
    out = sp.integrate(q, (s, 1, r), risch=False)
    if out.has(sp.Integral):
        return None
    out = out.replace(sp.cosh, lambda x: (sp.exp(x) + sp.exp(-x)) / 2)  # the parser knows exp, not cosh
    return sp.sstr(out)
