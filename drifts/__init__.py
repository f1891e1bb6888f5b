"""Drift functions for Mirror Learning, their checks and pictures.

>>> from drifts import dpo
>>> d = dpo(alpha=2.0, beta=0.6)
>>> float(d(1.0, 0.5))
0.0
"""

from drifts.base import Drift, drift_from_spec, register_family
from drifts.library import default_lpo, dpo, from_callable, get_drift, lpo, lpo_features, lpo_init, lpo_zero, ppo

__all__ = [
    "Drift",
    "check_drift",
    "check_drift_population",
    "check_drift_symbolic",
    "compare_drifts",
    "default_lpo",
    "dpo",
    "drift_from_spec",
    "from_callable",
    "get_drift",
    "lpo",
    "lpo_features",
    "lpo_init",
    "lpo_zero",
    "plot_drift",
    "ppo",
    "register_family",
]


_LAZY = {
    "check_drift": "drifts.checks",
    "check_drift_population": "drifts.checks",
    "check_drift_symbolic": "drifts.symbolic",
    "plot_drift": "drifts.plotting",
    "compare_drifts": "drifts.plotting",
}


def __getattr__(name):
    # Checks, symbolic tools and plots import heavier modules (sympy, matplotlib): load on first use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'drifts' has no attribute {name!r}")
