from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from drifts import Drift, dpo, get_drift, lpo, lpo_zero, ppo
from mirrorlearn._archive import ArchiveError


def test_ppo_drift_recovers_clip_objective():
    r = jnp.linspace(0.5, 1.5, 11)
    for A in (-2.0, 0.0, 1.5):
        clip_obj = jnp.minimum(r * A, jnp.clip(r, 0.8, 1.2) * A)
        np.testing.assert_allclose(r * A - ppo(0.2)(r, A), clip_obj, atol=1e-6)


def test_dpo_matches_equation_9():
    r = jnp.array([0.5, 1.0, 2.0])
    A = 1.5
    x = (r - 1) * A
    np.testing.assert_allclose(dpo()(r, A), np.maximum(x - 2 * np.tanh(x / 2), 0), atol=1e-6)
    A = -1.5
    x = jnp.log(r) * A
    np.testing.assert_allclose(dpo()(r, A), np.maximum(x - 0.6 * np.tanh(x / 0.6), 0), atol=1e-6)


@pytest.mark.parametrize("make", [ppo, dpo, lpo, lpo_zero, lambda: lpo(temporal=True)])
def test_zero_at_identity(make):
    d = make()
    assert float(jnp.max(jnp.abs(d(jnp.ones(5), jnp.linspace(-3, 3, 5))))) == 0.0


def test_lpo_initialised_as_ppo():
    r = jnp.linspace(0.3, 3.0, 50)[:, None]
    A = jnp.linspace(-4, 4, 9)[None, :]
    np.testing.assert_allclose(lpo()(r, A), np.maximum(ppo()(r, A) - 1e-6, 0), atol=1e-6)


@pytest.mark.parametrize("make", [ppo, dpo, lambda: lpo(init_scale=1.0), lambda: lpo(temporal=True, init_scale=1.0)])
def test_drift_file_roundtrip(tmp_path, make):
    d = make()
    path = d.save(tmp_path / "d.drift")
    e = get_drift(path)
    assert e.name == d.name and e.temporal == d.temporal
    r, A = jnp.linspace(0.4, 2.5, 7), jnp.linspace(-3, 3, 7)
    np.testing.assert_array_equal(np.asarray(e(r, A)), np.asarray(d(r, A)))


def test_callable_drift_cannot_be_saved(tmp_path):
    d = get_drift(lambda r, A: (r - 1) ** 2)
    assert isinstance(d, Drift)
    with pytest.raises(ValueError, match="cannot be saved"):
        d.save(tmp_path / "x.drift")


def test_truncated_and_foreign_files_are_refused(tmp_path):
    path = dpo().save(tmp_path / "d.drift")
    data = path.read_bytes()
    bad = tmp_path / "bad.drift"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated"):
        get_drift(bad)
    with pytest.raises(ValueError, match="unknown drift"):
        get_drift("dpoo")


def test_get_drift_accepts_safe_expression_strings():
    d = get_drift("Max(0, (r - 1)**2 * Abs(A))")
    assert d.family == "expression"
    np.testing.assert_allclose(d(jnp.array([0.5, 1.0, 2.0]), -2.0), [0.5, 0.0, 2.0], atol=1e-6)
    with pytest.raises(ValueError):
        get_drift("__import__('os').system('true')")


# ---- drift files that break their family's rules, or are corrupted, are refused with ArchiveError -------
def _write_drift_file(path, spec, arrays, format_version=1):
    from mirrorlearn._archive import write_archive

    meta = {"kind": "mirrorlearn.drift", "format_version": format_version, "drift": spec}
    return write_archive(path, meta, arrays)


@pytest.mark.parametrize("spec,arrays,problem", [
    ({"family": "ppo", "kwargs": {}}, {"params/eps": np.float32(-0.5)}, "eps must be a finite number > 0"),
    ({"family": "dpo", "kwargs": {}}, {"params/alpha": np.float32(0.0), "params/beta": np.float32(0.6)},
     "alpha must be a finite number > 0"),
    ({"family": "lpo", "kwargs": {"hidden": 4, "eps": -0.3}},
     {"params/w1": np.zeros((8, 4), np.float32), "params/w2": np.zeros((4, 1), np.float32)}, "eps must be"),
    ({"family": "expression", "kwargs": {"expr": 5}}, {}, "must be the expression text"),
])
def test_drift_file_params_must_obey_family_rules(tmp_path, spec, arrays, problem):
    path = _write_drift_file(tmp_path / "bad.drift", spec, arrays)
    with pytest.raises(ArchiveError, match=problem) as err:
        get_drift(path)
    assert "bad.drift" in str(err.value)


@pytest.mark.parametrize("spec,arrays,problem", [
    ({"family": "ppo", "kwargs": {}}, {"params/eps": np.array("abc")}, "dtype <U3, expected real numbers"),
    ({"family": "ppo", "kwargs": {}}, {"params/eps": np.complex64(0.2 + 1j)}, "expected real numbers"),
    ({"family": "ppo", "kwargs": {}}, {"params/eps": np.float32(0.2), "params/eps/x": np.float32(0.1)}, "clash"),
    ({"family": "lpo", "kwargs": {"hidden": -3}}, {}, "hidden must be between 1 and"),
    ({"family": "lpo_zero", "kwargs": {"hidden": 10**9}}, {}, "hidden must be between 1 and"),  # no allocation
    ({"family": "lpo", "kwargs": {"hidden": 4, "temporal": "yes"}}, {}, "temporal must be True or False"),
    ({"family": ["ppo"], "kwargs": {}}, {}, "family must be a name"),
])
def test_corrupted_drift_files_give_archive_errors(tmp_path, spec, arrays, problem):
    path = _write_drift_file(tmp_path / "bad.drift", spec, arrays)
    with pytest.raises(ArchiveError, match=problem):
        get_drift(path)


def test_boolean_format_version_is_not_a_version(tmp_path):
    path = _write_drift_file(tmp_path / "v.drift", {"family": "ppo"}, {"params/eps": np.float32(0.2)},
                             format_version=True)
    with pytest.raises(ArchiveError, match="format_version True is not a version"):
        get_drift(path)


def test_constructors_validate_arguments():
    with pytest.raises(ValueError, match="lpo: eps must be a finite number > 0"):
        lpo(hidden=4, eps=-0.3)
    with pytest.raises(TypeError, match="hidden must be a whole number"):
        lpo(hidden="8")
    with pytest.raises(ValueError, match="hidden must be between"):
        lpo_zero(hidden=0)
    with pytest.raises(TypeError, match="ppo: eps must be a number"):
        ppo("0.2")
    with pytest.raises(ValueError, match="expected weights"):
        lpo(hidden=4, params={"w1": jnp.zeros((8, 4))})


def test_unflatten_tree_refuses_a_name_that_is_a_value_and_a_group():
    from mirrorlearn._archive import unflatten_tree

    assert unflatten_tree({"a/b": 1, "a/c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    for flat in ({"a": 1, "a/b": 2}, {"a/b": 2, "a": 1}):  # either order
        with pytest.raises(ArchiveError, match="'a' is both a value and a group"):
            unflatten_tree(flat)


def test_a_missing_drift_file_is_named_not_parsed_as_an_expression():
    from drifts import get_drift

    for path in ("runs/lpo/drift.drift", "/tmp/no-such-dir/nope.drift", "runs/lpo/drift", Path("nope")):
        with pytest.raises(FileNotFoundError, match="no such drift file"):
            get_drift(path)


def test_a_path_object_is_a_file_even_when_named_like_a_built_in_drift(tmp_path, monkeypatch):
    from agents.estimators import LPO
    from drifts import dpo, get_drift, lpo

    monkeypatch.chdir(tmp_path)
    lpo().save("dpo")
    assert get_drift(Path("dpo")).family == "lpo" and get_drift("dpo").family == "dpo"  # a string name wins
    assert LPO(drift_file=Path("dpo")).make_drift().family == "lpo"
    dpo().save(tmp_path / "closed.drift")
    with pytest.raises(ValueError, match=r"gives the 'dpo' drift, not a learned drift network.*MirrorAgent"):
        LPO(drift_file="dpo").make_drift()
    with pytest.raises(ValueError, match="not a learned drift network"):
        LPO(drift_file=tmp_path / "closed.drift").make_drift()


def test_save_refuses_parameters_that_would_not_load_back(tmp_path):
    import jax

    from drifts import dpo, lpo, ppo

    nan_net = lpo().with_params(jax.tree_util.tree_map(lambda x: x * np.nan, lpo().params))
    for drift, problem in ((ppo().with_params({"eps": 0.0}), "eps must be a finite number > 0"),
                           (dpo().with_params({"alpha": 2.0, "beta": 0.6, "gamma": 1.0}), "do not match the family"),
                           (nan_net, "contains NaN or inf")):
        with pytest.raises(ValueError, match=f"not saved to .*{problem}"):
            drift.save(tmp_path / "d.drift")
        assert not (tmp_path / "d.drift").exists()


def test_network_drift_seeds_and_scales_are_checked():
    from drifts import lpo
    from drifts.library import lpo_zero

    with pytest.raises(TypeError, match="lpo: seed must be a whole number, got 'a'"):
        lpo(seed="a")
    with pytest.raises(ValueError, match=r"lpo_zero: seed must be in \[0, 2\*\*32\), got -1"):
        lpo_zero(seed=-1)
    with pytest.raises(ValueError, match="init_scale must be a finite number >= 0, got nan"):
        lpo(init_scale=float("nan"))


def test_calling_a_drift_checks_its_inputs():
    from drifts import dpo, lpo

    with pytest.raises(TypeError, match="drift 'dpo': r and A must be numbers or arrays of numbers, got str"):
        dpo()("a", 1.0)
    with pytest.raises(ValueError, match="drift 'dpo' takes no training progress t"):
        dpo()(1.0, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"t is training progress and must be a number in \[0, 1\], got 2.0"):
        lpo(temporal=True)(1.0, 1.0, 2.0)
    assert float(lpo(temporal=True)(1.0, 1.0, 0.5)) == 0.0


def test_get_drift_takes_a_bare_number_and_surrounding_spaces():
    zero = get_drift("0")  # no drift at all: plain policy gradient, a valid baseline to compare against
    assert zero.family == "expression" and float(zero(1.5, 2.0)) == 0.0
    assert get_drift(" ppo ").name == "ppo"
    assert get_drift("t").temporal


def test_a_run_folder_is_not_a_drift_file_and_the_message_points_inside(tmp_path):
    lpo(hidden=4).save(tmp_path / "drift.drift")
    for spec in (tmp_path, str(tmp_path)):
        with pytest.raises(IsADirectoryError, match=r"is a folder, not a drift file; the drift a meta-train run "
                                                    r"learned is .*drift\.drift"):
            get_drift(spec)


def test_lpo_weights_from_the_papers_code_load_with_its_input_order_and_shift(tmp_path):
    import jax.numpy as jnp
    import numpy as np

    from drifts import Drift, check_drift, lpo
    from drifts.library import LPO_INPUT_ORDERS, PAPER_CODE_SHIFT

    rng = np.random.default_rng(0)
    w1_paper, w2 = rng.normal(size=(8, 16)), 0.3 * rng.normal(size=(16, 1))
    paper = lpo(hidden=16, params={"w1": jnp.asarray(w1_paper), "w2": jnp.asarray(w2)}, inputs="paper-code",
                shift=PAPER_CODE_SHIFT)
    w1_ours = np.zeros_like(w1_paper)
    w1_ours[list(LPO_INPUT_ORDERS["paper-code"])] = w1_paper  # paper row i reads our feature order[i]
    ours = lpo(hidden=16, params={"w1": jnp.asarray(w1_ours), "w2": jnp.asarray(w2)}, shift=PAPER_CODE_SHIFT)
    r, A = jnp.exp(jnp.linspace(-1, 1, 41))[:, None], jnp.linspace(-3, 3, 31)[None, :]
    np.testing.assert_allclose(np.asarray(paper(r, A)), np.asarray(ours(r, A)), rtol=1e-5, atol=1e-6)  # float32 sums
    assert float(jnp.max(jnp.abs(paper(r, A) - lpo(hidden=16, params=paper.params)(r, A)))) > 1e-3  # order matters
    paper.save(tmp_path / "paper.drift")
    loaded = Drift.load(tmp_path / "paper.drift")
    assert loaded.kwargs["inputs"] == "paper-code" and loaded.kwargs["shift"] == PAPER_CODE_SHIFT
    np.testing.assert_array_equal(np.asarray(loaded(r, A)), np.asarray(paper(r, A)))
    assert check_drift(loaded).valid
    assert "inputs" not in lpo().kwargs  # default drifts keep the kwargs earlier files have


@pytest.mark.parametrize("kw, match", [(dict(inputs="paper"), "inputs must be one of"), (dict(shift=0.0), "shift"),
                                       (dict(shift=0.5), "would hide")])
def test_lpo_input_options_are_checked(kw, match):
    from drifts import lpo

    with pytest.raises(ValueError, match=match):
        lpo(**kw)
