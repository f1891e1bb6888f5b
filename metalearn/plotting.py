"""The meta-training curve: population fitness per generation and the ES mean's score."""

from __future__ import annotations

import numpy as np


def plot_history(history: list, title: str = "meta-training"):
    """A matplotlib Figure of normalised fitness (1 = the starting drift, 0 = a random policy)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    gens = np.array([h["generation"] for h in history], dtype=float)  # counted from 1

    def col(name):
        return np.array([np.nan if h.get(name) is None else h[name] for h in history], dtype=float)

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if len(history):
        ax.fill_between(gens, col("fitness_min"), col("fitness_max"), alpha=0.2, label="population min-max")
        ax.plot(gens, col("fitness_mean"), label="population mean")
        ms = col("mean_score")
        ok = np.isfinite(ms)
        if ok.any():
            ax.plot(gens[ok], ms[ok], "o-", color="C3", label="ES mean (fixed seeds)")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="starting drift")
    ax.set_xlabel("generation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no generation 1.25
    ax.set_ylabel("normalised return")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig
