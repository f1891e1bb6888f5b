"""Proof rules for ``f >= 0`` beyond structure: proved bounds, branch conditions, convexity.

Every rule here is sound for real ``A``, ``r > 0`` and ``t >= 0`` (the symbols' sympy assumptions):

* **bounds** (:func:`bound`): a number proved to bound an expression from below (or above), composed
  through sums, products with constants, even and odd powers, quotients by positive denominators,
  monotone functions (``exp log tanh sinh atan sqrt``, softplus as ``log(1 + exp(.))``: increasing
  ones map a lower bound of their argument to one of the result, ``exp(-x)`` with ``x >= 0`` is at
  most 1), ``cosh >= 1``, ``Abs``, ``Max`` and ``Min``;
* **branch conditions** (:func:`branch_assumptions`): inside ``Piecewise((e, cond), ...)`` the branch's
  condition and the negations of the earlier ones hold, so ``A >= 0`` makes ``A`` a non-negative symbol
  there (and ``r >= 1`` writes ``r = 1 + u`` with ``u >= 0``);
* **convexity** (:func:`convex_with_flat_tangent`): an expression smooth in ``r`` with ``f(1) = 0``,
  ``df/dr(1) = 0`` and a second derivative proved ``>= 0`` in ``r`` (or in ``u = log r``) lies above
  its tangent at ``r = 1``, which is 0.

A rule that cannot conclude returns None (no claim); none of them ever claims a false bound. Each works
within a budget of visited nodes, so a pathological expression gives up rather than running on.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

MAX_VISITS = 20_000  # nodes a bound may visit before it gives up (a 50-deep nested tanh is fine)

_INCREASING = (sp.exp, sp.tanh, sp.sinh, sp.atan, sp.asinh)
# Each function's range as sympy numbers (None: unbounded on that side).
_RANGE = {sp.tanh: (sp.Integer(-1), sp.Integer(1)), sp.atan: (-sp.pi / 2, sp.pi / 2), sp.exp: (sp.Integer(0), None),
          sp.cosh: (sp.Integer(1), None), sp.sign: (sp.Integer(-1), sp.Integer(1)),
          sp.Heaviside: (sp.Integer(0), sp.Integer(1))}


class _Budget(Exception):
    pass


def bound(e: sp.Expr, lower: bool = True, visits: list | None = None) -> sp.Expr | None:
    """A real number proved ``<= e`` everywhere (``lower``) or ``>= e``, or None when none was found."""
    cache: dict = {}
    visits = visits if visits is not None else [0]
    try:
        return _bound(e, lower, cache, visits)
    except (_Budget, RecursionError):
        return None
    except (TypeError, ValueError):  # a comparison sympy cannot make: no bound, no claim
        return None


def proved_le(a: sp.Expr, b: sp.Expr) -> bool:
    """``a <= b`` for real numbers, decided exactly by sympy (False when undecided)."""
    return bool(sp.simplify(b - a).is_nonnegative)


def _bound(e, lower, cache, visits):
    key = (e, lower)
    if key in cache:
        return cache[key]
    visits[0] += 1
    if visits[0] > MAX_VISITS:
        raise _Budget
    cache[key] = result = _compute(e, lower, cache, visits)
    return result


def _compute(e, lower, cache, visits):  # noqa: C901 - one case per kind of node
    def b(x, low=lower):
        return _bound(x, low, cache, visits)

    if e.is_number:
        return e if e.is_extended_real and e.is_finite else None
    if e.is_Symbol:
        if lower and e.is_nonnegative:
            return sp.Integer(0)
        if not lower and e.is_nonpositive:
            return sp.Integer(0)
        return None
    if isinstance(e, sp.Add):
        parts = [b(x) for x in e.args]
        return None if any(p is None for p in parts) else sp.Add(*parts)
    if isinstance(e, sp.Mul):
        coeff, rest = e.as_coeff_Mul()
        if coeff != 1:
            inner = b(rest, lower if coeff > 0 else not lower)
            return None if inner is None else coeff * inner
        factors = list(e.args)
        lows = [b(x, True) for x in factors]
        if any(lo is None or not proved_le(0, lo) for lo in lows):  # a product of factors proved >= 0
            return sp.Integer(0) if lower and _even_negatives(factors, cache, visits) else None
        if lower:
            return sp.Mul(*lows)
        highs = [b(x, False) for x in factors]
        return None if any(h is None for h in highs) else sp.Mul(*highs)
    if isinstance(e, sp.Pow):
        return _pow_bound(e, lower, b)
    if isinstance(e, sp.log):
        arg = e.args[0]
        lo = b(arg, True)
        if lower:
            return sp.log(lo) if lo is not None and proved_le(0, lo) and lo != 0 else None
        hi = b(arg, False)
        return sp.log(hi) if hi is not None and lo is not None and proved_le(0, lo) and hi != 0 else None
    if e.func in _INCREASING:
        inner = b(e.args[0])
        if inner is not None:
            return e.func(inner)
        lo, hi = _RANGE.get(e.func, (None, None))
        value = lo if lower else hi
        return value
    if isinstance(e, sp.cosh):
        if not lower:
            lo, hi = b(e.args[0], True), b(e.args[0], False)
            return None if lo is None or hi is None else sp.Max(sp.cosh(lo), sp.cosh(hi))
        lo, hi = b(e.args[0], True), b(e.args[0], False)
        if lo is not None and proved_le(0, lo):
            return sp.cosh(lo)
        if hi is not None and proved_le(hi, 0):
            return sp.cosh(hi)
        return sp.Integer(1)
    if isinstance(e, sp.Abs):
        lo, hi = b(e.args[0], True), b(e.args[0], False)
        if lower:
            if lo is not None and proved_le(0, lo):
                return lo
            if hi is not None and proved_le(hi, 0):
                return -hi
            return sp.Integer(0)
        return None if lo is None or hi is None else sp.Max(-lo, hi)
    if isinstance(e, (sp.Max, sp.Min)):
        parts = [b(x) for x in e.args]
        take_any = (isinstance(e, sp.Max) and lower) or (isinstance(e, sp.Min) and not lower)
        known = [p for p in parts if p is not None]
        if take_any:
            return (sp.Max if lower else sp.Min)(*known) if known else None
        return None if len(known) < len(parts) else (sp.Min if lower else sp.Max)(*known)
    if e.func in _RANGE:
        lo, hi = _RANGE[e.func]
        value = lo if lower else hi
        return value
    if isinstance(e, sp.Piecewise):
        parts = []
        for expr, assumed in branch_assumptions(e):
            part = b(assumed(expr))
            if part is None:
                return None
            parts.append(part)
        return (sp.Min if lower else sp.Max)(*parts)
    return None


def _even_negatives(factors, cache, visits) -> bool:
    """Whether every factor is proved >= 0 or <= 0 and an even number are <= 0 (so the product is >= 0)."""
    negatives = 0
    for x in factors:
        lo = _bound(x, True, cache, visits)
        if lo is not None and proved_le(0, lo):
            continue
        hi = _bound(x, False, cache, visits)
        if hi is not None and proved_le(hi, 0):
            negatives += 1
            continue
        return False
    return negatives % 2 == 0


def _pow_bound(e: sp.Pow, lower: bool, b: Callable) -> sp.Expr | None:
    base, ex = e.base, e.exp
    if not ex.is_number or not ex.is_real:
        if base == sp.E:  # E**x is exp(x)
            inner = b(ex)
            return None if inner is None else sp.exp(inner)
        return None
    lo, hi = b(base, True), b(base, False)
    positive_base = bool(base.is_positive) or (lo is not None and proved_le(0, lo) and lo != 0)
    if ex.is_integer and int(ex) % 2 == 0 and ex > 0:  # even power: >= 0, and more when the base's sign is known
        if lower:
            if lo is not None and proved_le(0, lo):
                return lo**ex
            if hi is not None and proved_le(hi, 0):
                return hi**ex
            return sp.Integer(0)
        return None if lo is None or hi is None else sp.Max(lo**ex, hi**ex)
    if ex.is_integer and ex > 0:  # odd power: increasing
        value = lo if lower else hi
        return None if value is None else value**ex
    if ex > 0:  # a fractional power needs a base >= 0, where it is increasing
        if lo is None or not proved_le(0, lo):
            return None
        if lower:
            return lo**ex
        return None if hi is None else hi**ex
    # a negative power: decreasing on a positive base
    if not (positive_base or bool(base.is_positive)):
        return None
    if lower:
        return sp.Integer(0) if hi is None else hi**ex
    return lo**ex if lo is not None and lo != 0 else None


def branch_assumptions(e: sp.Piecewise) -> list[tuple[sp.Expr, Callable[[sp.Expr], sp.Expr]]]:
    """``(branch, assume)`` per branch: ``assume(x)`` rewrites ``x`` under what is known on that branch (its
    condition and the negations of the earlier ones), e.g. ``A`` as a non-negative symbol under ``A >= 0``."""
    out = []
    earlier = []
    for expr, cond in e.args:
        holds = sp.And(cond, *[sp.Not(c) for c in earlier])
        earlier.append(cond)
        out.append((expr, _assume(holds)))
    return out


def _facts(cond) -> list:
    if isinstance(cond, sp.And):
        return [f for c in cond.args for f in _facts(c)]
    if isinstance(cond, sp.core.relational.Relational):
        return [cond]
    return []


def _linear_fact(rel) -> tuple[sp.Symbol, sp.Expr, bool] | None:
    """``(symbol, threshold, above)`` when ``rel`` says ``symbol >= threshold`` (``above``) or ``<=`` it: a relation
    linear in one symbol, as ``A >= -A`` (``A >= 0``) or ``2*r - 2 < 0`` (``r < 1``); None otherwise."""
    above = isinstance(rel, (sp.GreaterThan, sp.StrictGreaterThan))
    below = isinstance(rel, (sp.LessThan, sp.StrictLessThan))
    if not (above or below):
        return None
    d = sp.expand(rel.lhs - rel.rhs)  # rel: d >= 0 (above) or d <= 0
    symbols = d.free_symbols
    if len(symbols) != 1:
        return None
    (sym,) = symbols
    a, b = d.coeff(sym, 1), d.subs(sym, 0)
    if not (a.is_number and b.is_number and a != 0) or sp.expand(d - (a * sym + b)) != 0:
        return None
    return sym, -b / a, above if a > 0 else not above


def _assume(cond) -> Callable[[sp.Expr], sp.Expr]:
    """Substitutions for the sign facts in ``cond`` about a symbol against 0 (``A``, ``t``) or ``r`` against 1."""
    subs = {}
    for rel in _facts(cond):
        fact = _linear_fact(rel)
        if fact is None or fact[0] in subs:
            continue
        sym, threshold, above = fact
        u = sp.Dummy(f"{sym.name}_", nonnegative=True)
        if sym.is_positive and threshold == 1:  # r against 1
            subs[sym] = 1 + u if above else 1 / (1 + u)
        elif threshold == 0:
            subs[sym] = u if above else -u
    return (lambda x: x.xreplace(subs)) if subs else (lambda x: x)


def _has_kinks(e: sp.Expr, r: sp.Symbol) -> bool:
    kinks = (sp.Max, sp.Min, sp.Abs, sp.Piecewise, sp.sign, sp.Heaviside)
    return any(isinstance(node, kinks) and node.has(r) for node in sp.preorder_traversal(e))


def convex_with_flat_tangent(e: sp.Expr, r: sp.Symbol, proved_nonneg: Callable[[sp.Expr], bool]) -> str | None:
    """Which convexity rule proves ``e >= 0`` (in ``r`` or in ``u = log r``), or None.

    Needs ``e`` smooth in ``r`` on ``r > 0`` (no Max, Abs, Piecewise of ``r``), ``e(1) = 0`` and
    ``de/dr(1) = 0`` identically in the other symbols, and a second derivative that ``proved_nonneg``
    signs: a convex function with a flat tangent at ``r = 1`` is at least 0 there and everywhere else.
    """
    if not e.has(r) or _has_kinks(e, r):
        return None
    try:
        if sp.simplify(e.subs(r, 1)) != 0 or sp.simplify(sp.diff(e, r).subs(r, 1)) != 0:
            return None
        if proved_nonneg(sp.simplify(sp.diff(e, r, 2))):
            return "convexity in r with a flat tangent at r = 1"
        u = sp.Dummy("u", real=True)
        in_u = e.subs(r, sp.exp(u))
        if proved_nonneg(sp.simplify(sp.diff(in_u, u, 2))):
            return "convexity in log r with a flat tangent at r = 1"
    except (TypeError, ValueError, NotImplementedError, RecursionError):
        return None
    return None
