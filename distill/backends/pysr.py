"""PySR (SymbolicRegression.jl) backend, used only when a Julia runtime is present.

``import pysr`` tries to download Julia at import time and fails offline, so this module never
imports it at top level: :func:`julia_available` looks for a Julia executable first and the import
happens inside :meth:`PySRBackend.fit`. Inputs and the returned sympy are the same as for pyoperon;
equation strings are read through the safe parser (no ``sympify`` of raw text).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import sympy as sp

from distill._parse import parse_model_string
from distill.backends.base import FitTask
from distill.backends.pyoperon import features

INSTALL_HINT = (
    "backend 'pysr' needs PySR and a Julia runtime: install Julia (https://julialang.org/downloads, "
    "e.g. `curl -fsSL https://install.julialang.org | sh`) so that `julia` is on PATH (or set "
    "PYTHON_JULIAPKG_EXE), then `pip install pysr` (or `pip install mirrorlearn[pysr]`); or use "
    "backend='pyoperon' (offline) or backend='linear' (needs nothing extra)"
)


def julia_executable() -> str | None:
    """A Julia executable from PATH or the juliapkg/juliacall environment variables, if any."""
    for var in ("PYTHON_JULIAPKG_EXE", "JULIA_EXE", "PYTHON_JULIACALL_EXE"):
        path = os.environ.get(var)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("julia")


def julia_available() -> bool:
    return julia_executable() is not None


class PySRBackend:
    name = "pysr"
    native_derivative = False

    def __init__(self, binary_operators=("+", "-", "*"), unary_operators=("tanh", "square"), populations: int = 8,
                 **pysr_options):
        import importlib.util

        if not julia_available() or importlib.util.find_spec("pysr") is None:
            raise ValueError(INSTALL_HINT)
        self.binary_operators = list(binary_operators)
        self.unary_operators = list(unary_operators)
        self.populations = int(populations)
        self.pysr_options = pysr_options

    def fit(self, task: FitTask) -> list[sp.Expr]:
        from pysr import PySRRegressor  # imported here only: the import itself needs Julia

        X, variables = features(task)
        model = PySRRegressor(
            binary_operators=self.binary_operators,
            unary_operators=self.unary_operators,
            maxsize=int(task.max_length),
            niterations=10**6,
            timeout_in_seconds=float(task.time_budget),
            populations=self.populations,
            random_state=int(task.seed),
            deterministic=True,
            parallelism="serial",
            progress=False,
            verbosity=0,
            temp_equation_file=True,
            **self.pysr_options,
        )
        model.fit(X, np.asarray(task.y), variable_names=list(variables))
        out = []
        for text in model.equations_["equation"]:
            try:
                out.append(parse_model_string(str(text), variables))
            except ValueError:
                continue
        return out
