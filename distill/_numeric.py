"""Evaluate a sympy drift expression on arrays by walking its tree (numpy or jax.numpy).

We avoid ``lambdify`` (code generation) so that what runs is exactly the small set of operations
distillation can produce, with ``Max``/``Min`` as elementwise maximum/minimum, ``Piecewise`` as nested
``where`` and ``Heaviside(0) = 1/2`` as sympy defines it.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp


def evaluate(expr: sp.Expr, r, A, xp=np):
    """``expr`` at arrays ``r`` and ``A`` (broadcast), with ``xp`` = numpy or jax.numpy."""
    r = xp.asarray(r)
    A = xp.asarray(A)
    shape = xp.broadcast_shapes(r.shape, A.shape) if hasattr(xp, "broadcast_shapes") else np.broadcast_shapes(
        r.shape, A.shape)
    out = _walk(expr, {"r": r, "A": A}, xp)
    return xp.broadcast_to(xp.asarray(out, dtype=r.dtype if xp.issubdtype(r.dtype, xp.floating) else float), shape)


def _walk(e, env, xp):  # noqa: C901 - one flat dispatch is the clearest form here
    if e.is_Symbol:
        if e.name not in env:
            raise ValueError(f"unknown symbol {e.name!r}: distilled expressions use only r and A")
        return env[e.name]
    if e.is_Number or e is sp.pi or e is sp.E:
        return float(e)
    args = [_walk(a, env, xp) for a in e.args] if not isinstance(e, sp.Piecewise) else None
    if e.is_Add:
        return functools.reduce(lambda a, b: a + b, args)
    if e.is_Mul:
        return functools.reduce(lambda a, b: a * b, args)
    if e.is_Pow:
        base, expo = args
        if e.exp.is_Integer and int(e.exp) < 0:
            return 1.0 / base ** (-int(e.exp))
        return base**expo
    if isinstance(e, sp.Piecewise):
        out = _walk(e.args[-1].expr, env, xp)
        for piece in reversed(e.args[:-1]):
            out = xp.where(_cond(piece.cond, env, xp), _walk(piece.expr, env, xp), out)
        return out
    funcs = {
        sp.tanh: xp.tanh, sp.exp: xp.exp, sp.log: xp.log, sp.Abs: xp.abs, sp.sin: xp.sin, sp.cos: xp.cos,
        sp.sinh: xp.sinh, sp.cosh: xp.cosh, sp.sign: xp.sign,
    }
    if e.func in funcs:
        return funcs[e.func](args[0])
    if isinstance(e, sp.Max):
        return functools.reduce(xp.maximum, args)
    if isinstance(e, sp.Min):
        return functools.reduce(xp.minimum, args)
    if isinstance(e, sp.Heaviside):
        x = args[0]
        return xp.where(x > 0, 1.0, xp.where(x < 0, 0.0, 0.5))
    raise ValueError(f"cannot evaluate {e.func.__name__} in a distilled expression")


def _cond(c, env, xp):
    if c is sp.true:
        return True
    if c is sp.false:
        return False
    if isinstance(c, sp.And):
        return functools.reduce(xp.logical_and, [_cond(a, env, xp) for a in c.args])
    if isinstance(c, sp.Or):
        return functools.reduce(xp.logical_or, [_cond(a, env, xp) for a in c.args])
    ops = {sp.GreaterThan: lambda a, b: a >= b, sp.StrictGreaterThan: lambda a, b: a > b,
           sp.LessThan: lambda a, b: a <= b, sp.StrictLessThan: lambda a, b: a < b}
    for kind, op in ops.items():
        if isinstance(c, kind):
            return op(_walk(c.lhs, env, xp), _walk(c.rhs, env, xp))
    raise ValueError(f"cannot evaluate condition {c}")
