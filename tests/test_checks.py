"""Numeric drift checks: the hard cases (kinks, offsets, far negativity, pockets, one-sided failures)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drifts import Drift, dpo, from_callable, lpo, ppo
from drifts.checks import check_drift, check_drift_population
from drifts.library import lpo_init
from drifts.testing import assert_valid_drift, ratio_advantage_pairs

FAST = {"grid": (201, 101), "n_identity": 401, "n_grad_A": 61, "search_iters": 30}


def test_lpo_passes_with_default_settings():
    report = check_drift(lpo())  # the default domain and tolerances, as agents use them at fit
    assert report.valid, str(report)
    assert set(report.conditions) == {"nonnegative", "zero_at_identity", "zero_grad_at_identity"}


@pytest.mark.parametrize("make", [ppo, dpo, lambda: ppo(0.1), lambda: dpo(1.0, 0.3)])
def test_builtin_drifts_pass(make):
    report = check_drift(make(), **FAST)
    assert report.valid, str(report)


@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 30.0), (2, 1e3), (3, 1e5)])
def test_lpo_with_large_random_weights_is_never_rejected(seed, scale):
    # ReLU(net - 1e-6 + PPO): quotients are large at h = 1e-3 but exactly 0 below 1e-6/|net'(1)|
    params = lpo_init(jax.random.PRNGKey(seed), init_scale=scale)
    params = {"w1": params["w1"] * (1.0 + seed), "w2": params["w2"]}
    report = check_drift(lpo(params=params), **FAST)
    assert report.valid, str(report)


def test_lpo_temporal_passes():
    fast = {**FAST, "grid": (101, 51)}
    assert check_drift(lpo(temporal=True, init_scale=1.0), t_values=(0.0, 1.0), **fast).valid


@pytest.mark.parametrize("fn,side", [
    (lambda r, A: jnp.abs(r - 1.0), None),
    (lambda r, A: jax.nn.relu(r - 1.0), "right"),
    (lambda r, A: jax.nn.relu(1.0 - r) * A**2, "left"),
    (lambda r, A: jnp.abs(jnp.log(r)) * jnp.abs(A), None),
])
def test_kinks_at_identity_fail(fn, side):
    report = check_drift(fn, **FAST)
    c = report.conditions["zero_grad_at_identity"]
    assert not report.valid and not c.passed
    assert report.conditions["nonnegative"].passed and report.conditions["zero_at_identity"].passed
    assert c.where[0] == 1.0
    if side:
        assert side in c.detail
    assert "zero_grad_at_identity" in str(report) and "FAIL" in str(report)


def test_kink_fails_although_jax_grad_at_one_is_zero():
    f = lambda r, A: jnp.maximum(r - 1.0, 1.0 - r)  # |r - 1|; jax splits the tie: gradient 0 at r = 1  # noqa: E731
    assert float(jax.grad(f)(1.0, 0.0)) == 0.0
    assert not check_drift(f, **FAST).conditions["zero_grad_at_identity"].passed


def test_kink_hidden_from_autodiff_fails():
    f = lambda r, A: jax.lax.stop_gradient(jnp.abs(r - 1.0)) * (1 + A**2)  # noqa: E731
    c = check_drift(f, **FAST).conditions["zero_grad_at_identity"]
    assert not c.passed and "hidden" in c.detail


def test_linear_term_fails_nonnegativity_and_derivative():
    report = check_drift(lambda r, A: (r - 1.0) * A, **FAST)
    assert set(report.failed) == {"nonnegative", "zero_grad_at_identity"}
    assert report.conditions["nonnegative"].worst < -1


def test_nonzero_offset_fails_identity():
    report = check_drift(lambda r, A: (r - 1.0) ** 2 + 1e-6, **FAST)
    assert report.failed == ["zero_at_identity"]
    c = report.conditions["zero_at_identity"]
    assert c.where[0] == 1.0 and np.isclose(c.worst, 1e-6)


def test_offset_only_at_some_advantages_fails():
    report = check_drift(lambda r, A: (r - 1.0) ** 2 + 1e-4 * jax.nn.relu(A - 4.9), **FAST)
    assert report.failed == ["zero_at_identity"]
    assert report.conditions["zero_at_identity"].where[1] > 4.9


def test_negativity_only_far_from_identity():
    # negative only for log r > 1.4 (r > 4.05) and A > 0: invisible near r = 1
    f = lambda r, A: (r - 1.0) ** 2 * A**2 * 1e-3 - jax.nn.relu(jnp.log(r) - 1.4) * A  # noqa: E731
    report = check_drift(f, **FAST)
    assert report.failed == ["nonnegative"]
    r_where, A_where = report.conditions["nonnegative"].where
    assert np.log(r_where) > 1.4 and A_where > 0


def test_narrow_negative_pocket_found_by_local_search():
    # a negative core (width 0.002 x 0.003) far narrower than the grid spacing; only its shoulder shows
    def f(r, A):
        u = jnp.log(r)
        shoulder = 0.6 * jnp.exp(-((u - 0.9) ** 2 / (2 * 0.05**2) + (A + 3.1) ** 2 / (2 * 0.2**2)))
        core = 0.7 * jnp.exp(-((u - 0.9) ** 2 / (2 * 0.002**2) + (A + 3.1) ** 2 / (2 * 0.003**2)))
        return 0.05 * (r - 1.0) ** 2 * (1.0 + A**2) - shoulder - core

    report = check_drift(f, **FAST)
    c = report.conditions["nonnegative"]
    assert not c.passed and c.worst < -0.1
    assert abs(np.log(c.where[0]) - 0.9) < 0.01 and abs(c.where[1] + 3.1) < 0.01


def test_negative_pocket_near_identity():
    report = check_drift(lambda r, A: (r - 1.0) ** 2 - 1e-3 * jnp.exp(-(jnp.log(r) - 0.02) ** 2 / 1e-5), **FAST)
    assert report.failed == ["nonnegative"]


def test_piecewise_drift_with_one_bad_branch():
    f = lambda r, A: jnp.where(A >= 0, (r - 1.0) ** 2 * A, jax.nn.relu(r - 1.0) * -A)  # noqa: E731
    report = check_drift(f, **FAST)
    assert report.failed == ["zero_grad_at_identity"]
    assert report.conditions["zero_grad_at_identity"].where[1] < 0


def test_nan_and_inf_are_never_passed():
    nan_far = check_drift(lambda r, A: jnp.where(r > 4.0, jnp.nan, (r - 1.0) ** 2), **FAST)
    assert not nan_far.valid and "NaN" in nan_far.conditions["nonnegative"].detail
    inf_at_one = check_drift(lambda r, A: (r - 1.0) ** 2 / (r - 1.0) ** 2 * 0.0 + 0.0 * A, **FAST)
    assert not inf_at_one.valid


def test_function_that_raises_is_invalid_with_message():
    def boom(r, A):
        raise ValueError("bad drift")

    report = check_drift(boom, **FAST)
    assert not report.valid and "bad drift" in report.error and "bad drift" in str(report)


def test_non_traceable_function_is_a_type_error():
    import math

    with pytest.raises(TypeError, match="traceable"):
        check_drift(lambda r, A: math.log(r) ** 2, **FAST)
    with pytest.raises(TypeError, match="traceable"):
        check_drift(lambda r, A: (r - 1) ** 2 if r > 1 else 0.0, **FAST)


def test_temporal_drift_checked_at_sampled_t():
    bad_late = from_callable(lambda r, A, t: (r - 1.0) ** 2 + jax.nn.relu(t - 0.9) * (r - 1.0))
    report = check_drift(bad_late, **FAST)
    assert bad_late.temporal and not report.valid
    assert report.conditions["zero_grad_at_identity"].where[2] > 0.9
    ok = from_callable(lambda r, A, t: t * (r - 1.0) ** 2 * A**2)
    assert check_drift(ok, **FAST).valid


def test_does_not_flip_global_x64():
    check_drift(ppo(), **FAST)
    assert jnp.ones(1).dtype == jnp.float32


def test_expression_string_and_name_accepted():
    assert check_drift("Max(0, (r - 1)**2 * A**2)", **FAST).valid
    assert check_drift("dpo", **FAST).valid


def test_population_per_member_validity():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    pop = jax.vmap(lambda k: lpo_init(k, init_scale=1.0))(keys)
    rep = check_drift_population(lpo(), pop, **FAST)
    assert rep.valid.shape == (3,) and rep.valid.all(), str(rep)
    # a population member of a drift family whose params can break it
    def fn(params, r, A):
        return (r - 1.0) ** 2 + params["c"] * (r - 1.0) * A
    d = Drift("lin", fn, {"c": jnp.asarray(0.0)})
    rep = check_drift_population(d, {"c": jnp.array([0.0, 0.5, 0.0, -1e-3])}, **FAST)
    assert list(rep.valid) == [True, False, True, False]
    assert "zero_grad_at_identity" in rep[1].failed


def test_assert_valid_drift_message():
    assert_valid_drift(dpo(), **FAST)
    with pytest.raises(AssertionError, match=r"zero_grad_at_identity failed: worst .* at \(r=1"):
        assert_valid_drift(lambda r, A: jnp.abs(r - 1.0), **FAST)


def _constructed(params, r, A):
    # ReLU(c |r-1|^p g(A)) with p even and g one of A^2, |A|, exp(A) (weights w): valid for any c > 0.
    g = params["w"][0] * A**2 + params["w"][1] * jnp.abs(A) + params["w"][2] * jnp.exp(A)
    return jax.nn.relu(params["c"] * jnp.abs(r - 1.0) ** params["p"] * g)


CONSTRUCTED = Drift("constructed", _constructed, {"c": jnp.asarray(1.0), "p": jnp.asarray(2.0), "w": jnp.ones(3)})


@settings(max_examples=10, deadline=None)
@given(c=st.floats(0.01, 10.0), k=st.integers(0, 2), p=st.sampled_from([2.0, 4.0]))
def test_valid_by_construction_always_passes(c, k, p):
    params = {"c": jnp.asarray(c), "p": jnp.asarray(p), "w": jnp.eye(3)[k]}
    assert check_drift(CONSTRUCTED.with_params(params), **FAST).valid  # one compiled check for all examples


@settings(max_examples=30, deadline=None)
@given(ratio_advantage_pairs())
def test_ratio_advantage_strategy_and_dpo_nonnegative(pair):
    r, A = pair
    assert r > 0 and -5 <= A <= 5
    assert float(dpo()(r, A)) >= 0.0


@settings(max_examples=300, deadline=None)
@given(ratio_advantage_pairs())
def test_documented_pattern_agrees_with_assert_valid_drift(pair):
    # valid (assert_valid_drift passes it); it read -1e-9 at r = exp(-1e-8), below float32's resolution
    r, A = pair
    assert r == float(np.float32(r)) and (r == 1.0 or abs(math.log(r)) >= 0.9e-6)
    assert float(0.5 * (r - 1) ** 2 * abs(A) + 0.1 * (r - 1 - jnp.log(r))) >= 0.0


def test_documented_pattern_drift_is_valid():
    assert_valid_drift(lambda r, A: 0.5 * (r - 1) ** 2 * jnp.abs(A) + 0.1 * (r - 1 - jnp.log(r)))


def test_unknown_name_keeps_did_you_mean_hint():
    with pytest.raises(ValueError, match="Did you mean 'dpo'") as err:
        check_drift("dpoo", **FAST)
    assert "allowed: r, A" not in str(err.value)  # not the parser's list of names
    with pytest.raises(ValueError, match="empty expression"):
        check_drift("  ", **FAST)
    assert check_drift("0", **FAST).valid  # a bare word that parses is still an expression


@pytest.mark.parametrize("options, message", [
    (dict(tol=-1), "tol must be a finite number >= 0, got -1"),
    (dict(tol="x"), "tol must be a finite number >= 0"),
    (dict(log_r_range=(-np.inf, np.inf)), "log_r_range must be finite numbers"),
    (dict(log_r_range=(-800.0, 1.0)), "overflows float64"),
    (dict(A_range=(1.0,)), r"A_range must be a pair of numbers \(low, high\)"),
    (dict(grid=10), r"grid must be a pair of integers \(n_log_r, n_A\), got 10"),
    (dict(n_identity=-5), "n_identity must be an integer >= 2, got -5"),
    (dict(n_identity=2.5), "n_identity must be an integer >= 2, got 2.5"),
    (dict(search_iters=-1), "search_iters must be an integer >= 0"),
])
def test_check_options_are_validated_by_name(options, message):
    from drifts.symbolic import check_drift_symbolic

    with pytest.raises(ValueError, match=message):
        check_drift(dpo(), **options)
    with pytest.raises(ValueError, match=message):  # also when the proof needs no numeric search
        check_drift_symbolic("(r - 1)**2", **options)
    with pytest.raises(TypeError, match="unknown check option 'bogus'; check_drift takes log_r_range"):
        check_drift_symbolic("(r - 1)**2", bogus=1)


def test_a_changed_global_is_seen_by_the_next_check():
    # a cached compiled check would keep the value the function was traced with and repeat "valid"
    state = {"k": 0.0}

    def drift(r, A):
        return (r - 1) ** 2 + state["k"] * (r - 1)

    assert check_drift(drift).valid
    state["k"] = 0.5
    assert not check_drift(drift).valid


@pytest.mark.parametrize("smooth", ["1e8*(r-1)**2", "(r-1)**2*exp(A**2)"])
def test_large_smooth_drifts_pass_and_a_kink_under_a_large_term_fails(smooth):
    assert check_drift(smooth).valid  # slope f'' h at the smallest step h is not a kink
    sg = jax.lax.stop_gradient
    # 1e7 (r - 1)^4 is huge at |log r| = 0.5 but nothing beside r = 1: the kink of slope 25 must show
    report = check_drift(lambda r, A: 1e7 * (r - 1) ** 4 * A**2 + jnp.abs(sg(r) - 1) * A**2)
    assert not report.conditions["zero_grad_at_identity"].passed
