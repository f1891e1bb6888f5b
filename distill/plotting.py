"""The picture: source vs distilled objective, like the paper's Figures 3 and 5.

What an agent feels is the gradient of its objective ``r A - f(r, A)`` in ``r``; we show
``d/dr [r A - f]`` over (log r, A) for both drifts, their difference, and slices at fixed advantages.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def objective_slope(drift, log_r: np.ndarray, A: np.ndarray, t: float | None = None) -> np.ndarray:
    """``d/dr [r A - f(r, A)]`` on the grid ``log_r x A`` (float64 autodiff); ``t``: a temporal drift's progress."""
    with jax.enable_x64(True):
        R, AA = np.meshgrid(np.exp(log_r), A, indexing="ij")
        def obj(r, a):
            return r * a - (drift(r, a) if t is None else drift(r, a, t))

        g = jax.vmap(jax.grad(obj))(jnp.asarray(R.ravel()), jnp.asarray(AA.ravel()))
        return np.asarray(g, dtype=float).reshape(R.shape)


def plot_comparison(source, distilled, title: str = "", log_r_range=(-1.0, 1.0), A_range=(-4.0, 4.0),
                    slices=(-2.0, -0.5, 0.5, 2.0), resolution: int = 161, t: float | None = None):
    """A matplotlib Figure: two heat maps, their difference, and slices at fixed ``A``.

    ``t``: the training progress a temporal source was distilled at (the distilled drift has no ``t``).
    """
    import matplotlib.pyplot as plt

    from drifts.plotting import check_plot_grid

    check_plot_grid(log_r_range, A_range, resolution, slices)
    log_r = np.linspace(*log_r_range, resolution)
    A = np.linspace(*A_range, resolution)
    src = objective_slope(source, log_r, A, t)
    dst = objective_slope(distilled, log_r, A)
    lim = float(np.nanpercentile(np.abs(np.concatenate([src.ravel(), dst.ravel()])), 99)) or 1.0
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2), constrained_layout=True)
    extent = (A_range[0], A_range[1], log_r_range[0], log_r_range[1])
    src_label = f"source: {getattr(source, 'name', 'drift')}" + ("" if t is None else f" at t={t:g}")
    panels = [(src, src_label), (dst, "distilled"), (dst - src, "distilled - source")]
    for ax, (img, label) in zip(axes[:3], panels, strict=True):
        im = ax.imshow(img, origin="lower", aspect="auto", extent=extent, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set(xlabel="A", ylabel="log r", title=label)
        fig.colorbar(im, ax=ax, shrink=0.85)
    ax = axes[3]
    colors = plt.cm.viridis(np.linspace(0, 1, len(slices)))
    for a, c in zip(slices, colors, strict=True):
        j = int(np.argmin(np.abs(A - a)))
        ax.plot(log_r, src[:, j], color=c, lw=2, label=f"A={A[j]:.2g} source")
        ax.plot(log_r, dst[:, j], color=c, lw=1, ls="--", label=f"A={A[j]:.2g} distilled")
    ax.set(xlabel="log r", ylabel="d/dr [rA - f]", title="slices")
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"d/dr [r A - f(r, A)]   distilled: {title}", fontsize=10)
    return fig
