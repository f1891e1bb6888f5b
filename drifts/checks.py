"""Numeric checks of the three drift conditions, in float64, for any JAX-traceable drift.

A drift ``f(r, A)`` (or ``f(r, A, t)``) is valid for Mirror Learning when, for all ``r > 0``, all ``A``
(and all ``t`` in ``[0, 1]``):

1. ``nonnegative``:            ``f(r, A) >= 0``
2. ``zero_at_identity``:       ``f(1, A) = 0``
3. ``zero_grad_at_identity``:  ``df/dr (1, A) = 0``

:func:`check_drift` searches for violations on a bounded domain and reports, per condition, the worst
value it found and where. What it looks at, and why:

* **Float64, locally.** The checks run inside ``jax.enable_x64(True)`` (a context manager, so the rest
  of the process keeps its float32 training) and the drift's parameters are cast to float64; otherwise
  float32 round-off (~1e-7) would drown the tolerances below.
* **Non-negativity**: a dense grid, uniform in ``log r`` plus points clustered geometrically around
  ``r = 1`` (``|log r| = 1e-1 ... 1e-8``), times a grid of ``A`` (and ``t_values``). Then a vectorised
  pattern search (compass + diagonal moves, step halving, projected onto the domain) starts from the
  minimum of every block of the grid, so that a narrow negative pocket whose shoulder shows on the grid
  is followed down to its bottom. Passes when the smallest value found is ``>= -tol``.
* **Zero at identity**: ``|f(1, A)| <= tol`` on a dense ``A`` grid (1001 points and ``A = 0``) times ``t``.
* **Zero derivative at identity**: ``jax.grad`` at exactly ``r = 1`` is not enough (it returns 0 for
  ``max(r - 1, 1 - r)``, a kink with one-sided slopes +-1). We use *one-sided* quantities from both
  sides, with steps ``h = 1e-2 ... 1e-14``:
  the difference quotients ``q+(h) = (f(1+h) - f(1)) / h``, ``q-(h) = (f(1) - f(1-h)) / h`` and the
  autodiff slopes ``g(1 +- h)`` just beside ``r = 1``. The one-sided derivative is judged from the
  smallest steps: the slope at the two smallest steps and the best difference quotient among steps
  ``h <= 1e-4`` must both be at most ``grad_tol + fd_rel_tol * S``, with ``S`` the slope scale beside
  ``r = 1`` for that ``A`` (and ``t``): the largest ``|f(1 +- h)|`` over the steps, divided by the largest
  step. A smooth drift's slope at the smallest step is ``f'' h``, far below its ``S``, however large
  ``f''`` (``1e8 (r - 1)^2`` passes); a kink's stays at its constant, about ``S`` itself. A kink
  (``|r - 1|``, ``ReLU(r - 1)``, ``(r - 1) A``) has quotients and slopes that stay at a non-zero
  constant and fails; LPO's ``ReLU(net - 1e-6 + PPO)`` is exactly zero for
  ``|r - 1| < 1e-6 / |net'(1)|`` and passes (for ``|net'(1)|`` up to about ``3e7``); the
  difference quotients also catch kinks hidden from autodiff (``stop_gradient``, ``floor``).

What it cannot do: prove anything outside the domain, or find a negative pocket narrower than the
grid spacing whose shoulders do not show on the grid (use :func:`drifts.symbolic.check_drift_symbolic`
for proofs). It never passes a function it did not evaluate: NaN or inf anywhere fails the relevant
condition, a function that raises gives an invalid report naming the error, and a function that JAX
cannot trace raises ``TypeError``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from drifts.base import Drift

CONDITIONS = ("nonnegative", "zero_at_identity", "zero_grad_at_identity")
_DESCRIPTIONS = {
    "nonnegative": "f(r, A) >= 0",
    "zero_at_identity": "f(1, A) = 0",
    "zero_grad_at_identity": "df/dr(1, A) = 0",
}
DEFAULT_T_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_STEPS = tuple(float(h) for h in np.logspace(-2, -14, 25))


# ------------------------------------------------------------------------------------------ results
@dataclasses.dataclass(frozen=True)
class ConditionResult:
    """One condition's verdict.

    ``worst`` is the most violating value found (the minimum of ``f`` for ``nonnegative``, the largest
    ``|f(1, A)|`` for ``zero_at_identity``, the largest one-sided derivative estimate for
    ``zero_grad_at_identity``; NaN when the function returned NaN/inf or could not be evaluated);
    ``where`` is ``(r, A)`` or ``(r, A, t)``; ``tol`` the tolerance applied; ``detail`` a sentence.
    """

    passed: bool
    worst: float
    where: tuple[float, ...] | None
    tol: float
    detail: str = ""

    def __bool__(self) -> bool:
        return self.passed


@dataclasses.dataclass(frozen=True)
class DriftReport:
    """Result of :func:`check_drift`: ``valid`` iff all three conditions passed on the domain."""

    name: str
    valid: bool
    conditions: Mapping[str, ConditionResult]
    domain: Mapping[str, Any]
    error: str | None = None
    seconds: float = float("nan")

    def __bool__(self) -> bool:
        return self.valid

    @property
    def failed(self) -> list[str]:
        """Names of the violated conditions."""
        return [k for k, c in self.conditions.items() if not c.passed]

    def summary(self) -> str:
        """One line per condition: PASS/FAIL, the worst value, where, and the tolerance."""
        head = f"drift {self.name!r}: {'VALID' if self.valid else 'INVALID'}"
        if self.error:
            head += f" ({self.error})"
        lines = [head]
        for key, c in self.conditions.items():
            where = _fmt_where(c.where)
            lines.append(
                f"  {'PASS' if c.passed else 'FAIL'} {key:<22} [{_DESCRIPTIONS[key]}] worst {c.worst:.3g}"
                f"{' at ' + where if where else ''} (tol {c.tol:.0e}){': ' + c.detail if c.detail else ''}"
            )
        dom = self.domain
        lines.append(
            f"  domain: log r in {tuple(dom.get('log_r_range', ()))}, A in {tuple(dom.get('A_range', ()))}"
            + (f", t in {tuple(dom['t_values'])}" if dom.get("temporal") else "")
        )
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        """JSON-serialisable form (for the CLI)."""
        return {
            "name": self.name,
            "valid": self.valid,
            "error": self.error,
            "seconds": self.seconds,
            "domain": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.domain.items()},
            "conditions": {
                k: {"passed": c.passed, "worst": _json_float(c.worst),
                    "where": None if c.where is None else [float(x) for x in c.where],
                    "tol": c.tol, "detail": c.detail}
                for k, c in self.conditions.items()
            },
        }


@dataclasses.dataclass(frozen=True)
class PopulationReport:
    """Result of :func:`check_drift_population`: one :class:`DriftReport` per member."""

    reports: tuple[DriftReport, ...]
    seconds: float = float("nan")

    @property
    def valid(self) -> np.ndarray:
        """Boolean array, one entry per member."""
        return np.array([r.valid for r in self.reports], dtype=bool)

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, i: int) -> DriftReport:
        return self.reports[i]

    def __iter__(self):
        return iter(self.reports)

    def summary(self) -> str:
        bad = [i for i, r in enumerate(self.reports) if not r.valid]
        text = f"{len(self.reports) - len(bad)}/{len(self.reports)} members valid"
        return text + (f"; invalid: {bad}" if bad else "")

    __str__ = summary


def _json_float(x: float):
    return x if math.isfinite(x) else str(x)


def _fmt_where(where) -> str:
    if where is None:
        return ""
    names = ("r", "A", "t")
    return "(" + ", ".join(f"{n}={v:.6g}" for n, v in zip(names, where, strict=False)) + ")"


# ------------------------------------------------------------------------------------------ config
@dataclasses.dataclass(frozen=True)
class _Config:
    log_r_range: tuple[float, float]
    A_range: tuple[float, float]
    t_values: tuple[float, ...]
    grid: tuple[int, int]
    tol: float
    grad_tol: float
    fd_rel_tol: float
    steps: tuple[float, ...]
    n_identity: int
    n_grad_A: int
    search_iters: int
    block: int
    temporal: bool


def _make_config(temporal: bool, log_r_range, A_range, t_values, grid, tol, grad_tol, fd_rel_tol, steps,
                 n_identity, n_grad_A, search_iters) -> _Config:
    lo, hi = _pair("log_r_range", log_r_range)
    a_lo, a_hi = _pair("A_range", A_range)
    if not (lo < 0 < hi):
        raise ValueError(f"log_r_range must contain 0 (r = 1) strictly inside, got {log_r_range}")
    if max(-lo, hi) > MAX_LOG_R:
        raise ValueError(f"log_r_range must lie within [-{MAX_LOG_R}, {MAX_LOG_R}] (r = exp(log r) overflows float64 "
                         f"beyond), got {log_r_range}")
    if not a_lo < a_hi:
        raise ValueError(f"A_range must be (low, high) with low < high, got {A_range}")
    ts = tuple(_numbers("t_values", t_values)) if temporal else (0.0,)
    if temporal and (not ts or any(not 0.0 <= x <= 1.0 for x in ts)):
        raise ValueError(f"t_values must be a non-empty sequence in [0, 1], got {t_values}")
    n_r, n_a = _pair("grid", grid, integers=True)
    if n_r < 16 or n_a < 8:
        raise ValueError(f"grid must be at least (16, 8) points (log r, A), got {grid}")
    hs = tuple(sorted(_numbers("steps", steps), reverse=True))
    if len(hs) < 3 or hs[-1] <= 0 or hs[0] >= 0.5:
        raise ValueError("steps must be at least 3 positive step sizes below 0.5 (e.g. 1e-2 ... 1e-14)")
    tols = [_non_negative(name, v) for name, v in (("tol", tol), ("grad_tol", grad_tol), ("fd_rel_tol", fd_rel_tol))]
    counts = [_count(name, v, low) for name, v, low in (("n_identity", n_identity, 2), ("n_grad_A", n_grad_A, 2),
                                                        ("search_iters", search_iters, 0))]
    return _Config((lo, hi), (a_lo, a_hi), ts, (int(n_r), int(n_a)), *tols, hs, *counts, 16, temporal)


MAX_LOG_R = 700.0  # exp(710) overflows float64


def _numbers(name: str, value: Any) -> list[float]:
    """A sequence of finite real numbers, or a ValueError naming ``name``."""
    try:
        out = [float(x) for x in value if not isinstance(x, (bool, str, bytes))] if not isinstance(value, str) else []
        if isinstance(value, str) or len(out) != len(value):
            raise TypeError
    except TypeError:
        raise ValueError(f"{name} must be a sequence of numbers, got {value!r}") from None
    if not all(math.isfinite(x) for x in out):
        raise ValueError(f"{name} must be finite numbers, got {value!r}")
    return out


def _pair(name: str, value: Any, integers: bool = False) -> tuple[float, float]:
    what = "integers" if integers else "numbers"
    try:
        out = _numbers(name, value)
    except ValueError as err:
        if "finite" in str(err):
            raise
        out = []
    if len(out) != 2 or (integers and not all(x == int(x) for x in out)):
        raise ValueError(f"{name} must be a pair of {what} ({'n_log_r, n_A' if name == 'grid' else 'low, high'}), "
                         f"got {value!r}")
    return out[0], out[1]


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def validate_check_options(**options: Any) -> None:
    """Raise ``TypeError``/``ValueError`` now for options :func:`check_drift` would refuse (or not know)."""
    import inspect

    sig = inspect.signature(check_drift)
    unknown = sorted(set(options) - set(sig.parameters) - {"f"}) or (["f"] if "f" in options else [])
    if unknown:
        known = [p for p in sig.parameters if p != "f"]
        raise TypeError(f"unknown check option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                        f"check_drift takes {', '.join(known)}")
    bound = sig.bind(None, **options)
    bound.apply_defaults()
    args = dict(bound.arguments)
    _make_config(True, *(args[k] for k in ("log_r_range", "A_range", "t_values", "grid", "tol", "grad_tol",
                                            "fd_rel_tol", "steps", "n_identity", "n_grad_A", "search_iters")))


def _points(cfg: _Config) -> dict[str, np.ndarray]:
    """All the evaluation points (float64 numpy), passed to the compiled core as arguments."""
    lo, hi = cfg.log_r_range
    near = 10.0 ** -np.arange(1.0, 8.5, 0.5)
    u = np.unique(np.concatenate([np.linspace(lo, hi, cfg.grid[0]), [0.0], near[near < hi], -near[-near > lo]]))
    a = np.unique(np.concatenate([np.linspace(*cfg.A_range, cfg.grid[1]), [0.0] if cfg.A_range[0] < 0 < cfg.A_range[1]
                                  else []]))
    a_id = np.unique(np.concatenate([np.linspace(*cfg.A_range, cfg.n_identity), a]))
    a_g = np.linspace(*cfg.A_range, cfg.n_grad_A)
    if cfg.A_range[0] < 0 < cfg.A_range[1]:
        a_g = np.unique(np.concatenate([a_g, [0.0, 1e-3, -1e-3]]))
    return {
        "u": u, "a": a, "t": np.asarray(cfg.t_values), "a_id": a_id, "a_g": a_g,
        "h": np.asarray(cfg.steps),
    }


# ------------------------------------------------------------------------------------------ core
def _scalar_fn(drift: Drift) -> Callable:
    """``fs(params, r, A, t) -> scalar`` for scalar inputs; vmapped by the core."""
    if drift.temporal:
        def fs(params, r, A, t):
            return jnp.reshape(drift.fn(params, r, A, t), ())
    else:
        def fs(params, r, A, t):
            return jnp.reshape(drift.fn(params, r, A), ())
    return fs


def _block_argmins(vals: jax.Array, block: int) -> jax.Array:
    """Flat index of the minimum of every ``block x block`` tile of the last two axes of ``vals``."""
    n_t, n_u, n_a = vals.shape
    pu, pa = -n_u % block, -n_a % block
    padded = jnp.pad(vals, ((0, 0), (0, pu), (0, pa)), constant_values=jnp.inf)
    bu, ba = (n_u + pu) // block, (n_a + pa) // block
    tiles = padded.reshape(n_t, bu, block, ba, block).transpose(0, 1, 3, 2, 4).reshape(n_t, bu, ba, block * block)
    k = jnp.argmin(tiles, axis=-1)
    iu = jnp.arange(bu)[None, :, None] * block + k // block
    ia = jnp.arange(ba)[None, None, :] * block + k % block
    it = jnp.broadcast_to(jnp.arange(n_t)[:, None, None], iu.shape)
    iu, ia = jnp.minimum(iu, n_u - 1), jnp.minimum(ia, n_a - 1)
    return (it * n_u * n_a + iu * n_a + ia).reshape(-1)


def _build_core(fs: Callable, cfg: _Config) -> Callable:
    """The compiled check: params -> small dict of per-condition summaries (all jax arrays)."""
    d = 3 if cfg.temporal else 2
    dirs = np.array([v for v in np.ndindex(*(3,) * d) if any(x != 1 for x in v)], dtype=float) - 1.0

    def F(params, r, A, t):
        # The barrier keeps XLA from constant-folding what follows when f is a constant (a candidate
        # "0" from distillation): folding an argmax over the whole grid took seconds and logged errors.
        return jax.lax.optimization_barrier(jax.vmap(fs, in_axes=(None, 0, 0, 0))(params, r, A, t))

    def G(params, r, A, t):
        return jax.vmap(jax.grad(fs, argnums=1), in_axes=(None, 0, 0, 0))(params, r, A, t)

    def core(params, pts):
        u, a, tv = pts["u"], pts["a"], pts["t"]
        # ---- (1) non-negativity: dense grid ------------------------------------------------------
        T, U, Av = jnp.meshgrid(tv, u, a, indexing="ij")
        vals = F(params, jnp.exp(U.ravel()), Av.ravel(), T.ravel())
        bad = ~jnp.isfinite(vals)
        n_bad = jnp.sum(bad)
        first_bad = jnp.argmax(bad)
        clean = jnp.where(bad, jnp.inf, vals)
        # ---- local pattern search from every block minimum ---------------------------------------
        seeds = _block_argmins(clean.reshape(T.shape), cfg.block)
        lo = jnp.array([cfg.log_r_range[0], cfg.A_range[0], 0.0][:d])
        hi = jnp.array([cfg.log_r_range[1], cfg.A_range[1], 1.0][:d])
        x0 = jnp.stack([U.ravel()[seeds], Av.ravel()[seeds], T.ravel()[seeds]][:d], axis=-1)
        spacing = jnp.array([(hi[0] - lo[0]) / cfg.grid[0], (cfg.A_range[1] - cfg.A_range[0]) / cfg.grid[1],
                             0.25][:d])

        def ev(x):
            tt = x[..., 2] if cfg.temporal else jnp.zeros_like(x[..., 0])
            out = F(params, jnp.exp(x[..., 0].ravel()), x[..., 1].ravel(), tt.ravel()).reshape(x.shape[:-1])
            return jnp.where(jnp.isfinite(out), out, -jnp.inf)  # a NaN found by the search is a violation

        def step(_, carry):
            x, fx, s = carry
            cand = jnp.clip(x[:, None, :] + s[:, None, :] * dirs[None], lo, hi)
            fc = ev(cand)
            j = jnp.argmin(fc, axis=1)
            best = jnp.take_along_axis(fc, j[:, None], axis=1)[:, 0]
            better = best < fx
            x = jnp.where(better[:, None], cand[jnp.arange(x.shape[0]), j], x)
            fx = jnp.where(better, best, fx)
            s = jnp.where(better[:, None], s, 0.5 * s)
            return x, fx, s

        s0 = jnp.broadcast_to(spacing, x0.shape)
        xs, fxs, _ = jax.lax.fori_loop(0, cfg.search_iters, step, (x0, clean[seeds], s0))
        k_s = jnp.argmin(fxs)
        k_g = jnp.argmin(clean)
        grid_where = jnp.stack([jnp.exp(U.ravel()[k_g]), Av.ravel()[k_g], T.ravel()[k_g]])
        xs_best = xs[k_s]
        search_where = jnp.stack([jnp.exp(xs_best[0]), xs_best[1], xs_best[2] if cfg.temporal else 0.0])
        use_search = fxs[k_s] < clean[k_g]
        neg_min = jnp.where(use_search, fxs[k_s], clean[k_g])
        neg_where = jnp.where(use_search, search_where, grid_where)
        bad_where = jnp.stack([jnp.exp(U.ravel()[first_bad]), Av.ravel()[first_bad], T.ravel()[first_bad]])

        # ---- (2) zero at identity ----------------------------------------------------------------
        Ti, Ai = jnp.meshgrid(tv, pts["a_id"], indexing="ij")
        f1 = F(params, jnp.ones(Ai.size), Ai.ravel(), Ti.ravel())
        id_err = jnp.where(jnp.isfinite(f1), jnp.abs(f1), jnp.inf)
        k_i = jnp.argmax(id_err)
        id_where = jnp.stack([1.0, Ai.ravel()[k_i], Ti.ravel()[k_i]])

        # ---- (3) one-sided derivatives at identity -----------------------------------------------
        h = pts["h"]
        Tg, Ag = jnp.meshgrid(tv, pts["a_g"], indexing="ij")
        tg, ag = Tg.ravel(), Ag.ravel()
        n, m = ag.size, h.size
        f0 = F(params, jnp.ones(n), ag, tg)
        side = jnp.array([1.0, -1.0])
        R = 1.0 + side[:, None, None] * h[None, None, :] + jnp.zeros((2, n, 1))
        AA = jnp.broadcast_to(ag[None, :, None], R.shape)
        TT = jnp.broadcast_to(tg[None, :, None], R.shape)
        fr = F(params, R.ravel(), AA.ravel(), TT.ravel()).reshape(R.shape)
        gr = G(params, R.ravel(), AA.ravel(), TT.ravel()).reshape(R.shape)
        h_eff = jnp.abs(R - 1.0)  # the step actually taken in float64
        q = side[:, None, None] * (fr - f0[None, :, None]) / h_eff
        q_abs = jnp.where(jnp.isfinite(q), jnp.abs(q), jnp.inf)
        window = h <= 1e-4
        q_best = jnp.min(jnp.where(window[None, None, :], q_abs, jnp.inf), axis=-1)  # (2, n)
        g_tail = gr[..., m - 2:]
        g_abs = jnp.where(jnp.isfinite(g_tail), jnp.abs(g_tail), jnp.inf)
        g_lim = jnp.max(g_abs, axis=-1)  # (2, n)
        g_signed = jnp.take_along_axis(g_tail, jnp.argmax(g_abs, axis=-1)[..., None], axis=-1)[..., 0]
        # The slopes' own scale beside r = 1, per (A, t): the largest |f| at the steps over the largest
        # step. A smooth drift's slope at step h is ~ f'' h, far below it; a kink's stays at its constant c,
        # about the scale itself. Measured here, not over |log r| <= 0.5, where a large smooth term far
        # from r = 1 (1e7 (r - 1)^4) would make room for a kink (slope 25) at r = 1.
        slope_scale = jnp.max(jnp.where(jnp.isfinite(fr), jnp.abs(fr), 0.0), axis=(0, 2)) / h[0]  # (n,)
        slope_tol = cfg.grad_tol + cfg.fd_rel_tol * slope_scale
        badness = jnp.maximum(g_lim, q_best) / slope_tol[None, :]
        badness = jnp.where(jnp.isnan(badness), jnp.inf, badness)
        k_d = jnp.argmax(badness.ravel())
        s_d, i_d = k_d // n, k_d % n
        # also collect non-finite values of f beside r = 1 for the non-negativity verdict
        fr_bad = ~jnp.isfinite(fr)
        fr_min = jnp.min(jnp.where(fr_bad, jnp.inf, fr))
        k_fr = jnp.argmin(jnp.where(fr_bad, jnp.inf, fr).ravel())
        return {
            "neg_min": neg_min, "neg_where": neg_where, "n_bad": n_bad + jnp.sum(fr_bad), "bad_where": bad_where,
            "fr_min": fr_min, "fr_where": jnp.stack([R.ravel()[k_fr], AA.ravel()[k_fr], TT.ravel()[k_fr]]),
            "id_err": id_err[k_i], "id_where": id_where,
            "g_lim": g_lim[s_d, i_d], "g_signed": g_signed[s_d, i_d], "q_best": q_best[s_d, i_d],
            "slope_tol": slope_tol[i_d], "grad_side": side[s_d], "grad_where": jnp.stack([1.0, ag[i_d], tg[i_d]]),
            "n_evals": jnp.asarray(vals.size + cfg.search_iters * x0.shape[0] * dirs.shape[0] + f1.size
                                   + f0.size + 2 * fr.size),
        }

    return core


_CORE_CACHE: OrderedDict = OrderedDict()


def _compiled(drift: Drift, cfg: _Config, population: bool, batch_size: int) -> Callable:
    """Jitted core, cached per (drift function, config) so repeated checks do not recompile.

    Only for the package's own drift families (ppo, dpo, lpo, expressions), whose functions depend on
    nothing but their parameters. A user's function may read a global or an attribute that changes
    between checks, and a jitted function keeps the value it was traced with: a cached check would
    repeat the old verdict (``k = 0.5`` after a check with ``k = 0`` stayed "valid"). Those are traced
    afresh every time, at the cost of a compile.
    """
    key = (drift.fn, drift.temporal, cfg, population, batch_size)
    cacheable = drift.family is not None
    hit = _CORE_CACHE.get(key) if cacheable else None
    if hit is not None:
        _CORE_CACHE.move_to_end(key)
        return hit
    core = _build_core(_scalar_fn(drift), cfg)
    if population:
        def run(stacked, pts):
            return jax.lax.map(lambda p: core(p, pts), stacked, batch_size=batch_size)
        fn = jax.jit(run)
    else:
        fn = jax.jit(core)
    if not cacheable:
        return fn
    _CORE_CACHE[key] = fn
    while len(_CORE_CACHE) > 32:
        _CORE_CACHE.popitem(last=False)
    return fn


# ------------------------------------------------------------------------------------------ helpers
_TRACE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def _as_drift(f: Any) -> Drift:
    if isinstance(f, Drift):
        return f
    if isinstance(f, str):
        from drifts.library import get_drift

        try:
            return get_drift(f)
        except ValueError as name_err:
            from drifts.symbolic import to_jax

            # get_drift parses text with operators itself; a bare word ("0", "t") may still be an
            # expression. If it is not, get_drift's error is the useful one ("did you mean 'dpo'?"),
            # except for blank text, which the parser names better ("empty expression").
            try:
                return to_jax(f)
            except ValueError:
                if not f.strip():
                    raise
                raise name_err from None
    if callable(f):
        from drifts.library import from_callable

        return from_callable(f)
    raise TypeError(
        f"check_drift expects a Drift, a jax-traceable callable f(r, A) or f(r, A, t), a drift name or an "
        f"expression string; got {type(f).__name__}"
    )


def _to_f64(tree: Any) -> Any:
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree_util.tree_map(cast, tree)


def _probe(drift: Drift, params: Any) -> str | None:
    """Trace the drift once on abstract scalars: raise TypeError if JAX cannot trace it, return an error
    message if it raises, else None. Nothing is evaluated on values here."""
    fs = _scalar_fn(drift)
    s = jax.ShapeDtypeStruct((), jnp.float64)
    try:
        out = jax.eval_shape(fs, params, s, s, s)
        jax.eval_shape(jax.grad(fs, argnums=1), params, s, s, s)
    except _TRACE_ERRORS as err:
        raise TypeError(
            f"drift {drift.name!r} is not JAX-traceable ({type(err).__name__}): write it with jax.numpy "
            "operations (jnp.where instead of if/else, jnp.log instead of math.log or numpy)"
        ) from err
    except TypeError as err:
        msg = str(err)
        if "shape" in msg and "reshape" in msg:
            raise TypeError(
                f"drift {drift.name!r} must return one value per (r, A) pair (elementwise); {msg}"
            ) from err
        raise TypeError(f"drift {drift.name!r} could not be traced as f(r, A): {type(err).__name__}: {msg}") from err
    except Exception as err:  # noqa: BLE001 - the user's function raised: report it, never pass it
        return f"the drift raised {type(err).__name__}: {err}"
    if out.shape != ():
        raise TypeError(f"drift {drift.name!r} must return a scalar for scalar (r, A); got shape {out.shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"drift {drift.name!r} must return floating values, got {out.dtype}")
    return None


def _error_report(drift: Drift, cfg: _Config, message: str, t0: float) -> DriftReport:
    nan = float("nan")
    conds = {k: ConditionResult(False, nan, None, _tol_for(k, cfg), message) for k in CONDITIONS}
    return DriftReport(drift.name, False, conds, _domain(cfg), error=message, seconds=time.perf_counter() - t0)


def _tol_for(key: str, cfg: _Config) -> float:
    return cfg.grad_tol if key == "zero_grad_at_identity" else cfg.tol


def _domain(cfg: _Config) -> dict:
    return {"log_r_range": cfg.log_r_range, "A_range": cfg.A_range, "t_values": cfg.t_values,
            "temporal": cfg.temporal, "grid": cfg.grid, "steps": (cfg.steps[0], cfg.steps[-1])}


def _where(vec, temporal: bool) -> tuple[float, ...]:
    v = tuple(float(x) for x in np.asarray(vec))
    return v if temporal else v[:2]


def _report_from(name: str, out: Mapping[str, np.ndarray], cfg: _Config, seconds: float) -> DriftReport:
    """Turn the core's summaries (numpy, one member) into a DriftReport."""
    tp = cfg.temporal
    # (1)
    n_bad = int(out["n_bad"])
    neg_min = min(float(out["neg_min"]), float(out["fr_min"]))
    neg_where = out["neg_where"] if float(out["neg_min"]) <= float(out["fr_min"]) else out["fr_where"]
    if n_bad:
        c1 = ConditionResult(False, float("nan"), _where(out["bad_where"], tp), cfg.tol,
                             f"f returned NaN or inf at {n_bad} evaluated points")
    elif math.isinf(neg_min) and neg_min < 0:
        c1 = ConditionResult(False, float("nan"), _where(neg_where, tp), cfg.tol,
                             "f returned NaN or inf during the local search")
    else:
        ok = neg_min >= -cfg.tol
        c1 = ConditionResult(ok, neg_min, _where(neg_where, tp), cfg.tol,
                             "" if ok else f"f is negative: min f = {neg_min:.3g}")
    # (2)
    id_err = float(out["id_err"])
    if not math.isfinite(id_err):
        c2 = ConditionResult(False, float("nan"), _where(out["id_where"], tp), cfg.tol, "f(1, A) is NaN or inf")
    else:
        ok = id_err <= cfg.tol
        c2 = ConditionResult(ok, id_err, _where(out["id_where"], tp), cfg.tol,
                             "" if ok else f"|f(1, A)| = {id_err:.3g} > 0")
    # (3)
    g_lim, q_best, slope_tol = float(out["g_lim"]), float(out["q_best"]), float(out["slope_tol"])
    side = "right (r -> 1+)" if float(out["grad_side"]) > 0 else "left (r -> 1-)"
    gw = _where(out["grad_where"], tp)
    if not (math.isfinite(g_lim) and math.isfinite(q_best)):
        c3 = ConditionResult(False, float("nan"), gw, slope_tol,
                             f"derivative from the {side} is NaN or inf")
    else:
        ok_g, ok_q = g_lim <= slope_tol, q_best <= slope_tol
        if not ok_g:
            worst = float(out["g_signed"])
            detail = f"one-sided derivative from the {side} is {worst:.3g} (a kink or a slope at r = 1)"
        elif not ok_q:
            worst = q_best
            detail = (f"difference quotients from the {side} stay at {q_best:.3g} > {slope_tol:.2g} while autodiff "
                      "says ~0 (a kink hidden from jax.grad)")
        else:
            worst, detail = max(g_lim, q_best), ""
        c3 = ConditionResult(ok_g and ok_q, worst, gw, slope_tol, detail)
    conds = {"nonnegative": c1, "zero_at_identity": c2, "zero_grad_at_identity": c3}
    return DriftReport(name, all(c.passed for c in conds.values()), conds, _domain(cfg), seconds=seconds)


# ------------------------------------------------------------------------------------------ public
def check_drift(
    f: Drift | Callable | str,
    *,
    log_r_range: tuple[float, float] = (-1.5, 1.5),
    A_range: tuple[float, float] = (-5.0, 5.0),
    t_values: tuple[float, ...] = DEFAULT_T_VALUES,
    grid: tuple[int, int] = (301, 201),
    tol: float = 1e-8,
    grad_tol: float = 1e-6,
    fd_rel_tol: float = 1e-6,
    steps: tuple[float, ...] = DEFAULT_STEPS,
    n_identity: int = 1001,
    n_grad_A: int = 201,
    search_iters: int = 40,
    params: Any = None,
) -> DriftReport:
    """Check the three drift conditions numerically (float64) and report the worst violations.

    Args:
      f: a :class:`Drift`, any JAX-traceable ``f(r, A)`` / ``f(r, A, t)``, a drift name or file, or an
        expression string (parsed safely by :mod:`drifts.symbolic`).
      log_r_range, A_range: the domain searched (``r = exp(log r)``).
      t_values: training-progress values checked for temporal drifts (the local search also moves t).
      grid: points in ``log r`` and in ``A`` of the dense grid (plus points clustered around r = 1).
      tol: absolute tolerance on values: ``f >= -tol`` and ``|f(1, A)| <= tol`` (1e-8: float64 round-off
        of well-written drifts is ~1e-15, LPO's shift is 1e-6, so a real offset is not absorbed).
      grad_tol, fd_rel_tol: the one-sided slopes at ``r = 1`` (autodiff at ``|r - 1|`` = the two smallest
        steps, and the best difference quotient among steps ``h <= 1e-4``) must be at most
        ``grad_tol + fd_rel_tol * S``, ``S`` = the largest ``|f(1 +- h)|`` over the steps, divided by the
        largest step (per ``A`` and ``t``).
      steps: the decreasing one-sided steps ``h`` (default ``1e-2 ... 1e-14``, half decades).
      n_identity, n_grad_A: number of ``A`` values for conditions (2) and (3).
      search_iters: pattern-search iterations from every 16 x 16 block minimum of the grid.
      params: override the drift's own parameters.

    Returns a :class:`DriftReport`; ``str(report)`` names each violated condition, the worst value and
    where. Raises ``TypeError`` if ``f`` cannot be traced by JAX (e.g. it calls ``float(r)`` or numpy).
    """
    t0 = time.perf_counter()
    drift = _as_drift(f)
    cfg = _make_config(drift.temporal, log_r_range, A_range, t_values, grid, tol, grad_tol, fd_rel_tol, steps,
                       n_identity, n_grad_A, search_iters)
    with jax.enable_x64(True):
        p = _to_f64(drift.params if params is None else params)
        err = _probe(drift, p)
        if err is not None:
            return _error_report(drift, cfg, err, t0)
        pts = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in _points(cfg).items()}
        try:
            out = jax.device_get(_compiled(drift, cfg, False, 1)(p, pts))
        except _TRACE_ERRORS:
            raise
        except Exception as err:  # noqa: BLE001 - e.g. a jax.debug callback raising inside the drift
            return _error_report(drift, cfg, f"evaluating the drift failed: {type(err).__name__}: {err}", t0)
    return _report_from(drift.name, out, cfg, time.perf_counter() - t0)


def check_drift_population(drift: Drift, stacked_params: Any, *, batch_size: int = 4,
                           **check_kwargs: Any) -> PopulationReport:
    """Check every member of a population of drift parameters (leading axis = member) in one compiled call.

    ``stacked_params`` has the structure of ``drift.params`` with a leading population axis (what an
    ES ``ask`` returns). Members are processed ``batch_size`` at a time, vmapped inside
    ``jax.lax.map`` (bounded memory: each member's grid holds ~60k points x hidden units). Keyword
    arguments are those of :func:`check_drift`. ``report.valid`` is a boolean array per member.
    """
    t0 = time.perf_counter()
    if not isinstance(drift, Drift):
        raise TypeError(f"check_drift_population needs a Drift (the function shared by the population), "
                        f"got {type(drift).__name__}")
    leaves = jax.tree_util.tree_leaves(stacked_params)
    if not leaves:
        raise ValueError("stacked_params is empty: pass the drift's params with a leading population axis")
    n = int(np.shape(leaves[0])[0])
    if any(np.shape(x)[:1] != (n,) for x in leaves):
        raise ValueError("every leaf of stacked_params needs the same leading (population) axis")
    kw = {k: check_kwargs.pop(k) for k in list(check_kwargs) if k in {
        "log_r_range", "A_range", "t_values", "grid", "tol", "grad_tol", "fd_rel_tol", "steps", "n_identity",
        "n_grad_A", "search_iters"}}
    if check_kwargs:
        raise TypeError(f"unexpected arguments: {sorted(check_kwargs)}")
    defaults = {"log_r_range": (-1.5, 1.5), "A_range": (-5.0, 5.0), "t_values": DEFAULT_T_VALUES,
                "grid": (301, 201), "tol": 1e-8, "grad_tol": 1e-6, "fd_rel_tol": 1e-6, "steps": DEFAULT_STEPS,
                "n_identity": 1001, "n_grad_A": 201, "search_iters": 40}
    defaults.update(kw)
    cfg = _make_config(drift.temporal, **defaults)
    with jax.enable_x64(True):
        stacked = _to_f64(stacked_params)
        member0 = jax.tree_util.tree_map(lambda x: x[0], stacked)
        err = _probe(drift, member0)
        if err is not None:
            reps = tuple(_error_report(drift, cfg, err, t0) for _ in range(n))
            return PopulationReport(reps, time.perf_counter() - t0)
        pts = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in _points(cfg).items()}
        out = jax.device_get(_compiled(drift, cfg, True, max(1, min(batch_size, n)))(stacked, pts))
    seconds = time.perf_counter() - t0
    reps = tuple(_report_from(f"{drift.name}[{i}]", {k: v[i] for k, v in out.items()}, cfg, seconds / n)
                 for i in range(n))
    return PopulationReport(reps, seconds)
