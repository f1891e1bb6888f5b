"""``distill``: symbolic distillation of a drift into a closed form that is valid by construction.

Pipeline: sample (r, A) and evaluate the source (and its r-derivative) -> per advantage branch, let
a backend propose expressions -> make each valid (:mod:`distill.construct`) -> score on held-out pairs
-> join branches and keep the Pareto front of complexity vs fidelity -> check every front member
symbolically and numerically -> pick the simplest valid one within ``tolerance`` of the best.
"""

from __future__ import annotations

import numbers
import time
import warnings

import numpy as np
import sympy as sp

from distill import construct
from distill._numeric import evaluate
from distill.backends import FitTask, resolve_backend
from distill.checks import check_candidate, to_drift
from distill.result import Candidate, DistillResult
from distill.sampling import DEFAULT_A_RANGE, DEFAULT_R_RANGE, TARGETS, check_traceable, make_samples
from drifts.base import check_progress


def distill(drift, backend="auto", time_budget: float = 60, seed: int = 0, *, n_samples: int = 4000,
            r_range=DEFAULT_R_RANGE, A_range=DEFAULT_A_RANGE, samples=None, target: str = "drift",
            split_advantage: bool = True, max_length: int = 30, holdout: float = 0.25,
            tolerance: float = 1e-3, max_front: int = 8, t: float | None = None,
            backend_options: dict | None = None) -> DistillResult:
    """Distil ``drift`` into a checked closed form ``f(r, A)``.

    Args:
      drift: a :class:`drifts.Drift`, a name or drift file (``drifts.get_drift``), or a JAX-traceable
        ``f(r, A)``.
      backend: ``"auto"`` (pyoperon pooled with the linear library if pyoperon is installed, else
        ``"linear"``), ``"pyoperon"``, ``"pysr"`` (needs Julia), ``"linear"`` (sparse regression over
        valid terms; needs nothing), or a backend object with ``name``, ``native_derivative``, ``fit(task)``.
      time_budget: seconds for the backend's search (shared by the branches); checks come on top.
      seed: seeds sampling, the held-out split and the backend.
      n_samples, r_range, A_range: the sampling design (log-uniform r, uniform A).
      samples: recorded ``(r, A)`` pairs (a pair of arrays or an ``(n, 2)`` array) used instead.
      target: ``"drift"`` fits ``f``; ``"derivative"`` fits ``df/dr`` (what the policy gradient feels).
      split_advantage: separate branches for ``A >= 0`` and ``A < 0`` joined by ``Piecewise``.
      max_length: the largest expression a backend may build (its own size measure).
      holdout: fraction of pairs held out for fidelity.
      tolerance: ``best`` is the simplest valid candidate with R^2 >= (best valid R^2) - tolerance.
      max_front: at most this many front members are built and checked (the most accurate ones,
        plus the simplest).
      t: training progress at which a temporal drift is distilled (required for temporal drifts).
      backend_options: keyword arguments for the backend's constructor.
    """
    source = _resolve_source(drift)
    _check_arguments(time_budget, target, max_length, tolerance, max_front, seed, backend_options)
    if source.temporal and t is None:
        raise ValueError(f"drift {source.name!r} is temporal: pass t=... (training progress in [0, 1]) to distil it "
                         "at one point of training")
    if t is not None:
        if not source.temporal:
            raise ValueError(f"t={t!r} was given, but drift {source.name!r} takes no training progress; drop t=")
        t = check_progress(t)
    fitter = resolve_backend(backend, backend_options)
    check_traceable(source, None if not source.temporal else t)

    t0 = time.perf_counter()
    data = make_samples(source, n_samples, r_range, A_range, samples, holdout, seed, t if source.temporal else None)
    if not np.any(data.target(target)[~data.test] != 0):
        raise ValueError(
            f"the source drift{'' if target == 'drift' else ' slope'} is 0 at every sample, so there is nothing to "
            f"fit (e.g. recorded ratios all inside PPO's clip region, r in [{data.r.min():.4g}, {data.r.max():.4g}]); "
            "widen r_range, or record pairs from a run that moves the policy further")
    branches = _branches(data.A, split_advantage)
    per_branch = {}
    fit_budget = float(time_budget) / len(branches)
    integrations = {"tried": 0, "done": 0}
    for i, (name, mask) in enumerate(branches.items()):
        train = data.subset(mask & ~data.test)
        test = data.subset(mask & data.test)
        if train.r.size < 10 or test.r.size < 2:
            raise ValueError(f"too few samples with {name} advantages ({train.r.size} training); raise n_samples "
                             "or widen A_range, or pass split_advantage=False")
        per_branch[name] = []
        for member, share in getattr(fitter, "members", [(fitter, 1.0)]):
            budget = fit_budget * share
            # A slope fitted by a backend without native derivatives must be integrated symbolically,
            # which is slow: it gets part of the budget, so that time_budget holds for the whole fit.
            integrate = target == "derivative" and not member.native_derivative
            deadline = time.perf_counter() + budget
            task = FitTask(train.r, train.A, train.target(target), train.f, target, name,
                           budget * (SEARCH_SHARE if integrate else 1.0), seed + i, int(max_length))
            per_branch[name] += _branch_candidates(member.fit(task), member, target, test, train, deadline,
                                                   integrations)
        per_branch[name] = _dedupe(per_branch[name])
    fit_seconds = time.perf_counter() - t0
    if integrations["tried"] and not integrations["done"]:
        warnings.warn(f"none of the {integrations['tried']} fitted slopes could be integrated into a closed-form "
                      "drift within the time budget, so the front has no candidate from that backend; raise "
                      "time_budget, or use backend='linear' (it fits slopes directly)", stacklevel=2)

    t1 = time.perf_counter()
    test_all = data.subset(data.test)
    front_exprs = _pareto_front(per_branch, test_all.target(target), max_front)
    front = [c for c in (_build_candidate(e, test_all, target, fitter.name) for e in front_exprs) if c is not None]
    check_seconds = time.perf_counter() - t1
    best = _select_best(front, tolerance)
    settings = {"backend": fitter.name, "time_budget": float(time_budget), "seed": int(seed), "target": target,
                "split_advantage": bool(split_advantage), "n_samples": int(data.r.size), "holdout": float(holdout),
                "r_range": [float(x) for x in r_range], "A_range": [float(x) for x in A_range],
                "recorded_samples": samples is not None, "max_length": int(max_length), "tolerance": tolerance,
                "t": t}
    return DistillResult(best, front, source, data, settings,
                         {"fit_seconds": fit_seconds, "check_seconds": check_seconds,
                          "total_seconds": time.perf_counter() - t0})


# -- argument handling ----------------------------------------------------------------------------------
def _resolve_source(drift):
    from drifts import Drift, get_drift

    if isinstance(drift, Drift):
        return drift
    if isinstance(drift, str) or hasattr(drift, "__fspath__") or callable(drift):
        return get_drift(drift)
    raise TypeError(f"cannot distil a {type(drift).__name__}: pass a Drift, a drift name or file, or f(r, A)")


def _check_arguments(time_budget, target, max_length, tolerance, max_front, seed=0, backend_options=None):
    def is_real(x):
        return not isinstance(x, bool) and isinstance(x, numbers.Real) and np.isfinite(x)

    def is_int(x):
        return not isinstance(x, bool) and isinstance(x, numbers.Integral)

    if not is_real(time_budget) or time_budget <= 0:
        raise ValueError(f"time_budget must be a positive number of seconds, got {time_budget!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if not is_int(max_length) or max_length < 3:
        raise ValueError(f"max_length must be an integer >= 3, got {max_length!r}")
    if not is_real(tolerance) or not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be a number in [0, 1), got {tolerance!r}")
    if not is_int(max_front) or max_front < 1:
        raise ValueError(f"max_front must be an integer >= 1, got {max_front!r}")
    if not is_int(seed) or not 0 <= seed < 2**31:
        raise ValueError(f"seed must be an integer in [0, 2**31), got {seed!r}")
    if backend_options is not None and not isinstance(backend_options, dict):
        raise TypeError(f"backend_options must be a dict of the backend's keyword arguments, got "
                        f"{type(backend_options).__name__} {backend_options!r}")


def _branches(A: np.ndarray, split: bool) -> dict[str, np.ndarray]:
    if split:
        return {"positive": A >= 0, "negative": A < 0}
    return {"all": np.ones(A.shape, dtype=bool)}


# -- per-branch candidates ------------------------------------------------------------------------------
def _valid_form(g: sp.Expr, fitter, target: str, deadline: float = float("inf"),
                integrations: dict | None = None) -> sp.Expr | None:
    """The valid drift built from one backend expression (``None`` if it cannot be made valid)."""
    g = construct.round_floats(g)
    if target == "derivative" and not fitter.native_derivative:
        remaining = deadline - time.perf_counter()
        if remaining < MIN_INTEGRATION_SECONDS:
            return None
        if integrations is not None:
            integrations["tried"] += 1
        g = construct.integrate_slope(g, timeout=min(INTEGRATION_TIMEOUT, remaining))
        if g is None:
            return None
        if integrations is not None:
            integrations["done"] += 1
    f = construct.make_valid(g)
    if f.has(sp.zoo, sp.oo, -sp.oo, sp.nan) or not f.free_symbols <= {construct.r, construct.A}:
        return None
    return f


def _dedupe(cands: list[tuple[sp.Expr, int, float]]) -> list[tuple[sp.Expr, int, float]]:
    return list({str(e): (e, c, sse) for e, c, sse in cands}.values())


MAX_INTEGRATIONS = 6  # per branch: symbolic integration is slow, so only the best slopes are integrated
INTEGRATION_TIMEOUT = 10.0  # seconds for one slope's symbolic integration
MIN_INTEGRATION_SECONDS = 0.5  # not worth starting a sandboxed integration with less time left
SEARCH_SHARE = 0.6  # of a branch's budget, for the search when its slopes must then be integrated


def _most_accurate(raw: list[sp.Expr], train, k: int) -> list[sp.Expr]:
    """The ``k`` raw slope fits closest to the source's ``df/dr`` on training pairs (before integration)."""
    def sse(g):
        with np.errstate(all="ignore"):
            err = np.sum((np.asarray(evaluate(g, train.r, train.A), dtype=float) - train.dfdr) ** 2)
        return err if np.isfinite(err) else np.inf

    return sorted(raw, key=sse)[:k]


def _predict(expr: sp.Expr, r: np.ndarray, A: np.ndarray, target: str) -> np.ndarray:
    e = sp.diff(expr, construct.r) if target == "derivative" else expr
    with np.errstate(all="ignore"):
        return np.asarray(evaluate(e, r, A), dtype=float)


def _branch_candidates(raw, fitter, target, test, train, deadline: float = float("inf"),
                       integrations: dict | None = None) -> list[tuple[sp.Expr, int, float]]:
    """(valid expression, complexity, held-out SSE) per distinct candidate, plus the zero drift."""
    y = test.target(target)
    out = {"0": (sp.Integer(0), 1, float(np.sum(y**2)))}
    if target == "derivative" and not fitter.native_derivative:
        raw = _most_accurate(raw, train, MAX_INTEGRATIONS)
    for g in raw:
        f = _valid_form(g, fitter, target, deadline, integrations)
        if f is None or str(f) in out:
            continue
        pred = _predict(f, test.r, test.A, target)
        if not np.all(np.isfinite(pred)):
            continue
        out[str(f)] = (f, construct.complexity(f), float(np.sum((pred - y) ** 2)))
    return list(out.values())


def _pareto_front(per_branch: dict, y_test: np.ndarray, max_front: int) -> list[sp.Expr]:
    """Combine branches (errors add over disjoint held-out sets) and keep the non-dominated ones."""
    sst = float(np.sum((y_test - y_test.mean()) ** 2)) or 1.0
    if len(per_branch) == 1:
        combos = [(e, c, s) for e, c, s in per_branch["all"]]
    else:
        combos = [(construct.join_branches(ep, en), cp + cn + 3, sp_ + sn)
                  for ep, cp, sp_ in per_branch["positive"] for en, cn, sn in per_branch["negative"]]
    combos.sort(key=lambda x: (x[1], x[2]))
    front, best_sse = [], np.inf
    for expr, _, sse in combos:
        if sse < best_sse * (1 - 1e-9):
            front.append((expr, 1 - sse / sst))
            best_sse = sse
    if len(front) > max_front:
        front = [front[0]] + front[-(max_front - 1):] if max_front > 1 else front[-1:]
    return [e for e, _ in front]


def _r2(pred: np.ndarray, y: np.ndarray) -> float:
    sst = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((pred - y) ** 2)) / sst if sst > 0 else float("nan")


def _build_candidate(expr: sp.Expr, test, target: str, backend: str) -> Candidate | None:
    try:
        drift = to_drift(expr)
    except ValueError:  # e.g. longer than the expression family's size limits: cannot be saved, dropped
        return None
    report = check_candidate(expr, drift)
    r2 = {"drift": _r2(_predict(expr, test.r, test.A, "drift"), test.f),
          "derivative": _r2(_predict(expr, test.r, test.A, "derivative"), test.dfdr)}
    return Candidate(expr, drift, report, r2[target], construct.complexity(expr), r2, backend)


def _select_best(front: list[Candidate], tolerance: float) -> Candidate | None:
    valid = [c for c in front if c.valid and np.isfinite(c.fidelity)]
    if not valid:
        return None
    top = max(c.fidelity for c in valid)
    return min((c for c in valid if c.fidelity >= top - tolerance), key=lambda c: (c.complexity, -c.fidelity))
