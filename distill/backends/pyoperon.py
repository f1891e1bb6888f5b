"""pyoperon (Operon genetic programming) backend: offline, multi-objective (R^2 vs length).

Inputs are ``r - 1``, ``log r``, ``A`` (and ``|A|`` when both advantage signs share one model): all
but the advantage vanish at ``r = 1``, which puts the source's structure within short reach. We run
NSGA-II on (R^2, length) so one fit yields a whole front of sizes, and read every front model back
through the safe parser. Operators default to smooth ones (no ``abs``/``max`` of r-dependent terms):
the validity projection needs ``g`` differentiable at ``r = 1``.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from distill._parse import parse_model_string
from distill.backends.base import FitTask
from distill.construct import A, r

DEFAULT_SYMBOLS = "add,sub,mul,constant,variable,tanh,square"


def features(task: FitTask) -> tuple[np.ndarray, dict[str, sp.Expr]]:
    """The input matrix and the sympy meaning of each named column."""
    cols = {"u": (task.r - 1.0, r - 1), "l": (np.log(task.r), sp.log(r)), "a": (task.A, A)}
    if task.branch == "all":
        cols["b"] = (np.abs(task.A), sp.Abs(A))
    X = np.column_stack([v[0] for v in cols.values()])
    return X, {k: v[1] for k, v in cols.items()}


class PyOperonBackend:
    name = "pyoperon"
    native_derivative = False

    def __init__(self, allowed_symbols: str = DEFAULT_SYMBOLS, population_size: int = 500, n_threads: int = 2,
                 max_depth: int = 8, max_fit_points: int = 3000, optimizer_iterations: int = 5,
                 generations: int | None = None):
        self.allowed_symbols = allowed_symbols
        self.population_size = int(population_size)
        self.n_threads = int(n_threads)
        self.max_depth = int(max_depth)
        self.max_fit_points = int(max_fit_points)
        self.optimizer_iterations = int(optimizer_iterations)  # Levenberg-Marquardt steps on constants
        # A generation limit makes a seeded search reproducible (with n_threads=1): the time budget alone
        # stops it wherever the machine's speed has got it, so a loaded machine returns another front.
        self.generations = None if generations is None else int(generations)

    def fit(self, task: FitTask) -> list[sp.Expr]:
        from pyoperon.sklearn import SymbolicRegressor

        X, variables = features(task)
        y = task.y
        if len(y) > self.max_fit_points:  # Operon's cost grows with rows; a subsample keeps generations up
            idx = np.random.default_rng(task.seed).choice(len(y), self.max_fit_points, replace=False)
            X, y = X[idx], y[idx]
        model = SymbolicRegressor(
            allowed_symbols=self.allowed_symbols,
            max_length=int(task.max_length),
            max_depth=self.max_depth,
            max_time=max(1, int(round(task.time_budget))),
            generations=self.generations or 10**6,
            max_evaluations=10**9,
            population_size=self.population_size,
            objectives=["r2", "length"],
            n_threads=self.n_threads,
            random_state=int(task.seed),
            optimizer_iterations=self.optimizer_iterations,
        )
        model.fit(X, y)
        names = list(variables)
        out = []
        for entry in model.pareto_front_:
            text = model.get_model_string(entry["tree"], 12, names=names)
            try:
                out.append(parse_model_string(text, variables))
            except ValueError:
                continue  # a model outside the whitelist is dropped, never evaluated
        return out
