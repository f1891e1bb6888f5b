"""Pictures of drifts in the style of the paper's Figures 1, 3 and 5.

The policy objective per sample is ``r * A - f(r, A)``; its derivative in ``r`` says in which direction
(and how hard) an update pushes the probability of an action. :func:`plot_drift` draws
``d/dr [r A - f(r, A)]`` (computed with ``jax.grad``, vmapped) as a heat map over ``log r`` and ``A``
with a diverging colour map centred at 0, plus slices at fixed advantages. Figures are created with
``matplotlib.figure.Figure`` directly (no pyplot state), so they are safe under the Agg backend and in
servers; the caller owns them (``fig.savefig(...)``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from drifts.base import Drift, check_progress, number_pair

DEFAULT_SLICES = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)


def _as_drift(f: Any) -> Drift:
    from drifts.checks import _as_drift as resolve

    return resolve(f)


def objective_derivative(f: Any, log_r: np.ndarray, A: np.ndarray, t: float = 0.0) -> np.ndarray:
    """``d/dr [r A - f(r, A)]`` on the grid ``(A, log r)`` (rows: A, columns: log r), float64."""
    drift = _as_drift(f)
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x,
            drift.params)

        def obj(rv, av):
            val = drift.apply(params, rv, av, jnp.asarray(t, jnp.float64) if drift.temporal else None)
            return rv * av - jnp.reshape(val, ())

        grad = jax.jit(jax.vmap(jax.grad(obj), in_axes=(0, 0)))
        L, AA = np.meshgrid(np.asarray(log_r, float), np.asarray(A, float))
        out = grad(jnp.exp(jnp.asarray(L.ravel())), jnp.asarray(AA.ravel()))
        return np.asarray(out).reshape(L.shape)


def check_plot_grid(log_r_range, A_range, resolution, slices=None) -> None:
    """A clear ValueError for a plot grid numpy would refuse deep inside (or draw as an empty picture).

    ``slices``: the advantages of a slices panel (None: the plot has none); empty would leave it blank.
    """
    for name, value in (("log_r_range", log_r_range), ("A_range", A_range)):
        lo, hi = number_pair(name, value)
        if not lo < hi:
            raise ValueError(f"{name} must be finite with low < high, got {value!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2 (grid points per axis), got {resolution!r}")
    if slices is None:
        return
    try:
        ok = all(math.isfinite(float(a)) for a in slices)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"slices must be a sequence of finite advantages, got {slices!r}")
    if len(slices) == 0:
        raise ValueError("slices is empty, which would leave the slices panel blank: give at least one advantage "
                         "value, e.g. slices=(-2, 0, 2)")


def _draw(fig: Figure, axes, drift: Drift, log_r_range, A_range, slices, resolution, t, vmax) -> Any:
    t = check_progress(t)
    check_plot_grid(log_r_range, A_range, resolution, slices)
    ax_map, ax_sl = axes
    log_r = np.linspace(*log_r_range, resolution)
    adv = np.linspace(*A_range, resolution)
    dmap = objective_derivative(drift, log_r, adv, t)
    finite = dmap[np.isfinite(dmap)]
    if not finite.size:  # a blank picture would look like "no gradient anywhere"
        raise ValueError(f"drift {drift.name!r} has a NaN or inf slope at every point of the grid (log r in "
                         f"{tuple(log_r_range)}, A in {tuple(A_range)}); check it with check_drift")
    lim = vmax if vmax is not None else (float(np.max(np.abs(finite))) if finite.size else 1.0)
    lim = lim if lim > 0 else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
    im = ax_map.pcolormesh(log_r, adv, dmap, cmap="RdBu_r", norm=norm, shading="auto")
    ax_map.axvline(0.0, color="k", lw=0.5, alpha=0.5)
    ax_map.axhline(0.0, color="k", lw=0.5, alpha=0.5)
    ax_map.set_xlabel("log r")
    ax_map.set_ylabel("A")
    ax_map.set_title(f"{drift.name}: d/dr [rA - f(r, A)]" + (f" (t={t:g})" if drift.temporal else ""))
    fig.colorbar(im, ax=ax_map)
    sl = objective_derivative(drift, log_r, np.asarray(slices, float), t)
    colors = [_slice_color(a, max(abs(x) for x in slices)) for a in slices]
    for a, row, c in zip(slices, sl, colors, strict=True):
        ax_sl.plot(log_r, row, color=c, label=f"A = {a:g}")
    ax_sl.axhline(0.0, color="k", lw=0.5)
    ax_sl.axvline(0.0, color="k", lw=0.5, alpha=0.5)
    ax_sl.set_xlabel("log r")
    ax_sl.set_ylabel("d/dr objective")
    ax_sl.set_title("slices at fixed A")
    ax_sl.legend(fontsize="small")
    return im


def _slice_color(a: float, amax: float):
    from matplotlib import colormaps

    return colormaps["RdBu_r"](0.5 + 0.45 * a / (amax or 1.0))


def _check_vmax(vmax: float | None) -> None:
    """Matplotlib would silently replace a colour-scale end it cannot use with +-1: refuse it instead."""
    if vmax is not None and (isinstance(vmax, bool) or not isinstance(vmax, (int, float, np.integer, np.floating))
                             or not np.isfinite(vmax) or vmax <= 0):
        raise ValueError(f"vmax must be a positive finite number (the colour scale's end), got {vmax!r}; "
                         "leave it None to scale to the largest value")


def plot_drift(f: Any, *, log_r_range: tuple[float, float] = (-1.0, 1.0), A_range: tuple[float, float] = (-4.0, 4.0),
               slices: Sequence[float] = DEFAULT_SLICES, resolution: int = 201, t: float = 0.0,
               vmax: float | None = None, figsize: tuple[float, float] = (10.0, 4.0)) -> Figure:
    """Heat map of ``d/dr [r A - f(r, A)]`` over ``(log r, A)`` and slices at fixed ``A`` (paper Figs. 1/3/5).

    ``f`` is a Drift, a callable ``f(r, A)``, a drift name/file or an expression string. Positive values
    (red) push the ratio up, negative (blue) push it down; white is no gradient. ``vmax`` fixes the colour
    scale (default: the largest absolute value), ``t`` the training progress for temporal drifts.
    Returns a ``matplotlib.figure.Figure`` not registered with pyplot.
    """
    drift = _as_drift(f)
    _check_vmax(vmax)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 2)
    _draw(fig, axes, drift, log_r_range, A_range, slices, resolution, t, vmax)
    return fig


def compare_drifts(drifts: Sequence[Any], *, log_r_range: tuple[float, float] = (-1.0, 1.0),
                   A_range: tuple[float, float] = (-4.0, 4.0), slices: Sequence[float] = DEFAULT_SLICES,
                   resolution: int = 151, t: float = 0.0, shared_scale: bool = True) -> Figure:
    """Several drifts side by side: one column per drift (heat map above, slices below).

    With ``shared_scale`` all heat maps use the same colour scale, so their magnitudes compare.
    """
    if isinstance(drifts, (str, os.PathLike, Drift)) or callable(drifts):  # one drift, not a sequence of them
        raise TypeError(f"compare_drifts takes a list of drifts, got one: {drifts!r}; write compare_drifts([{drifts!r}, ...]) "
                        "or plot_drift(...) for a single drift")
    resolved = [_as_drift(d) for d in drifts]
    if not resolved:
        raise ValueError("compare_drifts needs at least one drift")
    vmax = None
    if shared_scale:
        log_r = np.linspace(*log_r_range, 61)
        adv = np.linspace(*A_range, 61)
        vals = [np.abs(objective_derivative(d, log_r, adv, t)) for d in resolved]
        vmax = max(float(np.nanmax(v)) for v in vals) or 1.0
    n = len(resolved)
    fig = Figure(figsize=(4.5 * n, 7.0), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for j, d in enumerate(resolved):
        _draw(fig, (axes[0, j], axes[1, j]), d, log_r_range, A_range, slices, resolution, t, vmax)
    return fig
