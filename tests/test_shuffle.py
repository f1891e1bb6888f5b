"""Minibatch shuffling (agents.shuffle): a bijection for every key and size, and well mixed."""

import jax
import numpy as np
import pytest

from agents.shuffle import permutation


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 100, 384, 512, 1000, 8192])
def test_every_key_gives_a_permutation_of_range_n(n):
    perms = jax.jit(jax.vmap(lambda k: permutation(k, n)))(jax.random.split(jax.random.PRNGKey(n), 16))
    for p in np.asarray(perms):
        assert p.dtype == np.int32
        np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_same_key_same_permutation_and_other_keys_differ():
    k = jax.random.PRNGKey(0)
    np.testing.assert_array_equal(permutation(k, 512), permutation(k, 512))
    perms = np.asarray(jax.vmap(lambda k: permutation(k, 512))(jax.random.split(k, 64)))
    assert len({p.tobytes() for p in perms}) == 64


@pytest.mark.parametrize("n", [512, 384])
def test_positions_and_minibatch_pairs_are_uniform(n):
    """What PPO needs from a shuffle: each sample equally likely in every minibatch, pairs mixed."""
    n_keys, n_minibatches = 4000, 4
    perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, n)))(jax.random.split(jax.random.PRNGKey(1), n_keys)))
    minibatch_of = np.empty_like(perms)
    minibatch_of[np.arange(n_keys)[:, None], perms] = np.arange(n)[None, :] * n_minibatches // n
    # Each sample's minibatch: counts per (sample, minibatch) follow Binomial(n_keys, 1/4).
    counts = np.stack([(minibatch_of == m).sum(0) for m in range(n_minibatches)])
    expected = n_keys / n_minibatches
    sd = np.sqrt(n_keys * 0.25 * 0.75)
    assert np.abs(counts - expected).max() < 5 * sd
    chi2 = (((counts - expected) ** 2) / expected).sum()
    dof = (n_minibatches - 1) * n
    assert abs(chi2 - dof) < 6 * np.sqrt(2 * dof)
    # Neighbouring samples (consecutive steps of one env) share a minibatch at the uniform rate.
    same = (minibatch_of[:, :-1] == minibatch_of[:, 1:]).mean()
    uniform = (n / n_minibatches - 1) / (n - 1)
    assert abs(same - uniform) < 0.01


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="n >= 1"):
        permutation(jax.random.PRNGKey(0), 0)
