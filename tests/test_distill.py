"""distill: closed forms recovered, every candidate checked, outputs, bad input.

Budgets are small (2-6 s per fit, at most 2-3 front members checked) so the file runs in about a
minute on two shared cores; benchmarks/distill.py runs the full-budget measurements.
"""

import json
import math
import mmap
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

from distill import distill
from distill._parse import parse_model_string
from distill.backends.pysr import julia_available
from distill.construct import A, make_valid, project, r
from drifts import dpo, from_callable, get_drift, ppo

# name -> (jax-traceable f(r, A)); different shapes: DPO itself, PPO's clip, a smooth even form,
# an asymmetric one with different r-shapes per advantage sign.
CLOSED_FORMS = {
    "dpo": dpo(),
    "ppo": ppo(),
    "square": from_callable(lambda r, A: (r - 1) ** 2 * A**2, name="square"),
    "asymmetric": from_callable(
        lambda r, A: jnp.where(A >= 0, jnp.log(r) ** 2 * A, 0.5 * (r - 1) ** 2 * A**2), name="asymmetric"),
}
# The linear backend stops when its terms are done; the budget is only a cap, kept far above what a
# loaded machine needs so that a slow run is never cut short (a 3 s cap once was, in session 3).
FAST = {"time_budget": 30, "n_samples": 2000, "max_front": 2}


@pytest.fixture(scope="module")
def ppo_result():
    return distill(ppo(), backend="linear", seed=0, **FAST)


@pytest.mark.parametrize("name", list(CLOSED_FORMS))
def test_linear_backend_recovers_closed_forms(name):
    res = distill(CLOSED_FORMS[name], backend="linear", seed=0, **FAST)
    assert res.best is not None and res.best.valid
    assert res.best.fidelity >= 0.999, res.summary()


# A seeded, single-threaded search stopped after a number of generations returns the same front on
# any machine; stopped by a 6 s budget it did not (R^2 0.78 instead of 1.0 once, in a fresh clone).
# 20 generations take ~5 s here; the 60 s budget is only a cap.
REPRODUCIBLE_OPERON = {"generations": 20, "n_threads": 1}


def test_pyoperon_backend_distils_dpo():
    pytest.importorskip("pyoperon")
    res = distill(dpo(), backend="pyoperon", time_budget=60, seed=0, n_samples=2000, max_front=2,
                  backend_options=REPRODUCIBLE_OPERON)
    assert res.best is not None and res.best.valid
    assert res.best.fidelity >= 0.99, res.summary()
    assert res.best.backend == "pyoperon"


def test_pyoperon_derivative_target_is_integrated_into_a_valid_drift():
    pytest.importorskip("pyoperon")
    res = distill(CLOSED_FORMS["square"], backend="pyoperon", target="derivative", time_budget=60,
                  n_samples=2000, max_front=2, backend_options=REPRODUCIBLE_OPERON)
    # Full-suite runs once gave R^2 0.69-0.97 where a lone run gives 1.0: the sandbox that integrates
    # each slope capped the child's whole address space at 3 GiB, so after the suite's JAX work had
    # mapped more, integrations failed and the best slopes were dropped (pinned by the sandbox test).
    assert res.best is not None and res.best.valid and res.best.fidelity >= 0.99, res.summary()


def test_every_front_candidate_is_checked(ppo_result):
    assert len(ppo_result.front) >= 2
    for c in ppo_result.front:
        assert c.report.numeric is not None and c.report.symbolic is not None
        if c.valid:
            assert c.report.numeric.valid and c.report.symbolic.valid is not False
            assert c.report.proved
    complexities = [c.complexity for c in ppo_result.front]
    assert complexities == sorted(complexities)


def test_best_expression_is_sympy_in_r_and_A_and_matches_its_drift(ppo_result):
    best = ppo_result.best
    assert isinstance(best.expression, sp.Expr)
    assert best.expression.free_symbols <= {r, A}
    rr, aa = np.exp(np.linspace(-1, 1, 7)), np.linspace(-3, 3, 7)
    want = [float(best.expression.subs({r: x, A: y})) for x, y in zip(rr, aa, strict=True)]
    np.testing.assert_allclose(np.asarray(best.drift(rr, aa)), want, rtol=1e-5, atol=1e-6)


def test_outputs_string_latex_save_json_plot(ppo_result, tmp_path):
    assert "r" in ppo_result.to_string() and ppo_result.to_latex().startswith("f(r, A) =")
    path = ppo_result.save(tmp_path / "d.drift")
    loaded = get_drift(path)
    rr, aa = jnp.linspace(0.5, 2.0, 9), jnp.linspace(-3, 3, 9)
    np.testing.assert_allclose(np.asarray(loaded(rr, aa)), np.asarray(ppo_result.best.drift(rr, aa)), atol=1e-6)
    data = json.loads(ppo_result.save_json(tmp_path / "r.json").read_text())
    assert data["best"]["valid"] and data["front"]
    fig = ppo_result.plot(resolution=41)
    fig.savefig(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_validity_projection_is_exact():
    # Arbitrary smooth fits, offsets and slopes at r = 1 included: the projection zeroes both exactly.
    for g in [sp.Rational(3, 10) + A * (r - 1) + sp.tanh(2 * A * sp.log(r) + A),
              sp.Rational(-1, 7) * A**2 * (r - 1) + (r - 1) ** 2 * sp.tanh(A),
              sp.exp(r - 1) * A]:
        h = project(g)
        assert sp.simplify(h.subs(r, 1)) == 0
        assert sp.simplify(sp.diff(h, r).subs(r, 1)) == 0
        f = make_valid(g)
        assert isinstance(f, sp.Max) and 0 in f.args


def test_recorded_samples_and_derivative_target():
    rng = np.random.default_rng(1)
    pairs = (np.exp(rng.normal(0, 0.3, 1500)), rng.normal(0, 1.0, 1500))
    res = distill(CLOSED_FORMS["square"], backend="linear", samples=pairs, target="derivative",
                  split_advantage=False, time_budget=30, max_front=2)
    assert res.best.valid and res.best.fidelity >= 0.999
    assert res.settings["recorded_samples"] and res.settings["target"] == "derivative"


def test_kinks_close_to_identity_are_fitted_from_narrow_samples():
    # Training ratios sit within ~1e-3 of 1 (a learned drift's kinks too): the linear library must
    # place hinges there, not only on its fixed grid (0.05-0.5).
    source = from_callable(lambda r, A: 2.0 * jnp.maximum(0.0, r - 1.0005) + 3.0 * jnp.maximum(0.0, 0.9995 - r),
                           name="near_kinks")
    rng = np.random.default_rng(2)
    pairs = (np.exp(rng.normal(0, 1e-3, 2000)), rng.normal(0, 1.0, 2000))
    # The backend stops when its terms are done; a 3 s budget ran out first on a loaded machine.
    res = distill(source, backend="linear", samples=pairs, split_advantage=False, time_budget=30, max_front=2)
    assert res.best.valid and res.best.fidelity >= 0.999


def test_record_training_pairs_are_the_ratios_training_sees():
    from distill import record_training_pairs

    r, A = record_training_pairs("ppo", "CartPole-v1", n_pairs=300, total_timesteps=1024, seed=3)
    assert r.shape == A.shape == (300,)
    assert np.all(r != 1.0) and np.all(np.abs(np.log(r)) < 1.0)  # each update's first minibatch dropped
    assert np.all(np.isfinite(A)) and 0.3 < A.std() < 3.0       # per-minibatch normalised advantages
    again = record_training_pairs("ppo", "CartPole-v1", n_pairs=300, total_timesteps=1024, seed=3)
    np.testing.assert_array_equal(r, again[0])
    with pytest.raises(ValueError, match="n_pairs"):
        record_training_pairs("ppo", "CartPole-v1", n_pairs=5)


def _allocate(text: str) -> int:
    return len(bytearray(int(text)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the address-space limit is read from /proc")
def test_sandbox_limits_new_memory_not_what_the_parent_already_mapped():
    # A process that has run JAX maps gigabytes of address space; the child inherits it. The limit is
    # on what the job adds: 64 MiB fits in 256 MiB after a 4 GiB inherited reservation, 512 MiB does not.
    from distill._sandbox import run_sandboxed

    reserved = mmap.mmap(-1, 4 * 2**30)  # address space only: never touched, so no memory is used
    try:
        assert run_sandboxed(_allocate, str(64 * 2**20), memory=256 * 2**20) == ("ok", 64 * 2**20)
        status, reason = run_sandboxed(_allocate, str(512 * 2**20), memory=256 * 2**20)
        assert status == "error" and "MemoryError" in reason
    finally:
        reserved.close()


def test_safe_parser_rejects_code():
    v = {"u": r - 1, "a": A}
    e = parse_model_string("((-0.5) + (2.0 * (u ^ 2))) * tanh(a)", v)
    assert e.free_symbols == {r, A}
    assert float(e.subs({r: 3, A: 1})) == pytest.approx(7.5 * math.tanh(1))
    for bad in ["__import__('os').system('x')", "u.__class__", "open('f')", "[u]", "lambda: 1", "z + 1", "'s'"]:
        with pytest.raises(ValueError):
            parse_model_string(bad, v)


@pytest.mark.parametrize("budget", [0, -1, math.nan, "10"])
def test_non_positive_budget_is_an_error(budget):
    with pytest.raises(ValueError, match="time_budget"):
        distill(dpo(), backend="linear", time_budget=budget)


def test_unknown_backend_and_target():
    with pytest.raises(ValueError, match="unknown backend"):
        distill(dpo(), backend="operon", time_budget=1)
    with pytest.raises(ValueError, match="target"):
        distill(dpo(), backend="linear", time_budget=1, target="value")


@pytest.mark.parametrize("kw, error, message", [
    (dict(r_range=(0.5, math.inf)), ValueError, "r_range must be finite"),
    (dict(A_range=(1, 2, 3)), ValueError, r"A_range must be a pair \(low, high\) of numbers"),
    (dict(seed=-1), ValueError, r"seed must be an integer in \[0, 2\*\*31\), got -1"),
    (dict(seed=1.5), ValueError, "seed must be an integer"),
    (dict(samples={"r": [1.0, 2.0]}), ValueError, r"samples must be a pair \(r, A\) of arrays .*got dict"),
    (dict(backend_options="x"), TypeError, "backend_options must be a dict"),
    (dict(holdout="0.25"), ValueError, "holdout must be a number in"),
    (dict(tolerance="0.01"), ValueError, "tolerance must be a number in"),
    (dict(n_samples=20), ValueError, "n_samples must be an integer >= 100"),
    (dict(max_length="30"), ValueError, "max_length must be an integer >= 3"),
])
def test_bad_arguments_are_named(kw, error, message):
    with pytest.raises(error, match=message):
        distill(dpo(), backend="linear", time_budget=1, **kw)


def test_plot_grids_and_evaluate_episodes_are_checked_before_any_work(ppo_result):
    from drifts import plot_drift

    with pytest.raises(ValueError, match="resolution must be an integer >= 2"):
        ppo_result.plot(resolution=0)
    with pytest.raises(ValueError, match="log_r_range must be finite with low < high"):
        plot_drift("dpo", log_r_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="NaN or inf slope at every point of the grid"):
        plot_drift(lambda r, A: r * A * jnp.nan, resolution=8)
    with pytest.raises(ValueError, match="n_episodes must be a positive integer, got 0"):
        ppo_result.evaluate("CartPole-v1", n_episodes=0, total_timesteps=10**9)  # refused before training


def test_non_traceable_drift_is_a_type_error():
    def bad(r, A):
        return float(r[0]) * A  # Python float of a tracer

    with pytest.raises(TypeError, match="JAX-traceable"):
        distill(bad, backend="linear", time_budget=1)


def test_pysr_without_julia_says_how_to_install():
    if julia_available():
        pytest.skip("a Julia runtime is present; the error path cannot be exercised")
    with pytest.raises(ValueError, match="(?i)julia.*pyoperon|pyoperon.*julia"):
        distill(dpo(), backend="pysr", time_budget=1)


@pytest.mark.skipif(not julia_available(), reason="PySR needs a Julia runtime (no `julia` on PATH here); "
                    "install Julia and `pip install pysr` to run this test")
def test_pysr_backend_distils_square():
    pytest.importorskip("pysr")
    res = distill(CLOSED_FORMS["square"], backend="pysr", time_budget=20, max_front=2)
    assert res.best.valid and res.best.fidelity >= 0.99


def test_cli_writes_json_drift_and_png(tmp_path, capsys):
    from distill.cli import main

    out = tmp_path / "out"
    code = main(["ppo", "--budget", "2", "--backend", "linear", "--out", str(out), "--n-samples", "1500",
                 "--max-front", "2"])
    assert code == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    assert {"result.json", "distilled.drift", "distill.png"} <= {p.name for p in out.iterdir()}
    assert get_drift(out / "distilled.drift").family == "expression"
    before = (out / "distilled.drift").read_bytes()
    assert main(["dpo", "--budget", "2", "--backend", "linear", "--out", str(out)]) == 2  # keeps the first run
    assert "already holds results of an earlier run" in capsys.readouterr().err
    assert (out / "distilled.drift").read_bytes() == before


def test_cli_distils_from_recorded_training_pairs(tmp_path):
    from distill.cli import main

    out = tmp_path / "rec"
    assert main(["dpo", "--budget", "2", "--backend", "linear", "--out", str(out), "--n-samples", "300",
                 "--max-front", "2", "--record-env", "CartPole-v1", "--record-steps", "1024"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["settings"]["recorded_samples"]


def test_cli_checks_its_arguments_before_recording_or_searching(tmp_path, capsys):
    from distill.cli import main

    (tmp_path / "afile").write_text("")
    cases = [(["--out", str(tmp_path / "afile")], "existing file, not a folder"),
             (["--budget", "-1"], "time_budget must be a positive number"),
             (["--backend", "pysr"], "Julia"), (["--backend", "linaer"], "Did you mean 'linear'")]
    for extra, message in cases:
        # --record-steps 10**9 would take hours: each error must come before any training starts
        argv = ["dpo", "--record-env", "CartPole-v1", "--record-steps", str(10**9), "--out", str(tmp_path / "o")]
        assert main(argv + extra) == 2
        assert message in capsys.readouterr().err
    # a drift typo too: named at once, before the recorded run, with every command's prefix
    assert main(["dpoo", "--record-env", "CartPole-v1", "--record-steps", str(10**9), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("mirrorlearn distill: error: unknown drift 'dpoo'")
    assert main(["dpo", "--record-env", "CartPole-v1", "--record-steps", "100", "--out", str(tmp_path / "o")]) == 2
    assert "--record-steps 100: total_timesteps = 100 is less than one batch" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a failed run leaves no empty output folder behind


def test_a_drift_that_is_zero_on_every_sample_is_an_error_not_an_empty_result():
    pairs = (np.linspace(0.9, 1.1, 200), np.linspace(-2, 2, 200))  # all inside PPO's clip region
    with pytest.raises(ValueError, match="0 at every sample"):
        distill(ppo(), backend="linear", samples=pairs, time_budget=1)


def _agents_ready() -> bool:
    try:
        from distill.result import _mirror_agent_class

        _mirror_agent_class()
        return True
    except ImportError:
        return False


@pytest.mark.skipif(not _agents_ready(), reason="agents.MirrorAgent is not available yet")
def test_evaluate_trains_distilled_and_source_side_by_side(ppo_result):
    out = ppo_result.evaluate("CartPole-v1", total_timesteps=2048, n_seeds=1, n_episodes=2)
    assert set(out) >= {"distilled", "source", "relative_gap"}
    assert np.isfinite(out["distilled"]["mean_return"]) and np.isfinite(out["source"]["mean_return"])


def test_displayed_forms_stay_valid_drifts():
    # Users copy what they see. Rounded naively, a hinge just below 1 moves onto it (a kink at r = 1), and
    # rounding constants that cancel exactly in the slope at r = 1 leaves a small slope there.
    from distill.result import _short
    from drifts import check_drift
    from drifts.symbolic import parse_expression

    hinge = parse_expression("Max(0, 891139/1000000*A*Max(0, 499996761/500000000 - r) + 381/500*Max(0, 1 - r)**2)")
    cancel = make_valid(sp.Rational(8511969, 10**12) * sp.tanh(sp.Rational(10341262, 100) * A * (r - 1))
                        + sp.Rational(-3, 7) * A * (r - 1) ** 3)
    for expr in (hinge, cancel):
        shown = _short(expr, 3)
        assert len(shown.atoms(sp.Float)) >= 1
        report = check_drift(str(shown))
        assert report.valid, (str(shown), report.summary())
    assert "0.9999935" in str(_short(hinge, 3))  # the knot keeps 3 digits of its distance to 1


def test_t_is_checked_recorded_and_temporal_source_plotted_at_it():
    with pytest.raises(ValueError, match="takes no training progress"):
        distill(dpo(), backend="linear", time_budget=5, t=0.5)
    from drifts import lpo

    temporal = lpo(temporal=True, init_scale=3.0, seed=1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        distill(temporal, backend="linear", time_budget=5, t=2.0)
    res = distill(temporal, backend="linear", time_budget=30, t=1.0, n_samples=600, max_front=1)
    assert res.settings["t"] == 1.0
    from distill.plotting import objective_slope

    log_r, a = np.linspace(-0.5, 0.5, 5), np.linspace(-2, 2, 5)
    at_1 = objective_slope(temporal, log_r, a, t=1.0)
    at_0 = objective_slope(temporal, log_r, a, t=0.0)
    assert not np.allclose(at_1, at_0)  # the picture would differ if t were dropped


def test_save_json_creates_folders_atomically(ppo_result, tmp_path):
    path = ppo_result.save_json(tmp_path / "new" / "deeper" / "r.json")
    assert json.loads(path.read_text())["best"]["valid"]
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left behind


def test_record_training_pairs_rejects_a_non_traceable_drift_up_front():
    from distill import record_training_pairs

    with pytest.raises(TypeError, match="JAX-traceable"):
        record_training_pairs(lambda r, A: np.abs(r - 1) ** 2, "CartPole-v1", 100, total_timesteps=2048)


def test_integration_of_fitted_slopes_counts_against_the_time_budget(monkeypatch):
    # A backend without native slopes must have each fitted slope integrated symbolically (sandboxed,
    # up to 10 s each): that must fit in time_budget, and say so when nothing could be integrated.
    import time as _time

    from distill import construct, core

    class SlopeOnly:
        name, native_derivative = "slope-only", False

        def fit(self, task):
            return [A * (r - 1) * k for k in range(1, 7)]

    def slow_integration(p, timeout=10.0):
        _time.sleep(timeout)
        return None

    monkeypatch.setattr(construct, "integrate_slope", slow_integration)
    start = _time.perf_counter()
    with pytest.warns(UserWarning, match="could be integrated"):
        res = core.distill(CLOSED_FORMS["square"], backend=SlopeOnly(), target="derivative", time_budget=4,
                           n_samples=400, max_front=1)
    assert _time.perf_counter() - start < 4 + 3  # the budget, plus checks; not 6 x 10 s per branch
    assert res.front  # the zero drift at least: an honest, empty-handed result


def test_symbolic_check_of_a_candidate_is_not_held_to_typed_input_limits():
    # exact rationals from sympy's arithmetic print longer than the 60-digit literals a person may type
    import sympy as sp

    from distill.checks import symbolic_verdict
    from drifts.symbolic import SYMBOLS

    r, A = SYMBOLS["r"], SYMBOLS["A"]
    verdict = symbolic_verdict(sp.Max(0, (r - 1) ** 2 * A**2 * sp.Rational(10**70 + 1, 10**70)))
    assert verdict.valid is True


def test_cli_set_shapes_the_recorded_run_and_needs_one(tmp_path, capsys):
    from distill.cli import main

    with pytest.raises(SystemExit):
        main(["dpo", "--set", "num_envs=2", "--out", str(tmp_path / "o")])
    assert "it needs --record-env" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dpo", "--record-steps", "1024", "--out", str(tmp_path / "o")])  # would be silently ignored
    assert "--record-steps sets the recorded run's budget: it needs --record-env" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dpo", "--record-env", "CartPole-v1", "--record-env", "Breakout-MinAtar", "--record-steps", "512",
              "--record-steps", "512", "--record-steps", "512", "--out", str(tmp_path / "o")])
    assert "--record-steps is given 3 times for 2 --record-env environments" in capsys.readouterr().err
    # Pairs pooled from two environments, a budget each. MinAtar's preset batch (64 x 128) is more than
    # this budget: --set shrinks it (for both runs)
    assert main(["dpo", "--record-env", "CartPole-v1", "--record-env", "Breakout-MinAtar", "--record-steps", "1024",
                 "--record-steps", "512", "--set", "num_envs=4", "num_steps=64", "num_minibatches=2", "--backend",
                 "linear", "--budget", "2", "--n-samples", "301", "--max-front", "2", "--out", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "result.json").read_text())["settings"]["recorded_samples"]


def test_pooled_recording_takes_an_equal_share_from_each_environment(monkeypatch):
    import distill
    from distill.cli import record_pooled_pairs

    calls = []

    def fake(drift, env, n_pairs, total_timesteps, seed, **overrides):
        calls.append((env, n_pairs, total_timesteps, overrides))
        return np.full(n_pairs, len(calls), float), np.full(n_pairs, -len(calls), float)

    monkeypatch.setattr(distill, "record_training_pairs", fake)
    r, A = record_pooled_pairs("lpo", ["a", "b"], [100, 200], 301, 0, {"num_envs": 4})
    assert calls == [("a", 151, 100, {"num_envs": 4}), ("b", 150, 200, {"num_envs": 4})]
    assert r.tolist() == [1.0] * 151 + [2.0] * 150 and A.tolist() == [-1.0] * 151 + [-2.0] * 150
