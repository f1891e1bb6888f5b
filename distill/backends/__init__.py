"""Symbolic-regression backends: sympy in, sympy out.

A backend turns training pairs of one advantage branch into a list of candidate expressions
``g(r, A)`` (sympy, in the symbols of :mod:`distill.construct`). Everything after that — the
validity projection, the held-out fidelity, the checks, the Pareto front — is shared, so results do
not depend on which backend produced them.

- ``pyoperon``: genetic programming (Operon), offline, default when installed.
- ``pysr``: PySR (SymbolicRegression.jl), used only when a Julia executable is present.
- ``linear``: sparse regression over a library of terms that are valid by construction; needs
  nothing beyond numpy; the ``auto`` fallback.
"""

from distill.backends.base import BACKENDS, Backend, FitTask, available_backends, resolve_backend

__all__ = ["BACKENDS", "Backend", "FitTask", "available_backends", "resolve_backend"]
