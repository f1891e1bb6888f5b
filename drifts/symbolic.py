"""Symbolic drifts: safe parsing of expression strings, proofs of the drift conditions, conversions.

* :func:`parse_expression` turns text such as ``"Max(0, (r - 1)**2 * A**2)"`` into a sympy expression
  **without evaluating the text**: after a character whitelist and size limits, the text is parsed by
  :mod:`ast` (which only builds a tree), every node is checked against a whitelist (numbers, the
  symbols ``r``, ``A``, ``t``, ``pi``, ``E``, arithmetic, comparisons, and the functions in
  :data:`FUNCTIONS`), and sympy objects are built from the checked tree. Anything else (attribute access,
  subscripts, strings, lambdas, unknown names, huge numeric powers, constants that are not finite real
  numbers) is a ``ValueError``. Everything it accepts converts to JAX.
* :func:`check_drift_symbolic` proves the three drift conditions where it can and otherwise searches
  for a numeric counterexample; it never reports ``proved`` without a proof.
* :func:`to_jax` turns an expression into a :class:`~drifts.base.Drift` of family ``"expression"``
  (compiled from the parsed expression; saved as sympy's printing of it, which drift files parse back
  with the same whitelist but size limits that allow the exact numbers sympy prints),
  :func:`to_sympy` / :func:`from_closed_form` give the closed forms of the built-in PPO and DPO drifts.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from drifts.base import Drift, register_family

# The drift variables, with the assumptions the proofs rely on: r > 0, A real, 0 <= t (<= 1).
r = sp.Symbol("r", positive=True)
A = sp.Symbol("A", real=True)
t = sp.Symbol("t", nonnegative=True)
SYMBOLS: dict[str, sp.Basic] = {"r": r, "A": A, "t": t, "pi": sp.pi, "E": sp.E}

MAX_CHARS = 4000
MAX_NODES = 2000
MAX_DEPTH = 60
MAX_EXPONENT = 100  # |numeric exponent| allowed in a power
MAX_DIGITS = 60  # digits in a numeric literal
# Syntax-tree depth (parentheses are counted separately by MAX_DEPTH): "-" * 995 + "r" or "r**" * 490 + "2"
# nest without parentheses, and building sympy objects from a tree recurses once per level.
MAX_TREE_DEPTH = 250
MAX_EXP_ARGUMENT = 709.0  # exp(x) of a larger number leaves float64 (and mpmath can spend minutes on it)


@dataclasses.dataclass(frozen=True)
class _Limits:
    chars: int
    nodes: int
    depth: int
    digits: int | None  # None: literals are bounded by ``chars`` only
    tree_depth: int = MAX_TREE_DEPTH


# What a person types. Drift files hold sympy's printing of an already parsed expression instead, which
# can legitimately be longer: exact rationals (0.1234... * 0.1234... prints 60+ digit integers), clip()
# printed as Min(Max(..)), where() as Piecewise((..)). Those are parsed with roomier, still finite limits.
_TYPED = _Limits(MAX_CHARS, MAX_NODES, MAX_DEPTH, MAX_DIGITS)
_PRINTED = _Limits(4 * MAX_CHARS, 4 * MAX_NODES, 2 * MAX_DEPTH, None, 2 * MAX_TREE_DEPTH)
_FLOAT_MAX = sp.Integer(int(sys.float_info.max))
_MAX_BITS = 10_000  # exact numerators and denominators: about 3000 digits, below Python's 4300-digit printing limit

_ALLOWED_CHARS = re.compile(r"^[A-Za-z0-9_.+\-*/(),<>=!&|~ \t\n]*$")


def _relu(x):
    return sp.Max(0, x)


def _clip(x, lo, hi):
    return sp.Min(sp.Max(x, lo), hi)


def _where(cond, a, b):
    return sp.Piecewise((a, cond), (b, True))


# name -> (builder, allowed numbers of arguments)
FUNCTIONS: dict[str, tuple[Callable, tuple[int, ...]]] = {
    "Max": (sp.Max, tuple(range(2, 9))), "max": (sp.Max, tuple(range(2, 9))), "maximum": (sp.Max, (2,)),
    "Min": (sp.Min, tuple(range(2, 9))), "min": (sp.Min, tuple(range(2, 9))), "minimum": (sp.Min, (2,)),
    "Abs": (sp.Abs, (1,)), "abs": (sp.Abs, (1,)),
    "log": (sp.log, (1,)), "exp": (sp.exp, (1,)), "tanh": (sp.tanh, (1,)), "sqrt": (sp.sqrt, (1,)),
    "sign": (sp.sign, (1,)), "Heaviside": (sp.Heaviside, (1,)),
    "relu": (_relu, (1,)), "ReLU": (_relu, (1,)), "clip": (_clip, (3,)), "where": (_where, (3,)),
    "square": (lambda x: x**2, (1,)), "log1p": (lambda x: sp.log(1 + x), (1,)),
    "cosh": (sp.cosh, (1,)), "sinh": (sp.sinh, (1,)), "expm1": (lambda x: sp.exp(x) - 1, (1,)),
    "softplus": (lambda x: sp.log(1 + sp.exp(x)), (1,)), "sigmoid": (lambda x: 1 / (1 + sp.exp(-x)), (1,)),
}
# Functions that exponentiate their argument: a numeric argument past MAX_EXP_ARGUMENT (in the direction
# given; "abs": either) leaves float64.
_EXP_LIKE = {"exp": 1, "expm1": 1, "softplus": 1, "cosh": 0, "sinh": 0, "sigmoid": -1}
_PIECEWISE = "Piecewise"


# ================================================================================ parsing
def parse_expression(text: str) -> sp.Expr:
    """Parse a drift expression in ``r``, ``A`` (and ``t``) safely; raise ``ValueError`` on anything else.

    Accepted: numbers, ``r A t pi E``, ``+ - * / **``, unary minus, comparisons (``< <= > >= == !=``,
    ``Eq(a, b)``, ``Ne(a, b)``) and ``& | ~`` inside conditions, ``Piecewise((expr, cond), ..., (expr, True))``
    and the functions of :data:`FUNCTIONS` (``Max Min Abs log exp tanh sqrt sign Heaviside relu clip where
    square log1p``). The result's constants are finite real numbers, so it always converts with
    :func:`to_jax`.
    """
    return _parse(text, _TYPED)


def _parse(text: str, limits: _Limits) -> sp.Expr:
    if not isinstance(text, str):
        raise TypeError(f"expected an expression string, got {type(text).__name__}")
    if len(text) > limits.chars:
        raise ValueError(f"expression too long ({len(text)} characters, limit {limits.chars})")
    if not text.strip():
        raise ValueError("empty expression")
    if not _ALLOWED_CHARS.match(text):
        bad = sorted({c for c in text if not _ALLOWED_CHARS.match(c)})
        raise ValueError(f"expression contains characters that are not allowed: {bad!r} "
                         "(use r, A, t, numbers, + - * / ** ( ) , comparisons and whitelisted functions)")
    if "__" in text:
        raise ValueError("expression contains '__': dunder names are not allowed")
    depth = 0
    for c in text:
        depth += (c == "(") - (c == ")")
        if depth > limits.depth:
            raise ValueError(f"expression nested too deeply (more than {limits.depth} parentheses)")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError) as err:
        raise ValueError(f"cannot parse expression {text[:80]!r}: {err}") from None
    n_nodes = sum(1 for _ in ast.walk(tree))
    if n_nodes > limits.nodes:
        raise ValueError(f"expression too large ({n_nodes} syntax nodes, limit {limits.nodes})")
    deepest = _tree_depth(tree)
    if deepest > limits.tree_depth:
        raise ValueError(f"expression nested too deeply ({deepest} levels of operators and calls, limit "
                         f"{limits.tree_depth}); write long chains with parentheses or fewer terms")
    try:
        return _check_constants(_Builder(text.strip(), limits.digits).expr(tree.body))
    except RecursionError:  # sympy's own recursion on a pathological but shallow-looking form
        raise ValueError("expression too deeply nested for sympy to build; simplify it") from None


def _tree_depth(tree: ast.AST) -> int:
    """The syntax tree's depth, found without recursion (the tree may be deeper than Python's stack)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _check_constants(e: sp.Expr) -> sp.Expr:
    """Refuse constants no float64 drift can hold, which sympy's own arithmetic can create from valid text
    (``sqrt(-r)`` is ``I*sqrt(r)``, ``log(0)`` is ``zoo``, ``1e300*1e300`` an integer of 601 digits)."""
    for n in e.atoms(sp.Rational):  # first: printing a huge integer (for a message) can itself fail
        if max(abs(n.p).bit_length(), n.q.bit_length()) > _MAX_BITS:
            raise ValueError(f"a numeric constant in the expression needs more than {_MAX_BITS * 3 // 10} digits "
                             "to write exactly (e.g. a product of many literals like 1e-300); simplify the numbers")
        if abs(n) > _FLOAT_MAX:
            raise ValueError(f"a numeric constant in the expression, about 1e{_log10(n)}, is larger than float64 "
                             f"allows (about {sys.float_info.max:.3g}); scale it down")
    if e.has(sp.I):
        raise ValueError(f"expression {_short(e)!r} has the imaginary unit I (a square root or power of a "
                         "negative number); drifts are real-valued: take Abs(...) first")
    if e.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise ValueError(f"expression {_short(e)!r} has an undefined or infinite constant (e.g. log(0), "
                         "0**-1 or 0*log(0)); remove it")
    return e


def _log10(n: sp.Rational) -> int:
    return round((abs(n.p).bit_length() - n.q.bit_length()) * math.log10(2))


def _short(e: sp.Basic, n: int = 80) -> str:
    text = sp.sstr(e)
    return text if len(text) <= n else text[: n - 3] + "..."


class _Builder:
    """Build sympy objects from a whitelisted ``ast`` tree (never evaluates Python code)."""

    def __init__(self, source: str, max_digits: int | None = MAX_DIGITS):
        self.source = source
        self.max_digits = max_digits

    def fail(self, node: ast.AST, why: str) -> ValueError:
        seg = ast.get_source_segment(self.source, node) or type(node).__name__
        return ValueError(f"{why}: {seg[:60]!r}")

    # -- arithmetic expressions ------------------------------------------------------------------
    def expr(self, node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.Name):
            if node.id in SYMBOLS:
                return SYMBOLS[node.id]
            raise self.fail(node, f"unknown name {node.id!r} (allowed: r, A, t, pi, E and the functions "
                                  f"{', '.join(sorted(set(FUNCTIONS) | {_PIECEWISE}))})")
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -self.expr(node.operand)
            if isinstance(node.op, ast.UAdd):
                return self.expr(node.operand)
            raise self.fail(node, "operator not allowed here")
        if isinstance(node, ast.BinOp):
            left, right = self.expr(node.left), self.expr(node.right)
            op = node.op
            if isinstance(op, ast.Add):
                return left + right
            if isinstance(op, ast.Sub):
                return left - right
            if isinstance(op, ast.Mult):
                return left * right
            if isinstance(op, ast.Div):
                if right == 0:
                    raise self.fail(node, "division by zero")
                return left / right
            if isinstance(op, ast.Pow):
                return self.power(node, left, right)
            raise self.fail(node, f"operator {type(op).__name__} not allowed (use + - * / **)")
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(node, f"{type(node).__name__} is not allowed in a drift expression")

    def number(self, node: ast.Constant) -> sp.Expr:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(node, "only numeric constants are allowed")
        seg = ast.get_source_segment(self.source, node) or repr(v)
        if self.max_digits is not None and len(seg) > self.max_digits:
            raise self.fail(node, f"numeric literal longer than {self.max_digits} characters")
        if isinstance(v, float):
            if not math.isfinite(v):
                raise self.fail(node, "numeric literal overflows")
            return sp.Rational(seg)  # exact decimal: keeps the proofs exact
        return sp.Integer(v)

    def power(self, node: ast.AST, base: sp.Expr, ex: sp.Expr) -> sp.Expr:
        if ex.is_number:
            val = complex(sp.N(ex, 15))
            if val.imag or abs(val.real) > MAX_EXPONENT:
                raise self.fail(node, f"numeric exponents must be real and at most {MAX_EXPONENT} in size")
            if base.is_number:
                b = abs(complex(sp.N(base, 15)))
                if b > 0 and abs(math.log10(b) * val.real) > 300:
                    raise self.fail(node, "numeric power too large")
        elif base.is_number and base != sp.E:
            b = abs(complex(sp.N(base, 15)))
            if b > 1e6:
                raise self.fail(node, "numeric base too large for a symbolic exponent")
        result = base**ex
        # sympy merges (r**99)**99 into r**9801: the limit applies to the exponent that results
        if isinstance(result, sp.Pow) and result.exp.is_number and abs(complex(sp.N(result.exp, 15))) > MAX_EXPONENT:
            raise self.fail(node, f"numeric exponents must be real and at most {MAX_EXPONENT} in size "
                                  f"(this power is x**{_short(result.exp, 20)})")
        return result

    def call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "only calls of whitelisted function names are allowed")
        name = node.func.id
        if node.keywords:
            raise self.fail(node, "keyword arguments are not allowed")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, "starred arguments are not allowed")
        if name == _PIECEWISE:
            return self.piecewise(node)
        if name not in FUNCTIONS:
            raise self.fail(node, f"unknown function {name!r} (allowed: {', '.join(sorted(FUNCTIONS))}, Piecewise)")
        builder, arities = FUNCTIONS[name]
        if len(node.args) not in arities:
            counts = sorted(arities)
            consecutive = len(counts) > 2 and counts == list(range(counts[0], counts[-1] + 1))
            said = f"{counts[0]} to {counts[-1]}" if consecutive else " or ".join(map(str, counts))
            noun = "argument" if counts == [1] else "arguments"
            raise self.fail(node, f"{name} takes {said} {noun}, got {len(node.args)}")
        if name == "where":
            return builder(self.cond(node.args[0]), self.expr(node.args[1]), self.expr(node.args[2]))
        args = [self.expr(a) for a in node.args]
        if name in _EXP_LIKE and args[0].is_number:  # before sympy or mpmath ever evaluates it
            value = complex(sp.N(args[0], 15)).real  # finite: every numeric argument was checked when it was built
            direction = _EXP_LIKE[name]
            if (abs(value) if direction == 0 else direction * value) > MAX_EXP_ARGUMENT:
                raise self.fail(node, f"{name} of {value:.4g} overflows float64 (the argument must be at most "
                                      f"{MAX_EXP_ARGUMENT:.0f} in size)")
        return builder(*args)

    def piecewise(self, node: ast.Call) -> sp.Expr:
        pieces = []
        for arg in node.args:
            if not (isinstance(arg, ast.Tuple) and len(arg.elts) == 2):
                raise self.fail(arg, "Piecewise takes (expression, condition) pairs")
            pieces.append((self.expr(arg.elts[0]), self.cond(arg.elts[1])))
        if not pieces:
            raise self.fail(node, "Piecewise needs at least one (expression, condition) pair")
        return sp.Piecewise(*pieces)

    # -- conditions --------------------------------------------------------------------------------
    def cond(self, node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return sp.true if node.value else sp.false
        if isinstance(node, ast.Name) and node.id in ("True", "False"):
            return sp.true if node.id == "True" else sp.false
        if isinstance(node, ast.Compare):
            ops = {ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge, ast.Eq: sp.Eq, ast.NotEq: sp.Ne}
            terms = [self.expr(node.left)] + [self.expr(c) for c in node.comparators]
            parts = []
            for i, op in enumerate(node.ops):
                if type(op) not in ops:
                    raise self.fail(node, "comparison not allowed")
                parts.append(ops[type(op)](terms[i], terms[i + 1]))
            return sp.And(*parts)
        if isinstance(node, ast.BoolOp):
            parts = [self.cond(v) for v in node.values]
            return sp.And(*parts) if isinstance(node.op, ast.And) else sp.Or(*parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            a, b = self.cond(node.left), self.cond(node.right)
            return sp.And(a, b) if isinstance(node.op, ast.BitAnd) else sp.Or(a, b)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Invert, ast.Not)):
            return sp.Not(self.cond(node.operand))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _RELATIONS:
            # sympy prints a == b and a != b as Eq(a, b) and Ne(a, b): drift files hold that printing
            if len(node.args) != 2 or node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise self.fail(node, f"{node.func.id} takes two arguments")
            return _RELATIONS[node.func.id](self.expr(node.args[0]), self.expr(node.args[1]))
        raise self.fail(node, "a condition must be a comparison (e.g. A >= 0, r != 1, Eq(r, 1)), True, "
                              "or a combination with & | ~")


_RELATIONS = {"Eq": sp.Eq, "Ne": sp.Ne}


def as_expression(expr: str | sp.Basic) -> sp.Expr:
    """A sympy expression in the module's ``r``, ``A``, ``t`` (with their assumptions).

    Strings are parsed with :func:`parse_expression`. Sympy expressions built elsewhere (e.g. with plain
    ``Symbol('r')``) are re-bound by symbol name; any other free symbol is a ``ValueError``.
    """
    if isinstance(expr, str):
        return parse_expression(expr)
    if isinstance(expr, (int, float)):
        return sp.nsimplify(expr)
    if not isinstance(expr, sp.Basic):
        raise TypeError(f"expected a sympy expression or a string, got {type(expr).__name__}")
    mapping = {}
    for s in expr.free_symbols:
        if s.name not in ("r", "A", "t"):
            raise ValueError(f"unknown symbol {s.name!r}: drift expressions use r, A (and t)")
        mapping[s] = SYMBOLS[s.name]
    return expr.xreplace(mapping)


# ================================================================================ sympy -> jax
def _softplus_argument(e: sp.Expr) -> sp.Expr | None:
    """``x`` when ``e`` is ``1 + exp(x)``, else None."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.Integer(1) in e.args:
        other = e.args[0] if e.args[1] == 1 else e.args[1]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _compile(e: sp.Basic) -> Callable[[Mapping[str, Any]], Any]:
    """A closure evaluating ``e`` with jax.numpy from ``env = {'r': ..., 'A': ..., 't': ...}``."""
    if isinstance(e, sp.Symbol):
        name = e.name
        return lambda env: env[name]
    if e is sp.true or e is sp.false:
        val = bool(e)
        return lambda env: val
    if e.is_Number or isinstance(e, sp.NumberSymbol):
        if not e.is_real:
            raise ValueError(f"non-real constant {e} in a drift expression")
        val = float(e)
        return lambda env: val
    args = [_compile(a) for a in e.args] if not isinstance(e, sp.Piecewise) else None
    if isinstance(e, sp.Add):
        return lambda env: functools.reduce(lambda x, y: x + y, [a(env) for a in args])
    if isinstance(e, sp.Mul):
        return lambda env: functools.reduce(lambda x, y: x * y, [a(env) for a in args])
    if isinstance(e, sp.Pow):
        base, ex = args
        if e.exp.is_Integer:
            n = int(e.exp)
            return lambda env: base(env) ** n  # lax.integer_pow: exact for negative bases
        if e.exp == sp.Rational(1, 2):
            return lambda env: jnp.sqrt(base(env))
        if e.exp == -sp.Rational(1, 2):
            return lambda env: 1.0 / jnp.sqrt(base(env))
        return lambda env: jnp.power(base(env), ex(env))
    if isinstance(e, sp.Piecewise):
        pieces = [(_compile(ex), _compile(c)) for ex, c in e.args]

        def piecewise(env):
            out = jnp.nan  # outside every condition: undefined, so the checks see a NaN
            for ex, c in reversed(pieces):
                out = jnp.where(c(env), ex(env), out)
            return out

        return piecewise
    if isinstance(e, sp.log) and _softplus_argument(e.args[0]) is not None:  # log(1 + exp(x)) overflows at x > 88
        inner = _compile(_softplus_argument(e.args[0]))
        return lambda env: jax.nn.softplus(inner(env))
    unary = {sp.log: jnp.log, sp.exp: jnp.exp, sp.tanh: jnp.tanh, sp.Abs: jnp.abs, sp.sign: jnp.sign,
             sp.sinh: jnp.sinh, sp.cosh: jnp.cosh, sp.sin: jnp.sin, sp.cos: jnp.cos, sp.atan: jnp.arctan}
    if e.func in unary:
        fn, (a,) = unary[e.func], args
        return lambda env: fn(a(env))
    if isinstance(e, sp.Heaviside):
        a = args[0]
        return lambda env: jnp.where(a(env) > 0, 1.0, jnp.where(a(env) < 0, 0.0, 0.5))
    if isinstance(e, (sp.Max, sp.Min)):
        op = jnp.maximum if isinstance(e, sp.Max) else jnp.minimum
        return lambda env: functools.reduce(op, [a(env) for a in args])
    rel = {sp.StrictLessThan: jnp.less, sp.LessThan: jnp.less_equal, sp.StrictGreaterThan: jnp.greater,
           sp.GreaterThan: jnp.greater_equal, sp.Equality: jnp.equal, sp.Unequality: jnp.not_equal}
    if e.func in rel:
        fn, (a, b) = rel[e.func], args
        return lambda env: fn(a(env), b(env))
    if isinstance(e, sp.And):
        return lambda env: functools.reduce(jnp.logical_and, [a(env) for a in args])
    if isinstance(e, sp.Or):
        return lambda env: functools.reduce(jnp.logical_or, [a(env) for a in args])
    if isinstance(e, sp.Not):
        return lambda env: jnp.logical_not(args[0](env))
    raise ValueError(f"cannot convert {type(e).__name__} ({e}) to JAX; supported: arithmetic, powers, "
                     "log exp tanh Abs sign Heaviside Max Min Piecewise and comparisons")


@functools.lru_cache(maxsize=256)
def _jax_fn(expr: sp.Expr) -> tuple[Callable, bool]:
    """One function object per expression, so jit caches are shared between equal drifts.

    Compiled from the parsed expression itself: re-parsing its printed text would apply the limits on
    typed input to numbers sympy produced (and fail on text the user never wrote).
    """
    ev = _compile(expr)
    temporal = t in expr.free_symbols
    if temporal:
        def fn(params, r_, A_, t_):
            r_, A_, t_ = jnp.broadcast_arrays(jnp.asarray(r_), jnp.asarray(A_), jnp.asarray(t_))
            return jnp.asarray(ev({"r": r_, "A": A_, "t": t_}), dtype=jnp.result_type(float)) + jnp.zeros_like(r_)
    else:
        def fn(params, r_, A_):
            r_, A_ = jnp.broadcast_arrays(jnp.asarray(r_), jnp.asarray(A_))
            return jnp.asarray(ev({"r": r_, "A": A_}), dtype=jnp.result_type(float)) + jnp.zeros_like(r_)
    return fn, temporal


def to_jax(expr: str | sp.Basic, name: str | None = None) -> Drift:
    """A :class:`Drift` (family ``"expression"``, savable) evaluating ``expr`` with jax.numpy.

    Piecewise -> ``jnp.where``, Max/Min -> ``jnp.maximum``/``jnp.minimum``, Abs -> ``jnp.abs``, integer
    powers -> ``lax.integer_pow``. Expressions containing ``t`` give temporal drifts ``f(r, A, t)``.
    """
    e = as_expression(expr)
    text = sp.sstr(e)
    fn, temporal = _jax_fn(e)
    if name is None:
        name = text if len(text) <= 60 else "expression"
    return Drift(name, fn, {}, temporal=temporal, family="expression", kwargs={"expr": text})


def _parse_printed(text: Any) -> sp.Expr:
    """An expression saved by :func:`to_jax` (sympy's printing): same whitelist, roomier size limits."""
    if not isinstance(text, str):
        raise TypeError(f"expression: 'expr' must be the expression text (a string), got {type(text).__name__}")
    return _parse(text, _PRINTED)


def _expression_family(expr: Any, **_ignored: Any) -> Drift:
    return to_jax(_parse_printed(expr))


register_family("expression", _expression_family)


# ================================================================================ closed forms
def _exact(x: Any) -> sp.Rational:
    """The shortest decimal of a (float32 or float64) parameter, as an exact rational."""
    return sp.Rational(str(np.asarray(x)[()]))


def ppo_expression(eps: float = 0.2) -> sp.Expr:
    """PPO's drift ``Max(0, (r - clip(r, 1 - eps, 1 + eps)) * A)`` as a sympy expression."""
    e = _exact(eps)
    return sp.Max(0, (r - sp.Min(sp.Max(r, 1 - e), 1 + e)) * A)


def dpo_expression(alpha: float = 2.0, beta: float = 0.6) -> sp.Expr:
    """DPO's drift (paper eq. 9) as a Piecewise in the sign of ``A``."""
    a, b = _exact(alpha), _exact(beta)
    x_pos, x_neg = (r - 1) * A, sp.log(r) * A
    return sp.Piecewise((sp.Max(0, x_pos - a * sp.tanh(x_pos / a)), A >= 0),
                        (sp.Max(0, x_neg - b * sp.tanh(x_neg / b)), True))


def to_sympy(drift: Drift | str | sp.Basic) -> sp.Expr:
    """The closed form of a drift: PPO and DPO (with their parameters), expression drifts, or strings.

    Networks (LPO) have no closed form here: distil them with :mod:`distill` instead.
    """
    if isinstance(drift, (str, sp.Basic)):
        return as_expression(drift)
    if not isinstance(drift, Drift):
        raise TypeError(f"expected a Drift, a string or a sympy expression, got {type(drift).__name__}")
    if drift.family == "ppo":
        return ppo_expression(drift.params["eps"])
    if drift.family == "dpo":
        return dpo_expression(drift.params["alpha"], drift.params["beta"])
    if drift.family == "expression":
        return _parse_printed(drift.kwargs["expr"])
    raise ValueError(f"drift {drift.name!r} (family {drift.family!r}) has no closed form; closed forms exist for "
                     "ppo, dpo and expression drifts (use distill.distill to approximate a network)")


from_closed_form = to_sympy


# ================================================================================ proofs
@dataclasses.dataclass(frozen=True)
class SymbolicCondition:
    """One condition: ``proved`` (a symbolic proof), ``refuted`` (a counterexample), or neither."""

    proved: bool
    counterexample: Mapping[str, float] | None
    method: str
    detail: str = ""

    @property
    def refuted(self) -> bool:
        return self.counterexample is not None

    @property
    def status(self) -> str:
        return "proved" if self.proved else ("refuted" if self.refuted else "unknown")


@dataclasses.dataclass(frozen=True)
class SymbolicReport:
    """``valid`` is True when all three conditions are proved, False when one is refuted, else None."""

    expr: sp.Expr
    conditions: Mapping[str, SymbolicCondition]

    @property
    def valid(self) -> bool | None:
        if all(c.proved for c in self.conditions.values()):
            return True
        if any(c.refuted for c in self.conditions.values()):
            return False
        return None

    def summary(self) -> str:
        verdict = {True: "VALID (proved)", False: "INVALID", None: "UNDECIDED (not proved, no counterexample)"}
        lines = [f"{sp.sstr(self.expr)}: {verdict[self.valid]}"]
        for k, c in self.conditions.items():
            ce = f" counterexample {dict(c.counterexample)}" if c.counterexample else ""
            lines.append(f"  {c.status.upper():<8} {k:<22} by {c.method}{ce}{': ' + c.detail if c.detail else ''}")
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return {"expr": sp.sstr(self.expr), "valid": self.valid,
                "conditions": {k: {"status": c.status, "proved": c.proved, "method": c.method, "detail": c.detail,
                                   "counterexample": None if c.counterexample is None else dict(c.counterexample)}
                               for k, c in self.conditions.items()}}


class _Unresolved(Exception):
    """A sign near r = 1 could not be decided symbolically."""


_s = sp.Symbol("s", positive=True)  # distance to r = 1
_a = sp.Symbol("a", positive=True)  # |A| in the sign cases


def _germ_sign(x: sp.Expr) -> int:
    """Sign of ``x`` for all sufficiently small ``s > 0`` (from its leading term), or raise _Unresolved."""
    x = sp.simplify(x) if x.has(_s) else x
    if x == 0:
        return 0
    try:
        lt = x.as_leading_term(_s) if x.has(_s) else x
    except Exception as err:  # noqa: BLE001 - sympy could not expand: undecided, not an error
        raise _Unresolved(str(err)) from None
    if lt.is_positive:
        return 1
    if lt.is_negative:
        return -1
    if lt.is_zero:
        return 0
    raise _Unresolved(f"sign of {lt} near r = 1")


def _germ_truth(c: sp.Basic) -> bool:
    if c is sp.true or c is sp.false:
        return bool(c)
    if isinstance(c, sp.And):
        return all(_germ_truth(x) for x in c.args)
    if isinstance(c, sp.Or):
        return any(_germ_truth(x) for x in c.args)
    if isinstance(c, sp.Not):
        return not _germ_truth(c.args[0])
    if isinstance(c, sp.core.relational.Relational):
        sg = _germ_sign(c.lhs - c.rhs)
        return {sp.StrictGreaterThan: sg > 0, sp.GreaterThan: sg >= 0, sp.StrictLessThan: sg < 0,
                sp.LessThan: sg <= 0, sp.Equality: sg == 0, sp.Unequality: sg != 0}[c.func]
    raise _Unresolved(f"condition {c}")


def _resolve(e: sp.Basic) -> sp.Expr:
    """Replace Max/Min/Abs/sign/Heaviside/Piecewise by the branch they take for all small ``s > 0``."""
    if e.is_Atom:
        return e
    if isinstance(e, sp.Piecewise):
        for ex, c in e.args:
            if _germ_truth(c):
                return _resolve(ex)
        raise _Unresolved("no Piecewise branch applies")
    args = [_resolve(x) for x in e.args]
    if isinstance(e, (sp.Max, sp.Min)):
        best = args[0]
        for x in args[1:]:
            sg = _germ_sign(x - best)
            if (sg > 0 and isinstance(e, sp.Max)) or (sg < 0 and isinstance(e, sp.Min)):
                best = x
        return best
    if isinstance(e, sp.Abs):
        return args[0] * _germ_sign(args[0])
    if isinstance(e, sp.sign):
        return sp.Integer(_germ_sign(args[0]))
    if isinstance(e, sp.Heaviside):
        sg = _germ_sign(args[0])
        return sp.Integer(1) if sg > 0 else (sp.Integer(0) if sg < 0 else sp.Rational(1, 2))
    return e.func(*args)


def _prove_zero_at_identity(expr: sp.Expr) -> SymbolicCondition:
    try:
        at1 = sp.piecewise_fold(expr.subs(r, 1))
        simplified = sp.simplify(at1)
    except (ValueError, TypeError, NotImplementedError, RecursionError) as err:
        return SymbolicCondition(False, None, "substitution r = 1 (sympy failed)", f"{type(err).__name__}: {err}")
    if simplified == 0:
        return SymbolicCondition(True, None, "substitution r = 1 and simplification", "f(1, A) simplifies to 0")
    ce = _numeric_nonzero(at1)
    if ce is not None:
        return SymbolicCondition(False, {"r": 1.0, **ce}, "substitution r = 1, evaluated",
                                 f"f(1, A) = {sp.sstr(simplified)}")
    return SymbolicCondition(False, None, "substitution r = 1 (simplification inconclusive)",
                             f"f(1, A) = {sp.sstr(simplified)} is zero on a grid of A but was not simplified to 0")


def _numeric_nonzero(e: sp.Expr, tol: float = 1e-12) -> dict | None:
    """An (A, t) where the r-free expression ``e`` is visibly non-zero, or None."""
    for a_val in (1.0, -1.0, 0.0, 0.5, -0.5, 2.0, -2.0, 5.0, -5.0, 0.1, -0.1):
        for t_val in ((0.0, 0.5, 1.0) if e.has(t) else (0.0,)):
            try:
                v = complex(sp.N(e.subs({A: a_val, t: t_val}), 20))
            except (TypeError, ValueError):
                continue
            if not (math.isfinite(v.real) and math.isfinite(v.imag)) or abs(v) > tol:
                out = {"A": a_val, "value": v.real if not v.imag else float("nan")}
                if e.has(t):
                    out["t"] = t_val
                return out
    return None


_CASES = (("A > 0", _a), ("A < 0", -_a), ("A = 0", sp.Integer(0)))


def _prove_zero_grad(expr: sp.Expr) -> SymbolicCondition:
    """One-sided limits of df/dr at r = 1, per sign case of A and per side; MVT turns these into derivatives."""
    f1 = expr.subs(r, 1)
    unresolved = []
    for case, a_sub in _CASES:
        for side, label in ((1, "r -> 1+"), (-1, "r -> 1-")):
            try:
                # inside the try: Max/Min of an argument that turns complex (A**1.5 for A < 0) raises here
                e = expr.subs({r: 1 + side * _s, A: a_sub})
                g = _resolve(e)
                # continuity at r = 1 (the germ must meet f(1, A)), then the limit of the derivative
                jump = sp.simplify(sp.limit(g, _s, 0, "+") - f1.subs(A, a_sub))
                if jump != 0:
                    ce = _case_counterexample(jump, case, label)
                    if ce is not None:
                        return SymbolicCondition(False, ce, "one-sided limits at r = 1",
                                                 f"f jumps at r = 1 ({label}, {case})")
                    raise _Unresolved("continuity")
                dlim = sp.simplify(sp.limit(side * sp.diff(g, _s), _s, 0, "+"))
            except _Unresolved as err:
                unresolved.append(f"{case}, {label}: {err}")
                continue
            except (NotImplementedError, ValueError, TypeError, RecursionError) as err:
                unresolved.append(f"{case}, {label}: sympy could not take the limit ({type(err).__name__})")
                continue
            if dlim == 0:
                continue
            if dlim.has(sp.Limit) or dlim.has(sp.nan, sp.zoo):
                unresolved.append(f"{case}, {label}: limit undetermined ({sp.sstr(dlim)})")
                continue
            ce = _case_counterexample(dlim, case, label)
            if ce is not None:
                return SymbolicCondition(False, ce, "one-sided limit of df/dr at r = 1",
                                         f"df/dr -> {sp.sstr(dlim.subs(_a, sp.Abs(A)))} as {label} ({case})")
            unresolved.append(f"{case}, {label}: limit {sp.sstr(dlim)} not simplified to 0")
    if unresolved:
        return SymbolicCondition(False, None, "one-sided limits at r = 1 (incomplete)", "; ".join(unresolved))
    return SymbolicCondition(True, None, "one-sided limits of df/dr at r = 1",
                             "limit 0 from both sides for A > 0, A < 0 and A = 0 (f continuous at r = 1)")


def _case_counterexample(value: sp.Expr, case: str, label: str) -> dict | None:
    for a_val in (1.0, 2.0, 0.5, 3.0, 0.1, 5.0):
        for t_val in ((0.0, 0.5, 1.0) if value.has(t) else (0.0,)):
            try:
                v = complex(sp.N(value.subs({_a: a_val, t: t_val}), 20))
            except (TypeError, ValueError):
                continue
            if abs(v) > 1e-12 or not math.isfinite(abs(v)):
                sign = {"A > 0": 1.0, "A < 0": -1.0, "A = 0": 0.0}[case]
                out = {"r": 1.0, "A": sign * a_val, "side": 1.0 if "+" in label else -1.0, "value": v.real}
                if value.has(t):
                    out["t"] = t_val
                return out
    return None


# -- non-negativity -------------------------------------------------------------------------------------
def _nonneg(e: sp.Expr) -> bool:
    """True only when ``e >= 0`` for all r > 0, real A, t >= 0 follows from the structure of ``e``."""
    if e.is_number:
        return bool(e.is_real and e.is_nonnegative)
    if e.is_nonnegative:  # sympy's assumptions (r positive, t nonnegative)
        return True
    if isinstance(e, sp.Max):
        return any(_nonneg(x) for x in e.args)
    if isinstance(e, sp.Min):
        return all(_nonneg(x) for x in e.args)
    if isinstance(e, (sp.Abs, sp.exp, sp.Heaviside)):
        return True
    if isinstance(e, sp.Pow):
        if e.exp.is_Integer and int(e.exp) % 2 == 0:
            return _real(e.base)
        return _nonneg(e.base) and bool(e.exp.is_real)
    if isinstance(e, sp.Piecewise):
        return all(_nonneg(x) for x, _ in e.args)
    if isinstance(e, sp.tanh):
        return _nonneg(e.args[0])
    if isinstance(e, sp.Add):
        if all(_nonneg(x) for x in e.args):
            return True
        return _known_inequality(e)
    if isinstance(e, sp.Mul):
        n_neg = _count_nonpos_factors(e)
        return n_neg is not None and n_neg % 2 == 0
    return False


def _count_nonpos_factors(e: sp.Mul) -> int | None:
    """How many factors of ``e`` are provably <= 0, or None if some factor's sign is unknown."""
    n_neg = 0
    for x in e.args:
        if _nonneg(x):
            continue
        if _nonpos(x):
            n_neg += 1
            continue
        return None
    return n_neg


def _nonpos(e: sp.Expr) -> bool:
    if e.is_number:
        return bool(e.is_real and e.is_nonpositive)
    if e.is_nonpositive:
        return True
    if isinstance(e, sp.Mul):
        n_neg = _count_nonpos_factors(e)
        return n_neg is not None and n_neg % 2 == 1
    if isinstance(e, sp.Add):
        return all(_nonpos(x) for x in e.args)
    return False


def _real(e: sp.Expr) -> bool:
    """Real-valued on the domain (so that an even power of it is >= 0), by sympy's assumptions."""
    return bool(e.is_extended_real)


def _known_inequality(e: sp.Expr) -> bool:
    """``k (r - 1 - log r) >= 0`` and ``x - c tanh(x / c)`` with ``x >= 0`` (both from convexity)."""
    base = r - 1 - sp.log(r)
    ratio = sp.simplify(e / base)
    if not ratio.has(r) and _nonneg(ratio):
        return True
    for term in e.args:
        coeff, rest = term.as_coeff_Mul()
        if isinstance(rest, sp.tanh) and coeff.is_negative:
            c = -coeff
            x = sp.expand(rest.args[0] * c)
            if sp.expand(e - (x - c * sp.tanh(x / c))) == 0 and _nonneg(x):
                return True
    return False


_STRUCTURE = "structure (Max(0, .), squares, Abs, sums/products of non-negative terms, known inequalities)"


def _nonneg_rule(e: sp.Expr, depth: int = 0) -> str | None:
    """The rule that proves ``e >= 0`` on r > 0, real A, t >= 0 (see :mod:`drifts.bounds`), or None.

    In order: structure; a proved lower bound >= 0 (monotone compositions, branch conditions as
    assumptions); sums of parts, positive multiples, Max with a proved argument and Piecewise branches
    under their conditions, each proved by any rule; convexity with a flat tangent at r = 1.
    """
    from drifts import bounds

    if depth > 4:
        return None
    if _nonneg(e):
        return _STRUCTURE
    low = bounds.bound(e, lower=True)
    if low is not None and bounds.proved_le(0, low):
        return "a proved lower bound (monotone compositions, branch conditions as assumptions)"
    if e.has(sp.Max, sp.Min):  # Max/Min as branches: the chosen argument's condition holds on its branch
        try:
            branched = e.rewrite(sp.Piecewise)
        except (TypeError, ValueError, RecursionError):
            branched = e
        low = bounds.bound(branched, lower=True) if branched != e else None
        if low is not None and bounds.proved_le(0, low):
            return "a proved lower bound with Max/Min as branches (the chosen argument's condition assumed)"
    if isinstance(e, sp.Add):
        rules = [_nonneg_rule(x, depth + 1) for x in e.args]
        if all(rules):
            return "a sum of parts each proved >= 0 (" + "; ".join(dict.fromkeys(rules)) + ")"
    if isinstance(e, sp.Mul):
        coeff, rest = e.as_coeff_Mul()
        if coeff > 0 and coeff != 1:
            inner = _nonneg_rule(rest, depth + 1)
            if inner:
                return inner
    if isinstance(e, sp.Max):
        for x in e.args:
            inner = _nonneg_rule(x, depth + 1)
            if inner:
                return inner
    if isinstance(e, sp.Piecewise):
        rules = [_nonneg_rule(assume(x), depth + 1) for x, assume in bounds.branch_assumptions(e)]
        if all(rules):
            return "each Piecewise branch under its condition (" + "; ".join(dict.fromkeys(rules)) + ")"
    return bounds.convex_with_flat_tangent(e, r, lambda x: _nonneg_rule(x, depth + 1) is not None)


def _unsigned_part(e: sp.Expr) -> sp.Expr:
    """The first part of ``e`` (a term of a sum, a Piecewise branch) that no rule signs: what an UNDECIDED names."""
    if isinstance(e, sp.Add):
        for x in e.args:
            if _nonneg_rule(x) is None:
                return x
    return e


def _prove_nonnegative(expr: sp.Expr) -> SymbolicCondition | None:
    rule = _nonneg_rule(expr)
    return None if rule is None else SymbolicCondition(True, None, rule)


# -- where the expression is defined ------------------------------------------------------------------
def _undefined_where(e: sp.Expr) -> str | None:
    """Why ``e`` may be undefined somewhere on r > 0, real A, t in [0, 1], or None when it cannot be.

    Sympy's simplifications assume every subexpression is defined (``0 / t`` becomes 0, ``sqrt(A)`` is
    complex for A < 0), so a proof means nothing where a denominator can vanish, a fractional power
    takes a negative base, or a log a non-positive argument. The first such subexpression is named.
    """
    for node in sp.preorder_traversal(e):
        if isinstance(node, sp.Pow):
            base, ex = node.base, node.exp
            if ex.is_negative and not _positive(base):
                return f"{sp.sstr(base)} can be 0 in the denominator of {_short(node)}"
            if not ex.is_integer and not _nonneg(base):
                return f"{sp.sstr(base)} can be negative under the fractional power {_short(node)}"
        elif isinstance(node, sp.log) and not _positive(node.args[0]):
            return f"{sp.sstr(node.args[0])} can be <= 0 in {_short(node)}"
    return None


def _positive(e: sp.Expr) -> bool:
    """True only when ``e > 0`` on the domain, by sympy's assumptions or structure."""
    if e.is_positive:
        return True
    if isinstance(e, sp.exp):
        return _real(e.args[0])
    if isinstance(e, sp.Add):  # a sum of non-negative terms with one positive one
        return all(_nonneg(x) for x in e.args) and any(x.is_positive for x in e.args)
    if isinstance(e, sp.Mul):
        return all(_positive(x) for x in e.args)
    if isinstance(e, sp.Pow):
        return _positive(e.base) and bool(e.exp.is_real)
    return False


def _numeric_counterexample(c) -> dict:
    """Where a failed numeric condition (:class:`drifts.checks.ConditionResult`) was worst, and the value."""
    return {**(dict(zip(("r", "A", "t"), c.where, strict=False)) if c.where else {}), "value": c.worst}


# -- the report ---------------------------------------------------------------------------------------
def check_drift_symbolic(expr: str | sp.Basic, *, numeric: bool = True, **check_kwargs: Any) -> SymbolicReport:
    """Prove the drift conditions of ``expr`` (a sympy expression or a string in r, A and optionally t).

    * ``zero_at_identity``: substitute ``r = 1`` and simplify to 0 (else a counterexample ``A``).
    * ``zero_grad_at_identity``: for ``A > 0``, ``A < 0`` and ``A = 0`` and from both sides, resolve every
      Max/Min/Abs/Piecewise to the branch it takes near ``r = 1`` (signs from leading terms in
      ``s = |r - 1|``), check continuity, and take the one-sided limit of ``df/dr``; all zero proves it.
    * ``nonnegative``: proved from structure (``Max(0, .)``, even powers, ``Abs``, ``exp``, sums and products
      of non-negative terms, ``k (r - 1 - log r)``, ``x - c tanh(x / c)`` for ``x >= 0``, sympy's
      assumptions with r > 0, A real); otherwise ``numeric=True`` searches with :func:`check_drift`.

    A condition without a proof is ``proved=False``; it has a ``counterexample`` only when one was found.
    ``check_kwargs`` go to the numeric search.
    """
    from drifts.checks import validate_check_options

    validate_check_options(**check_kwargs)  # now, not only when a numeric search happens to be needed
    e = as_expression(expr)
    conds: dict[str, SymbolicCondition] = {}
    numeric_report = None

    def numeric_report_():
        nonlocal numeric_report
        if numeric_report is None:
            from drifts.checks import check_drift

            numeric_report = check_drift(to_jax(e), **check_kwargs)
        return numeric_report

    undefined = _undefined_where(e)
    try:
        nn = _prove_nonnegative(e) if undefined is None else None
    except (ValueError, TypeError, RecursionError):  # a comparison sympy cannot make: no structural proof
        nn = None
    if nn is None:
        if numeric:
            c = numeric_report_().conditions["nonnegative"]
            if not c.passed:
                nn = SymbolicCondition(False, _numeric_counterexample(c), "numeric search (grid + local search, float64)",
                                       c.detail)
            else:
                nn = SymbolicCondition(False, None, "no structural proof; numeric search found no counterexample",
                                       f"min f = {c.worst:.3g} on the checked domain; no rule signs "
                                       f"{_short(_unsigned_part(e))}")
        else:
            nn = SymbolicCondition(False, None, "no structural proof (numeric search disabled)")
    conds["nonnegative"] = nn
    conds["zero_at_identity"] = _prove_zero_at_identity(e)
    zg = _prove_zero_grad(e)
    if undefined is not None:  # a proof assumed the expression defined everywhere: void, say why
        void = f"not a proof: {undefined}"
        z1 = conds["zero_at_identity"]
        if z1.proved:
            conds["zero_at_identity"] = SymbolicCondition(False, None, z1.method + " (void)", void)
        if zg.proved:
            zg = SymbolicCondition(False, None, zg.method + " (void)", void)
        if numeric and not conds["zero_at_identity"].refuted:
            c = numeric_report_().conditions["zero_at_identity"]
            if not c.passed:
                conds["zero_at_identity"] = SymbolicCondition(False, _numeric_counterexample(c), "numeric (float64)",
                                                              f"{c.detail}; {void}")
    if not zg.proved and not zg.refuted and numeric:
        c = numeric_report_().conditions["zero_grad_at_identity"]
        if not c.passed:
            zg = SymbolicCondition(False, _numeric_counterexample(c), "numeric one-sided derivatives (float64)",
                                   c.detail or zg.detail)
    conds["zero_grad_at_identity"] = zg
    return SymbolicReport(e, conds)


def _eval_numpy(expr: sp.Expr, rv: np.ndarray, av: np.ndarray, tv: np.ndarray | float = 0.0) -> np.ndarray:
    """Evaluate an expression on numpy arrays in float64 (used by tests and plots)."""
    fn, temporal = _jax_fn(as_expression(expr))
    with jax.enable_x64(True):
        args = (jnp.asarray(rv, jnp.float64), jnp.asarray(av, jnp.float64))
        out = fn({}, *args, jnp.asarray(tv, jnp.float64)) if temporal else fn({}, *args)
        return np.asarray(out)
