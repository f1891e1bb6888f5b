"""A light backend: sparse regression over a library of valid-by-construction terms.

Every library term vanishes with zero r-slope at ``r = 1`` on its own (``(r-1)^2``, ``log(r)^2``,
hinges ``Max(0, r-1-k)`` with ``k > 0``, soft clips ``x - c tanh(x/c)`` of ``x = (r-1)A`` or
``log(r) A``, each times a power of ``A``), so any linear combination satisfies conditions (2) and
(3) and the shared ``Max(0, .)`` adds (1). Terms are chosen greedily (orthogonal matching pursuit),
coefficients by least squares, and the continuous scales of selected hinges and soft clips are then
refined by a 1-D search (variable projection). The fit is *censored*: where the source drift is zero
the model only has to be <= 0, because ``Max(0, g)`` makes it zero there too.

Needs only numpy; it is the ``backend="auto"`` fallback when pyoperon is missing. Its candidates
are one per model size, so the front runs from one term to ``max_terms``.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import sympy as sp

from distill._numeric import evaluate
from distill.backends.base import FitTask
from distill.construct import A, r

HINGE_KNOTS = (0.05, 0.1, 0.2, 0.3, 0.5)
SOFT_CLIP_SCALES = (0.3, 1.0, 3.0)


@dataclasses.dataclass(frozen=True)
class Term:
    """One library term: a kind, a continuous parameter (or None) and an advantage factor."""

    kind: str
    param: float | None
    a_factor: str

    def expr(self) -> sp.Expr:
        # The scale as an exact decimal rational keeps c * tanh(x / c) exact (slope 1 - 1 = 0 at r = 1).
        p = None if self.param is None else sp.Rational(f"{self.param:.4g}")
        return _R_PARTS[self.kind](p) * _A_PARTS[self.a_factor]

    def with_param(self, param: float) -> Term:
        return dataclasses.replace(self, param=param)


u = r - 1
lr = sp.log(r)
_R_PARTS = {
    "u2": lambda p: u**2,
    "u3": lambda p: u**3,
    "l2": lambda p: lr**2,
    "l3": lambda p: lr**3,
    "pos_u2": lambda p: sp.Max(0, u) ** 2,
    "neg_u2": lambda p: sp.Max(0, -u) ** 2,
    "hinge_up": lambda p: sp.Max(0, u - p),
    "hinge_down": lambda p: sp.Max(0, -u - p),
    "softclip_u": lambda p: u * A - p * sp.tanh(u * A / p),
    "softclip_l": lambda p: lr * A - p * sp.tanh(lr * A / p),
}
_A_PARTS = {"1": sp.Integer(1), "A": A, "A2": A**2, "absA": sp.Abs(A), "AabsA": A * sp.Abs(A)}
_BOUNDS = {"hinge_up": (0.005, 1.5), "hinge_down": (0.005, 0.9), "softclip_u": (0.02, 20.0),
           "softclip_l": (0.02, 20.0)}


def library(branch: str, knots=HINGE_KNOTS, clip_scales=SOFT_CLIP_SCALES) -> list[Term]:
    """The candidate terms for one branch (``|A|`` factors only when both signs share a model)."""
    a_factors = ["1", "A", "A2"] + (["absA", "AabsA"] if branch == "all" else [])
    terms = [Term(k, None, a) for k in ("u2", "u3", "l2", "l3", "pos_u2", "neg_u2") for a in a_factors]
    terms += [Term(k, p, a) for k in ("hinge_up", "hinge_down") for p in knots for a in a_factors]
    terms += [Term(k, p, "1") for k in ("softclip_u", "softclip_l") for p in clip_scales]
    return terms


def data_scales(r: np.ndarray, A: np.ndarray) -> tuple[tuple, tuple, dict]:
    """Hinge knots, soft-clip scales and search bounds that also cover where the data actually are.

    The fixed knots (0.05-0.5) suit ``r`` spread over ``[e^-1, e]``. Ratios recorded in training sit
    within ~1e-3 of 1, where a learned drift's kinks live, so quantiles of ``|r - 1|`` (and of
    ``|(r - 1) A|`` for the soft clips) join the library when they are finer than the fixed grid.
    """
    u, x = np.abs(r - 1.0), np.abs((r - 1.0) * A)
    fine_knots = [float(f"{q:.2g}") for q in np.quantile(u, (0.2, 0.5, 0.8)) if 1e-7 < q < HINGE_KNOTS[0]]
    fine_scales = [float(f"{q:.2g}") for q in np.quantile(x, (0.2, 0.5, 0.8)) if 1e-7 < q < SOFT_CLIP_SCALES[0]]
    knots = tuple(sorted(set(HINGE_KNOTS) | set(fine_knots)))
    scales = tuple(sorted(set(SOFT_CLIP_SCALES) | set(fine_scales)))
    bounds = dict(_BOUNDS)
    if fine_knots:
        for kind in ("hinge_up", "hinge_down"):
            bounds[kind] = (min(bounds[kind][0], knots[0] / 3), bounds[kind][1])
    if fine_scales:
        for kind in ("softclip_u", "softclip_l"):
            bounds[kind] = (min(bounds[kind][0], scales[0] / 3), bounds[kind][1])
    return knots, scales, bounds


class LinearBackend:
    """Greedy sparse regression over :func:`library`; deterministic, needs only numpy."""

    name = "linear"
    native_derivative = True

    def __init__(self, max_terms: int = 8, refine: bool = True, censored: bool = True, shortlist: int = 3,
                 refine_iters: int = 16):
        if int(max_terms) < 1:
            raise ValueError(f"linear backend: max_terms must be >= 1, got {max_terms}")
        self.max_terms = int(max_terms)
        self.refine = refine
        self.censored = censored
        self.shortlist = int(shortlist)
        self.refine_iters = int(refine_iters)

    def fit(self, task: FitTask) -> list[sp.Expr]:
        deadline = time.monotonic() + task.time_budget
        knots, scales, bounds = data_scales(task.r, task.A)
        terms = library(task.branch, knots, scales)
        cols = np.stack([self._column(t, task) for t in terms], axis=1)
        usable = np.linalg.norm(cols, axis=0) > 1e-12
        max_terms = min(self.max_terms, max(1, task.max_length // 4), int(usable.sum()))
        chosen: list[int] = []
        out = []
        for _ in range(max_terms):
            ranked = self._ranking(cols, chosen, usable, task)
            if not ranked:
                break
            best_loss, best_i = np.inf, ranked[0]
            for i in ranked[: self.shortlist]:  # refine the shortlist's scales, keep the best fit
                if self.refine and terms[i].param is not None and time.monotonic() < deadline:
                    terms, cols = self._refine(terms, cols, [*chosen, i], i, task, bounds[terms[i].kind])
                loss = self._loss(cols[:, [*chosen, i]], task)
                if loss < best_loss:
                    best_loss, best_i = loss, i
            chosen.append(best_i)
            weights = self._solve(cols[:, chosen], task)
            out.append(_combine([terms[i] for i in chosen], weights, cols[:, chosen], task.y))
            if time.monotonic() > deadline:
                break
        return out

    # -- numerics -----------------------------------------------------------------------------------
    @staticmethod
    def _column(term: Term, task: FitTask) -> np.ndarray:
        e = term.expr()
        if task.target == "derivative":
            e = sp.diff(e, r)
        return np.asarray(evaluate(e, task.r, task.A), dtype=float)

    def _solve(self, X: np.ndarray, task: FitTask) -> np.ndarray:
        """Least squares; censored: points where the source is 0 and the model <= 0 drop out."""
        w = np.linalg.lstsq(X, task.y, rcond=None)[0]
        if not self.censored:
            return w
        values = X if task.target == "drift" else None
        active = np.ones(task.y.size, dtype=bool)
        for _ in range(20):
            g = values @ w if values is not None else None
            if g is None:  # derivative target: activity judged on the source only
                new = task.f > 0
            else:
                new = (task.f > 0) | (g > 0)
            if new.sum() < X.shape[1] or np.array_equal(new, active):
                break
            active = new
            w = np.linalg.lstsq(X[active], task.y[active], rcond=None)[0]
        return w

    def _loss(self, X: np.ndarray, task: FitTask) -> float:
        w = self._solve(X, task)
        pred = X @ w
        if self.censored and task.target == "drift":
            pred = np.maximum(pred, 0.0)
        return float(np.mean((pred - task.y) ** 2))

    def _ranking(self, cols, chosen, usable, task) -> list[int]:
        """Columns ordered by the censored loss of ``chosen + [column]`` (plain OLS order if not censored).

        The censored loss matters: a soft clip that is negative where the source is zero costs nothing
        after ``Max(0, .)``, but plain least squares would rank it low.
        """
        order = _ols_ranking(cols, task.y, chosen, usable)
        if not self.censored:
            return order
        losses = {i: self._loss(cols[:, [*chosen, i]], task) for i in order}
        return sorted(order, key=losses.__getitem__)

    def _refine(self, terms, cols, subset, i, task, bounds):
        """Golden-section search on log(param) of term ``i`` (fitted with ``subset``) within ``bounds``."""
        t = terms[i]
        lo, hi = bounds
        a, b = math.log(max(lo, t.param / 3)), math.log(min(hi, t.param * 3))
        pos = subset.index(i)
        base = cols[:, subset]

        def loss(logp):
            trial = base.copy()
            trial[:, pos] = self._column(t.with_param(math.exp(logp)), task)
            return self._loss(trial, task)

        best = _golden(loss, a, b, iters=self.refine_iters)
        new_t = t.with_param(float(f"{math.exp(best):.4g}"))
        new_col = self._column(new_t, task)
        trial = base.copy()
        trial[:, pos] = new_col
        if self._loss(trial, task) > self._loss(base, task):
            return terms, cols
        terms, cols = list(terms), cols.copy()
        terms[i], cols[:, i] = new_t, new_col
        return terms, cols


def _ols_ranking(cols: np.ndarray, y: np.ndarray, chosen: list[int], usable: np.ndarray) -> list[int]:
    """Columns ordered by how much each would cut the plain least-squares residual (orthogonal least squares)."""
    if chosen:
        q, _ = np.linalg.qr(cols[:, chosen])
        resid = y - q @ (q.T @ y)
        ortho = cols - q @ (q.T @ cols)
    else:
        resid, ortho = y, cols
    norms = np.linalg.norm(ortho, axis=0)
    ok = usable & (norms > 1e-8 * np.maximum(np.linalg.norm(cols, axis=0), 1e-300))
    ok[chosen] = False
    with np.errstate(all="ignore"):
        gain = np.where(ok, (ortho.T @ resid) ** 2 / np.maximum(norms, 1e-300) ** 2, -1.0)
    order = [int(i) for i in np.argsort(-gain) if gain[i] > 0]
    return order


def _golden(fn, a: float, b: float, iters: int) -> float:
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = fn(c), fn(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = fn(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = fn(d)
    return c if fc < fd else d


def _combine(terms: list[Term], weights: np.ndarray, cols: np.ndarray, y: np.ndarray) -> sp.Expr:
    """The fitted sum, without terms whose contribution is round-off (collinear leftovers)."""
    scale = max(float(np.linalg.norm(y)), 1e-300)
    keep = [(t, w) for t, w, c in zip(terms, weights, cols.T, strict=True) if abs(w) * np.linalg.norm(c) > 1e-8 * scale]
    return sp.Add(*[_coefficient(w) * t.expr() for t, w in keep])


def _coefficient(w: float) -> sp.Expr:
    """6 significant digits; an integer when the fit lands on one (DPO's soft clips have weight 1)."""
    if abs(w - round(w)) <= 1e-6 * max(1.0, abs(w)):
        return sp.Integer(round(w))
    return sp.Rational(f"{w:.6g}")
