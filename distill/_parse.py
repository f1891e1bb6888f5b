"""A safe parser for the expression strings that symbolic-regression backends print.

Backends (pyoperon, PySR) hand back models as infix text such as ``((-0.1) + (0.06 * (X1 ^ 2)))``.
We never ``eval`` that text: it is parsed with :mod:`ast` and every node is checked against a
whitelist of arithmetic operators, known functions, named variables and numeric literals, then
rebuilt directly as a sympy expression. Anything else is a ``ValueError``.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

import sympy as sp


def _square(x):
    return x**2


def _cube(x):
    return x**3


def _neg(x):
    return -x


FUNCTIONS = {
    "tanh": sp.tanh,
    "exp": sp.exp,
    "log": sp.log,
    "abs": sp.Abs,
    "sqrt": sp.sqrt,
    "square": _square,
    "cube": _cube,
    "neg": _neg,
    "sin": sp.sin,
    "cos": sp.cos,
    "max": sp.Max,
    "min": sp.Min,
    "fmax": sp.Max,
    "fmin": sp.Min,
}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


def parse_model_string(text: str, variables: Mapping[str, sp.Expr]) -> sp.Expr:
    """Parse a backend's infix model string into sympy, substituting ``variables`` by name.

    ``^`` is read as power (operon and Julia syntax). Raises ``ValueError`` for anything outside
    the whitelist (attribute access, unknown names or functions, strings, ...).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty model string from the backend")
    try:
        tree = ast.parse(text.replace("^", "**").strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"cannot parse backend model {text!r}: {err.msg}") from None
    return _build(tree.body, variables, text)


def _build(node: ast.AST, variables: Mapping[str, sp.Expr], text: str) -> sp.Expr:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return sp.Float(node.value) if isinstance(node.value, float) else sp.Integer(node.value)
    if isinstance(node, ast.Name):
        if node.id in variables:
            return variables[node.id]
        raise ValueError(f"unknown variable {node.id!r} in backend model {text!r}; expected {sorted(variables)}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _build(node.operand, variables, text)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_build(node.left, variables, text), _build(node.right, variables, text))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        fn = FUNCTIONS.get(node.func.id)
        if fn is None:
            raise ValueError(f"function {node.func.id!r} in backend model {text!r} is not allowed")
        return fn(*[_build(arg, variables, text) for arg in node.args])
    raise ValueError(f"disallowed syntax {type(node).__name__} in backend model {text!r}")
