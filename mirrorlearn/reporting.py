"""Learning curves and tables shared by the command line, benchmarks and notebooks."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np


def smooth_returns(episode_return: np.ndarray, window: int = 10) -> np.ndarray:
    """NaN-aware trailing mean over updates (updates with no finished episode hold NaN).

    ``episode_return`` has shape ``(n_seeds, n_updates)``; the result has the same shape and carries
    the last finite value forward where a window holds no finished episode.
    """
    x = np.asarray(episode_return, dtype=np.float64)
    out = np.full_like(x, np.nan)
    for s in range(x.shape[0]):
        last = np.nan
        for i in range(x.shape[1]):
            w = x[s, max(0, i - window + 1): i + 1]
            w = w[np.isfinite(w)]
            if w.size:
                last = float(w.mean())
            out[s, i] = last
    return out


LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v")


def plot_learning_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "", ylabel: str = "episode return"):
    """One line per label: mean over seeds with a standard-error band. ``curves[label] = (x, y[seed, t])``."""
    from matplotlib.figure import Figure

    if not isinstance(curves, Mapping) or not curves:
        raise TypeError(f"curves must be a non-empty mapping label -> (x, y[seed, t]), got {type(curves).__name__}"
                        + (" (empty)" if isinstance(curves, Mapping) else ""))
    checked = {}
    for label, pair in curves.items():
        try:
            x, y = pair
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"curves[{label!r}] must be a pair (x, y) of numeric arrays") from None
        if x.ndim != 1 or y.ndim != 2 or y.shape[1] != x.shape[0]:
            raise ValueError(f"curves[{label!r}]: x must be 1-D and y 2-D (n_seeds, len(x)); got x {x.shape}, "
                             f"y {y.shape}" + (" (one seed: pass y[None, :])" if y.ndim == 1 else ""))
        checked[label] = (x, y)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, (x, y)) in enumerate(checked.items()):
        with warnings.catch_warnings():  # points before any episode ended are NaN for every seed: a gap
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(y, axis=0)
        n = np.sum(np.isfinite(y), axis=0).clip(min=1)
        se = np.nanstd(y, axis=0) / np.sqrt(n)
        # Curves that meet (two drifts both at CartPole's 500) would hide each other: each label gets its
        # own dash pattern and marker, drawn thinner the later it comes, so every line shows through.
        ax.plot(x, mean, color=f"C{i}", ls=LINE_STYLES[i % len(LINE_STYLES)], marker=MARKERS[i % len(MARKERS)],
                markevery=max(1, len(x) // 12), markersize=4, lw=max(0.8, 2.4 - 0.5 * i), label=f"{label} (n={y.shape[0]})")
        ax.fill_between(x, mean - se, mean + se, color=f"C{i}", alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def format_table(rows: list[Mapping], columns: list[str]) -> str:
    """A plain-text table (also valid Markdown)."""
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join([line, sep, *body])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)
