"""Symbolic drifts: safe parsing, proofs (and no false proofs), conversions, agreement with numeric checks."""

import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from drifts import Drift, dpo, get_drift, ppo
from drifts.checks import check_drift
from drifts.symbolic import (
    A,
    check_drift_symbolic,
    dpo_expression,
    from_closed_form,
    parse_expression,
    r,
    to_jax,
    to_sympy,
)

FAST = {"grid": (201, 101), "n_identity": 401, "n_grad_A": 61, "search_iters": 30}

HOSTILE = [
    "__import__('os').system('touch /tmp/pwned_by_drift')",
    "().__class__.__bases__[0].__subclasses__()",
    "r.__class__", "getattr(r, 'func')", "lambda: 1", "[x for x in ()]", "open('/etc/passwd')",
    "exec('1')", "eval('1')", "sympify('r')", "r if A else 1", "Max(r, key=1)", "Max(*r)", "A[0]", "r; 1",
    "'r'", "x + 1", "os.system", "9**9**9**9", "10**10**10", "r**(A**99999)", "2**r**1000", "1e999",
    "(" * 200 + "r" + ")" * 200, "1" * 500, "r @ A", "r // 2", "r % 2", "{}", "Symbol('x')", "Function('f')(r)",
    "Piecewise(r)", "True", "~r", "r > 1", "1/0", "", "   ", "r" * 5000,
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_refused_without_side_effects(text, tmp_path):
    with pytest.raises(ValueError):
        parse_expression(text)
    import os

    assert not os.path.exists("/tmp/pwned_by_drift")


def test_parser_builds_exact_sympy():
    e = parse_expression("Piecewise((Max(0, (r-1)*A - 2*tanh((r-1)*A/2)), A >= 0), (Max(0, log(r)*A - 0.6*tanh(log(r)*A/0.6)), True))")
    assert sp.simplify(e - dpo_expression()) == 0
    assert parse_expression("relu(r - 1)") == sp.Max(0, r - 1)
    assert parse_expression("1e-6") == sp.Rational(1, 10**6)
    assert parse_expression("where(A >= 0, r, 1)") == sp.Piecewise((r, A >= 0), (1, True))
    assert parse_expression("clip(r, 0.8, 1.2)") == sp.Min(sp.Max(r, sp.Rational(4, 5)), sp.Rational(6, 5))


def test_plain_sympy_symbols_are_rebound():
    x, a = sp.symbols("r A")
    rep = check_drift_symbolic(sp.Max(0, (x - 1) ** 2 * a**2))
    assert rep.valid is True
    with pytest.raises(ValueError, match="unknown symbol"):
        check_drift_symbolic(sp.Symbol("q") * x)


@pytest.mark.parametrize("drift", [ppo(), dpo(), ppo(0.1), dpo(1.0, 0.3)])
def test_closed_forms_proved(drift):
    rep = check_drift_symbolic(to_sympy(drift))
    assert rep.valid is True, str(rep)
    assert all(c.proved for c in rep.conditions.values())
    assert from_closed_form(drift) == to_sympy(drift)


def test_dpo_closed_form_matches_jax_drift():
    d = to_jax(to_sympy(dpo()))
    rv, av = np.meshgrid(np.exp(np.linspace(-1.5, 1.5, 31)), np.linspace(-5, 5, 21))
    np.testing.assert_allclose(d(jnp.asarray(rv), jnp.asarray(av)), dpo()(rv, av), atol=1e-5)
    e = to_jax(to_sympy(ppo()))
    np.testing.assert_allclose(e(jnp.asarray(rv), jnp.asarray(av)), ppo()(rv, av), atol=1e-5)


@pytest.mark.parametrize("text,refuted", [
    ("Abs(r - 1)", "zero_grad_at_identity"),
    ("Max(0, r - 1)", "zero_grad_at_identity"),
    ("Max(0, 1 - r) * A**2", "zero_grad_at_identity"),
    ("(r - 1)**2 + 1e-6", "zero_at_identity"),
    ("(r - 1)**2 + 1e-4*Max(0, A - 4)", "zero_at_identity"),
    ("Piecewise(((r - 1)**2, A >= 0), (Max(0, r - 1)*A**2, True))", "zero_grad_at_identity"),
    ("Max(0, (r - 1)*(A - 1))", "zero_grad_at_identity"),
])
def test_invalid_expressions_refuted_with_counterexample(text, refuted):
    rep = check_drift_symbolic(text, **FAST)
    assert rep.valid is False
    c = rep.conditions[refuted]
    assert c.refuted and not c.proved and c.counterexample["r"] == 1.0
    assert refuted in str(rep)


def test_negative_far_from_identity_refuted_numerically():
    rep = check_drift_symbolic("(r - 1)**2 * A**2 * 1/1000 - Max(0, log(r) - 1.4) * A", **FAST)
    c = rep.conditions["nonnegative"]
    assert rep.valid is False and c.refuted and not c.proved and "numeric" in c.method
    assert np.log(c.counterexample["r"]) > 1.4


def test_never_proved_without_proof():
    # non-negative (x^4 - x^2 + 1/4 = (x^2 - 1/2)^2) but not in a form the structural rules recognise
    rep = check_drift_symbolic("(r - 1)**2 * ((r - 1)**4 - (r - 1)**2 + 1/4)", **FAST)
    c = rep.conditions["nonnegative"]
    assert not c.refuted
    assert c.proved is False or "structure" in c.method
    assert rep.conditions["zero_at_identity"].proved and rep.conditions["zero_grad_at_identity"].proved


def test_known_inequalities_and_temporal():
    assert check_drift_symbolic("A**2 * (r - 1 - log(r))").valid is True
    assert check_drift_symbolic("Max(0, (r - 1)*A - 2*tanh((r - 1)*A/2))").valid is True
    rep = check_drift_symbolic("t * (r - 1)**2 * Abs(A)")
    assert rep.valid is True
    assert to_jax("t * (r - 1)**2").temporal


def test_expression_drift_file_roundtrip(tmp_path):
    d = to_jax("Piecewise(((r - 1)**2 * A, A >= 0), (Max(0, log(r)*A)**2, True))")
    assert isinstance(d, Drift) and d.family == "expression"
    e = get_drift(d.save(tmp_path / "e.drift"))
    rv, av = jnp.linspace(0.3, 3.0, 9), jnp.linspace(-4.0, 4.0, 9)
    np.testing.assert_array_equal(np.asarray(e(rv, av)), np.asarray(d(rv, av)))
    assert e.kwargs["expr"] == d.kwargs["expr"]


# ---- numeric and symbolic verdicts agree on a generated family ----------------------------------------
# f = c1 (r-1)^2 g(A) + c2 (r-1) A + c3 (+ optional Max(0, .) wrap): valid iff c2 = 0, c3 = 0 (c1 >= 0)
GS = ["A**2", "Abs(A)", "exp(A)", "1"]


@settings(max_examples=8, deadline=None)
@given(c1=st.integers(0, 3), c2=st.sampled_from([0, 0, 1, -2]), c3=st.sampled_from([0, 0, 1]),
       g=st.sampled_from(GS), wrap=st.booleans())
def test_numeric_and_symbolic_agree(c1, c2, c3, g, wrap):
    text = f"{c1}*(r - 1)**2*{g} + {c2}*(r - 1)*A + {c3}/1000"
    if wrap:
        text = f"Max(0, {text})"
    sym = check_drift_symbolic(text, numeric=False)
    expected = c2 == 0 and c3 == 0
    assert (sym.valid is True) == expected, str(sym)
    if sym.valid is False:
        assert not expected
    # the numeric verdict of the same expression as a parameterised drift (one compiled check)
    num = check_drift(AGREE.with_params(_agree_params(c1, c2, c3, GS.index(g), wrap)), **FAST)
    assert num.valid == expected, str(num)
    if sym.valid is not None:
        assert num.valid == sym.valid


def _agree_fn(params, r_, A_):
    g = jnp.stack([A_**2, jnp.abs(A_), jnp.exp(A_), jnp.ones_like(A_)])
    g = jnp.tensordot(params["w"], g, axes=1)
    f = params["c1"] * (r_ - 1.0) ** 2 * g + params["c2"] * (r_ - 1.0) * A_ + params["c3"] / 1000.0
    return jnp.where(params["wrap"] > 0, jnp.maximum(0.0, f), f)


AGREE = Drift("agree", _agree_fn, {})


def _agree_params(c1, c2, c3, k, wrap):
    return {"c1": jnp.asarray(float(c1)), "c2": jnp.asarray(float(c2)), "c3": jnp.asarray(float(c3)),
            "w": jnp.eye(4)[k], "wrap": jnp.asarray(float(wrap))}


@settings(max_examples=6, deadline=None)
@given(c=st.integers(1, 9), p=st.sampled_from([2, 4]), g=st.sampled_from(GS))
def test_valid_by_construction_proved(c, p, g):
    rep = check_drift_symbolic(f"Max(0, {c}*(r - 1)**{p}*{g})", numeric=False)
    assert rep.valid is True, str(rep)


# ---- everything the parser accepts converts to JAX and survives a drift file ------------------------------
@pytest.mark.parametrize("text", [
    "Piecewise((0, r == 1), ((r - 1)**2, True))",
    "Piecewise(((r - 1)**2, r != 1), (0, True))",
    "Piecewise(((r - 1)**2, Ne(r, 1) & Eq(A, A)), (0, True))",
    # sympy folds this into a 61-digit integer: longer than a typed literal may be, but not typed
    "0.1234567890123456789012345678901*0.1234567890123456789012345678901*(r - 1)**2",
])
def test_accepted_expressions_convert_and_roundtrip(text, tmp_path):
    d = to_jax(text)
    e = get_drift(d.save(tmp_path / "e.drift"))
    rv, av = jnp.array([0.5, 1.0, 2.0]), jnp.array([-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(e(rv, av)), np.asarray(d(rv, av)))
    assert to_sympy(e) == parse_expression(text)


def test_eq_condition_checks_numerically():
    assert check_drift("Piecewise((0, r == 1), ((r - 1)**2, True))", **FAST).valid


@pytest.mark.parametrize("text,problem", [
    ("r*1e300*1e300*(r - 1)**2", "larger than float64"),
    ("sqrt(-r)*(r - 1)**2", "imaginary unit"),
    ("log(0)*(r - 1)**2", "undefined or infinite"),
    ("*".join(["1e-300"] * 20) + "*r", "digits to write exactly"),
    ("Piecewise((0, Eq(r)), (1, True))", "Eq takes two arguments"),
    ("Max(0)", "Max takes 2 to 8 arguments, got 1"),
])
def test_constants_no_drift_can_hold_are_refused_when_parsed(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_expression(text)


def test_drift_file_expression_must_parse_with_the_whitelist(tmp_path):
    from mirrorlearn._archive import ArchiveError, write_archive

    meta = {"kind": "mirrorlearn.drift", "format_version": 1,
            "drift": {"family": "expression", "kwargs": {"expr": "__import__('os')"}}}
    with pytest.raises(ArchiveError, match="e.drift: invalid arguments for drift family 'expression'"):
        get_drift(write_archive(tmp_path / "e.drift", meta, {}))


@pytest.mark.parametrize("text", ["(r-1)**2/t", "(r-1)**2/(A-1)**2", "Abs(sqrt(A))*(r-1)**2"])
def test_no_proof_where_the_expression_is_undefined(text):
    # sympy simplifies 0/t to 0 and takes sqrt(A) complex: a proof would be about another function
    report = check_drift_symbolic(text)
    assert report.valid is not True
    assert not any(c.proved for name, c in report.conditions.items() if name != "nonnegative")


def test_a_power_that_turns_complex_gives_a_verdict_not_a_crash():
    report = check_drift_symbolic("Max(0, (r-1)**2*A**1.5)")  # raised sympy's "not comparable" before
    assert report.valid is False
    assert check_drift_symbolic("Abs(A)**1.5*(r-1)**2 + (r-1)**2/r").valid is True


# -- the proof rules of drifts.bounds, each with cases that must and must not pass ---------------------
def _sym(text):
    from drifts.symbolic import parse_expression

    return parse_expression(text)


@pytest.mark.parametrize("text, low", [
    ("log(1 + exp((r - 1)**2*A**2)) - log(2)", 0),   # increasing functions of an argument proved >= 0
    ("exp(-(r - 1)**2)", 0),                          # exp > 0 whatever its argument
    ("1 - exp(-(r - 1)**2)", 0),                      # exp(-x) with x >= 0 is at most 1
    ("cosh(A) - 1", 0),
    ("tanh(r) + 1", 1),                               # r > 0: tanh(r) > tanh(0)
    ("sqrt(1 + (r - 1)**2)", 1),
    ("1/(1 + r)", 0),                                 # a positive denominator
    ("Max(A, 2)", 2), ("Min(r, 3)", 0),
])
def test_bounds_prove_lower_bounds(text, low):
    from drifts import bounds

    got = bounds.bound(_sym(text), lower=True)
    assert got is not None and bounds.proved_le(low, got), got


@pytest.mark.parametrize("text", ["A", "tanh(A)", "log(r)", "r - 1", "A*(r - 1)**2", "exp(A) - 1", "Min(A, r)",
                                  "1/(A**2 - 1)", "sqrt(A)"])
def test_bounds_never_claim_a_lower_bound_of_zero_for_signed_or_unbounded_terms(text):
    from drifts import bounds

    got = bounds.bound(_sym(text), lower=True)
    assert got is None or not bounds.proved_le(0, got), got


def test_branch_conditions_are_assumptions():
    from drifts import bounds

    e = _sym("Piecewise(((r - 1)**2*A, A >= 0), (-log(r)**2*A, True))")
    (b1, assume1), (b2, assume2) = bounds.branch_assumptions(e)
    assert assume1(b1).is_nonnegative and assume2(b2).is_nonnegative  # A >= 0, then A < 0 by negation
    wrong = _sym("Piecewise(((r - 1)**2*A, A >= 0), (log(r)**2*A, True))")
    assert bounds.bound(wrong, lower=True) is None
    r_branch = _sym("Piecewise((r - 1, r >= 1), (1 - r, True))")  # r >= 1 as r = 1 + u, then r < 1
    assert bounds.proved_le(0, bounds.bound(r_branch, lower=True))


@pytest.mark.parametrize("text, rule", [
    ("exp(r - 1) - r", "in r"), ("r*log(r) - r + 1", "in r"), ("Abs(A)*(r - 1 - log(r))", "in r"),
    ("r**2 - 2*r + 1", "in r"), ("exp(log(r)**2) - 1", "log r"),
])
def test_convexity_with_a_flat_tangent_proves(text, rule):
    from drifts import bounds
    from drifts.symbolic import _nonneg_rule, r

    got = bounds.convex_with_flat_tangent(_sym(text), r, lambda x: _nonneg_rule(x) is not None)
    assert got is not None and rule in got


@pytest.mark.parametrize("text", [
    "exp(r - 1) - 1",          # convex, but its tangent at r = 1 is not flat
    "r - 1 - 2*log(r)",        # convex, f'(1) = -1
    "(r - 1)**2 - (r - 1)**4",  # flat tangent, not convex
    "Abs(r - 1)**3",           # a kink in r: the rule does not apply
    "(r - 1)**2*A",            # convex only for A >= 0
])
def test_convexity_rule_refuses(text):
    from drifts import bounds
    from drifts.symbolic import _nonneg_rule, r

    assert bounds.convex_with_flat_tangent(_sym(text), r, lambda x: _nonneg_rule(x) is not None) is None


def test_new_functions_in_sympy_jax_and_the_parser():
    from drifts.symbolic import to_jax

    for text, expect in [("cosh(r - 1) - 1", lambda r: np.cosh(r - 1) - 1), ("sinh(r - 1)**2", lambda r: np.sinh(r - 1)**2),
                         ("softplus(r) - log(2)", lambda r: np.logaddexp(0, r) - np.log(2)),
                         ("sigmoid(r) - 0.5", lambda r: 1 / (1 + np.exp(-r)) - 0.5), ("expm1(r)", np.expm1)]:
        got = float(to_jax(text)(np.float32(1.7), np.float32(0.3)))
        assert got == pytest.approx(float(expect(1.7)), rel=1e-5), text
    assert float(to_jax("softplus(200*r)")(np.float32(1.0), np.float32(1.0))) == pytest.approx(200.0)  # no overflow
    with pytest.raises(ValueError, match="cosh of 1000 overflows"):
        to_jax("cosh(1000)*r")


def test_undecided_names_the_part_no_rule_signs():
    rep = check_drift_symbolic("(r - 1)**2 + Heaviside(A)*(r - 1)**2*A", grid=(51, 31), n_identity=51, n_grad_A=11,
                               search_iters=5)
    c = rep.conditions["nonnegative"]
    assert rep.valid is None and "no rule signs" in c.detail and "Heaviside(A)" in c.detail


def test_the_suite_is_proved_where_the_rules_reach_and_refuted_everywhere_else():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "drift_suite", Path(__file__).resolve().parents[1] / "benchmarks" / "drift_suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    assert len(suite.VALID) >= 30 and len(suite.INVALID) >= 15
    fast = dict(grid=(121, 81), n_identity=121, n_grad_A=21, search_iters=12)
    for name, text in suite.VALID.items():
        rep = check_drift_symbolic(text, **fast)
        assert rep.valid is not False, f"valid drift {name!r} refuted: {rep}"
        assert (rep.valid is True) == (name in suite.COVERED), f"{name!r}: {rep}"
    for name, text in suite.INVALID.items():
        rep = check_drift_symbolic(text, **fast)
        assert rep.valid is False, f"invalid drift {name!r} not refuted: {rep}"  # never a false proof


@pytest.mark.parametrize("text, proved", [
    ("Max(-A, A)*(r - 1)**2", True),          # the branch taking -A holds where A <= 0 (read from -A >= A)
    ("Max(A, -A, 0.5*A)*(r - 1)**2", True),
    ("Piecewise((r - 1, 2*r >= 2), (1 - r, True))", True),  # 2r >= 2 is r >= 1
    ("Max(A, 2*A)*(r - 1)**2", False),        # negative for A < 0: no rule may prove it
    ("Piecewise((r - 1, 2*r >= 3), (1 - r, True))", False),  # r >= 1.5 on the first branch: r - 1 > 0 but 1 - r < 0 on (1, 1.5)
])
def test_max_min_branch_choices_and_linear_conditions_are_assumptions(text, proved):
    from drifts.symbolic import _nonneg_rule

    assert (_nonneg_rule(_sym(text)) is not None) == proved
