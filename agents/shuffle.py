"""Minibatch shuffling without a sort.

``jax.random.permutation`` sorts random keys, and XLA:CPU's sort calls its comparator once per
comparison: shuffling one 512-sample CartPole batch costs ~80 µs there (jax 0.10.2), a tenth of a
whole PPO update at one seed. :func:`permutation` is a keyed pseudorandom permutation instead: an
8-round Feistel network on the indices' bits (a bijection for any key, by construction), computed
as elementwise integer arithmetic in one fusion, with cycle walking for sizes that are not powers
of two. Shuffling needs every sample in exactly one minibatch and a fresh, unpredictable split per
epoch, not a permutation drawn uniformly from all ``n!``; the tests pin both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROUNDS = 8


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit avalanche hash (murmur3's finaliser): every input bit moves every output bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _feistel(x: jax.Array, round_keys: jax.Array, low_bits: int, high_bits: int) -> jax.Array:
    """A bijection of ``[0, 2**(low_bits + high_bits))``: each round XORs a keyed hash of one part into the other."""
    low_mask, high_mask = jnp.uint32((1 << low_bits) - 1), jnp.uint32((1 << high_bits) - 1)
    low, high = x & low_mask, x >> low_bits
    for i in range(ROUNDS):
        k = round_keys[i]
        if i % 2 == 0:
            high = high ^ (_mix(low ^ k) & high_mask)
        else:
            low = low ^ (_mix(high ^ k) & low_mask)
    return (high << low_bits) | low


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A pseudorandom permutation of ``range(n)`` (int32) determined by ``key``; jittable, vmappable."""
    if n < 1:
        raise ValueError(f"permutation needs n >= 1, got {n}")
    bits = max(2, (n - 1).bit_length())
    low_bits = bits // 2
    round_keys = jax.random.bits(key, (ROUNDS,), jnp.uint32)

    def walk(x):
        return _feistel(x, round_keys, low_bits, bits - low_bits)

    x = walk(jnp.arange(n, dtype=jnp.uint32))
    if n != 1 << bits:
        # Cycle walking: re-apply the bijection until every index is back inside [0, n). It
        # ends because each index's cycle contains itself; on average fewer than 2 extra passes.
        x = jax.lax.while_loop(
            lambda x: jnp.any(x >= n), lambda x: jnp.where(x >= n, walk(x), x), x
        )
    return x.astype(jnp.int32)
