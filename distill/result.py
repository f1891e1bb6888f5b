"""What :func:`distill.distill` returns: candidates, the Pareto front, outputs and evaluation."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp

from distill.checks import CandidateReport


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One checked closed form.

    ``expression``: sympy in ``r`` and ``A``; ``drift``: its JAX :class:`~drifts.Drift` (family
    ``expression``: saves and loads); ``report``: symbolic and numeric verdicts; ``fidelity``: R^2 of
    the target (drift or ``df/dr``) on held-out pairs; ``r2``: both R^2s; ``complexity``: tree size.
    """

    expression: sp.Expr
    drift: Any
    report: CandidateReport
    fidelity: float
    complexity: int
    r2: dict
    backend: str

    @property
    def valid(self) -> bool:
        return self.report.valid

    def to_string(self, digits: int = 4) -> str:
        return str(_short(self.expression, digits))

    def to_latex(self, digits: int = 4) -> str:
        return sp.latex(_short(self.expression, digits))

    def to_jax(self):
        return self.drift

    def to_dict(self) -> dict:
        return {
            "expression": str(self.expression),
            "latex": self.to_latex(),
            "fidelity": _f(self.fidelity),
            "r2": {k: _f(v) for k, v in self.r2.items()},
            "complexity": self.complexity,
            "valid": self.valid,
            "report": self.report.to_dict(),
            "backend": self.backend,
        }


MAX_DISPLAY_DIGITS = 15


def _short(expr: sp.Expr, digits: int) -> sp.Expr:
    """The expression with its constants rounded for display, as far as the display stays a valid drift.

    Display only (the drift keeps its exact constants), but users copy what they see: rounded naively,
    a hinge ``Max(0, 0.9999935 - r)`` becomes ``Max(0, 1.0 - r)``, which has a kink at ``r = 1``. So a
    constant near 1 keeps ``digits`` significant digits of its distance to 1, and if the rounded form
    still loses a condition at ``r = 1`` that the exact one has, more digits are shown.
    """
    return _display_form(expr, int(digits))


@functools.lru_cache(maxsize=256)
def _display_form(expr: sp.Expr, digits: int) -> sp.Expr:
    numbers = [x for x in expr.atoms(sp.Float, sp.Rational) if not x.is_Integer]
    if not numbers:
        return expr
    exact = _identity_errors(expr)
    for d in range(max(1, digits), MAX_DISPLAY_DIGITS + 1):
        shown = expr.xreplace({x: _display_number(x, d) for x in numbers})
        value, slope = _identity_errors(shown)
        if value <= max(2 * exact[0], 1e-10) and slope <= max(2 * exact[1], 1e-7):
            return shown
    return expr


def _display_number(x: sp.Expr, digits: int) -> sp.Float:
    v = float(x)
    text = f"{v:.{digits}g}"
    dist = abs(abs(v) - 1.0)
    if 0 < dist < 0.1:  # keep the distance to 1 (where the drift conditions live), not just the value
        text = f"{v:.{digits - 1 - math.floor(math.log10(dist))}f}"
    return sp.Float(text, max(digits, len(text.lstrip("-0.").replace(".", ""))))


_A_GRID = np.concatenate([np.linspace(-4.0, 4.0, 401), [0.0, 1e-3, -1e-3]])
_SIDES = (1e-9, -1e-9)


def _identity_errors(expr: sp.Expr) -> tuple[float, float]:
    """Largest ``|f(1, A)|`` and one-sided autodiff slope at ``r = 1 +- 1e-9`` over an ``A`` grid (float64).

    Cheap enough to run per display (a symbolic proof of a 500-character fit takes tens of seconds),
    and what matters here: a rounded hinge at ``r = 1`` shows up as an O(1) slope, a broken cancellation
    between rounded constants as a small one.
    """
    import jax
    import jax.numpy as jnp

    from distill._numeric import evaluate

    with jax.enable_x64(True):
        A = jnp.asarray(_A_GRID)

        def f(r):
            return evaluate(expr, r, A, xp=jnp)

        value = float(jnp.max(jnp.abs(f(jnp.ones_like(A)))))
        slope = max(float(jnp.max(jnp.abs(jax.jvp(f, (jnp.full_like(A, 1.0 + s),), (jnp.ones_like(A),))[1])))
                    for s in _SIDES)
    return (value if np.isfinite(value) else np.inf), (slope if np.isfinite(slope) else np.inf)


def _f(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


@dataclasses.dataclass(frozen=True)
class DistillResult:
    """``best`` (simplest valid candidate within ``tolerance`` of the best valid fidelity, or None),
    ``front`` (Pareto front of complexity vs fidelity, simplest first, valid and invalid alike),
    the source drift, the samples used and timings."""

    best: Candidate | None
    front: list[Candidate]
    source: Any
    samples: Any
    settings: dict
    timings: dict

    def _need_best(self) -> Candidate:
        if self.best is None:
            raise ValueError(
                "no valid candidate was found; inspect result.front for the failed checks, or retry with a "
                "larger time_budget, another seed, or backend='linear'"
            )
        return self.best

    # -- outputs --------------------------------------------------------------------------------------
    def to_string(self, digits: int = 4) -> str:
        return self._need_best().to_string(digits)

    def to_latex(self, digits: int = 4) -> str:
        """LaTeX of the best expression, ``f(r, A) = ...``."""
        return "f(r, A) = " + self._need_best().to_latex(digits)

    def to_jax(self):
        return self._need_best().drift

    def to_dict(self) -> dict:
        return {
            "best": None if self.best is None else self.best.to_dict(),
            "front": [c.to_dict() for c in self.front],
            "source": getattr(self.source, "name", str(self.source)),
            "settings": self.settings,
            "timings": {k: round(float(v), 3) for k, v in self.timings.items()},
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON (folders created; atomic: an existing file is replaced whole or kept)."""
        from mirrorlearn._archive import atomic_write

        text = json.dumps(self.to_dict(), indent=2)
        return atomic_write(path, lambda handle: handle.write(text), mode="w")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the best candidate as a drift file (loadable with ``drifts.get_drift(path)``)."""
        best = self._need_best()
        meta = {"distilled_from": getattr(self.source, "name", "source"), "fidelity": _f(best.fidelity),
                "backend": best.backend, "expression": str(best.expression)}
        return best.drift.save(path, extra_meta=meta)

    def summary(self) -> str:
        lines = [f"{'cplx':>5} {'R2':>9} {'valid':>5}  expression"]
        for c in self.front:
            mark = "*" if c is self.best else " "
            lines.append(f"{c.complexity:>5} {c.fidelity:>9.6f} {str(c.valid):>5} {mark}{c.to_string(3)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        best = "none valid" if self.best is None else f"{self.best.to_string(3)} (R2={self.best.fidelity:.5f})"
        return f"DistillResult(best={best}, front={len(self.front)} candidates)"

    # -- picture ----------------------------------------------------------------------------------------
    def plot(self, candidate: Candidate | None = None, log_r_range=(-1.0, 1.0), A_range=(-4.0, 4.0),
             slices=(-2.0, -0.5, 0.5, 2.0), resolution: int = 161):
        """Source vs distilled: heat maps of ``d/dr [r A - f(r, A)]`` over (log r, A) and slices at fixed A."""
        from distill.plotting import plot_comparison

        cand = candidate or self._need_best()
        return plot_comparison(self.source, cand.drift, title=cand.to_string(3), log_r_range=log_r_range,
                               A_range=A_range, slices=slices, resolution=resolution, t=self.settings.get("t"))

    # -- training -----------------------------------------------------------------------------------------
    def evaluate(self, env, total_timesteps: int = 100_000, n_seeds: int = 5, seed: int = 0, n_episodes: int = 10,
                 **agent_kwargs) -> dict:
        """Train ``MirrorAgent`` with the distilled and with the source drift; returns side by side.

        ``{"distilled": {...}, "source": {...}, "relative_gap": (distilled - source) / |source|}`` where
        each side is ``agent.evaluate(env, n_episodes)`` (``mean_return``, ``std_return``, ``returns``).
        """
        MirrorAgent = _mirror_agent_class()
        best = self._need_best()
        if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
            # checked here too: agent.evaluate would say so only after both agents have trained
            raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
        out = {}
        for label, drift in (("distilled", best.drift), ("source", self.source)):
            agent = MirrorAgent(drift=drift, total_timesteps=total_timesteps, n_seeds=n_seeds, seed=seed,
                                **agent_kwargs)
            agent.fit(env)
            res = agent.evaluate(env, n_episodes=n_episodes)
            out[label] = {k: (np.asarray(v).tolist() if k == "returns" else float(v)) for k, v in res.items()}
        src = out["source"]["mean_return"]
        out["relative_gap"] = (out["distilled"]["mean_return"] - src) / max(abs(src), 1e-12)
        return out


def _mirror_agent_class():
    try:
        from agents import MirrorAgent
    except ImportError:
        from agents.estimators import MirrorAgent  # older layouts export it from here only
    return MirrorAgent
