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
