"""The backend protocol, the registry and ``backend="auto"`` resolution."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from collections.abc import Callable
from typing import Protocol

import numpy as np
import sympy as sp


@dataclasses.dataclass(frozen=True)
class FitTask:
    """What a backend gets: the training pairs of one branch and its share of the budget.

    ``y`` is the target (the drift, or ``df/dr`` when ``target == "derivative"``); ``f`` is the drift
    in every case (backends that fit censored models need to know where the source is zero).
    ``branch`` is ``"positive"`` (A >= 0), ``"negative"`` (A < 0) or ``"all"``.
    """

    r: np.ndarray
    A: np.ndarray
    y: np.ndarray
    f: np.ndarray
    target: str
    branch: str
    time_budget: float
    seed: int
    max_length: int


class Backend(Protocol):
    """``fit(task)`` returns candidate expressions in ``r`` and ``A``.

    ``native_derivative``: the returned expressions are drifts even when the target is ``df/dr``
    (the backend fitted their derivative itself). Otherwise, for a derivative target, they are
    slopes and the caller integrates them.
    """

    name: str
    native_derivative: bool

    def fit(self, task: FitTask) -> list[sp.Expr]: ...


def _make_pyoperon(**options):
    from distill.backends.pyoperon import PyOperonBackend

    return PyOperonBackend(**options)


def _make_pysr(**options):
    from distill.backends.pysr import PySRBackend

    return PySRBackend(**options)


def _make_linear(**options):
    from distill.backends.linear import LinearBackend

    return LinearBackend(**options)


BACKENDS: dict[str, Callable[..., Backend]] = {"pyoperon": _make_pyoperon, "pysr": _make_pysr, "linear": _make_linear}
# "auto" is resolved in resolve_backend (pyoperon + linear, pooled; linear alone without pyoperon).


def pyoperon_available() -> bool:
    return importlib.util.find_spec("pyoperon") is not None


def available_backends() -> list[str]:
    """Backends that can run on this machine now."""
    from distill.backends.pysr import julia_available

    out = ["pyoperon"] if pyoperon_available() else []
    if julia_available() and importlib.util.find_spec("pysr") is not None:
        out.append("pysr")
    return out + ["linear"]


class PooledBackend:
    """Several backends on the same task, their candidates pooled into one front.

    ``auto`` uses pyoperon (most of the budget) together with the linear library (a fifth, it is
    fast): genetic programming finds smooth nonlinear shapes, the library's hinges capture kinks such
    as PPO's clip or LPO's ReLU that smooth operators approximate poorly. The front then picks.
    """

    native_derivative = False

    def __init__(self, members: list[tuple[Backend, float]]):
        self.members = members
        self.name = "+".join(m.name for m, _ in members)


def resolve_backend(backend: str | Backend, options: dict | None = None) -> Backend:
    """A backend from a name or an instance.

    ``auto``: pyoperon pooled with the linear library when pyoperon is installed, else linear alone.
    """
    options = dict(options or {})
    if not isinstance(backend, str):
        if hasattr(backend, "fit") and hasattr(backend, "name"):
            return backend
        raise TypeError(f"backend must be a name ({', '.join(['auto', *BACKENDS])}) or an object with .fit(task)")
    name = backend.lower()
    if name == "auto":
        if not pyoperon_available():
            return _make_linear()
        return PooledBackend([(_make_pyoperon(**options), 0.8), (_make_linear(), 0.2)])
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, ["auto", *BACKENDS], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(['auto', *BACKENDS])}.{hint}")
    if name == "pyoperon" and not pyoperon_available():
        raise ValueError(
            "backend 'pyoperon' is not installed: `pip install pyoperon` (or `pip install mirrorlearn[sr]`), "
            "or use backend='linear', which needs nothing extra"
        )
    return BACKENDS[name](**options)
