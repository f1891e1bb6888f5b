"""(r, A) pairs as a real training run meets them, for distilling where an agent actually lives.

The default sampling design spreads pairs over ``r in [e^-1, e]``; a PPO-style update keeps almost
every ratio within a few percent of 1, where a drift's kinks and slopes decide how an agent learns.
:func:`record_training_pairs` trains an agent with the drift and records the ratio and the
normalised advantage of every sample the policy loss sees, through a host callback wrapped around
the drift (the training code itself is untouched, and the recorded run trains exactly as an
unrecorded one).
"""

from __future__ import annotations

import numbers

import jax
import numpy as np


def record_training_pairs(drift, env="CartPole-v1", n_pairs: int = 4000, *, seed: int = 0,
                          n_seeds: int = 1, skip_identity: bool = True, **agent_kwargs):
    """Train with ``drift`` on ``env`` and return ``n_pairs`` recorded ``(r, A)`` pairs (two arrays).

    Args:
      drift: a :class:`drifts.Drift` or anything ``drifts.get_drift`` accepts.
      env: the environment to train on (anything ``MirrorAgent.fit`` accepts).
      n_pairs: how many pairs to return, drawn uniformly from everything recorded.
      seed, n_seeds: the training run's seed and number of vmapped seeds.
      skip_identity: drop pairs with ``r == 1`` exactly (each update's first minibatch, before any
        step: the drift and its slope are 0 there by definition, so they carry no information).
      agent_kwargs: passed to :class:`agents.MirrorAgent` (``total_timesteps``, ``num_envs``, ...).

    Pass the result as ``distill(drift, samples=pairs)``.
    """
    from agents.estimators import MirrorAgent
    from distill.sampling import check_traceable
    from drifts import Drift, get_drift

    source = drift if isinstance(drift, Drift) else get_drift(drift)
    check_traceable(source, 0.0 if source.temporal else None)  # a clear error now, not one from inside training
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, numbers.Integral) or n_pairs < 20:
        raise ValueError(f"n_pairs must be an integer >= 20 (enough to fit and hold out), got {n_pairs!r}")
    agent = MirrorAgent(drift=None, seed=seed, n_seeds=n_seeds, check_drift=False, **agent_kwargs)
    expected = _expected_pairs(agent, env, n_seeds)
    keep = 1.0 if expected is None else min(1.0, 8.0 * n_pairs / expected)
    chunks: list[tuple[np.ndarray, np.ndarray]] = []

    def sink(r, A):
        r, A = np.asarray(r, np.float64).ravel(), np.asarray(A, np.float64).ravel()
        # Thin by a hash of the values, not by call order: seeds sharded over devices call back in
        # any order, and the result must not depend on it.
        mask = _uniform_hash(r, A) < keep
        if skip_identity:
            mask &= r != 1.0
        chunks.append((r[mask], A[mask]))

    def recording(params, r, A, *t):
        jax.debug.callback(sink, r, A)
        return source.fn(params, r, A, *t)

    agent.set_params(drift=source.replace(name=f"{source.name} (recorded)", fn=recording, family=None)).fit(env)
    if not chunks:
        raise RuntimeError("no (r, A) pairs were recorded: the run made no policy update; raise total_timesteps")
    r = np.concatenate([c[0] for c in chunks])
    A = np.concatenate([c[1] for c in chunks])
    chunks.clear()  # the compiled training (cached) keeps the sink alive; drop what it collected
    order = np.lexsort((A, r))  # a canonical order, whatever order the callbacks came in
    r, A = r[order], A[order]
    if r.size < n_pairs:
        raise ValueError(f"the run recorded only {r.size} usable pairs (< n_pairs = {n_pairs}); "
                         "raise total_timesteps or lower n_pairs")
    pick = np.random.default_rng(seed).choice(r.size, int(n_pairs), replace=False)
    return r[pick], A[pick]


def _expected_pairs(agent, env, n_seeds: int) -> float | None:
    """How many pairs the run will show the policy loss (None for host-stepped envs: keep them all)."""
    from agents.envs import JaxEnv

    if not isinstance(env, str | JaxEnv):
        return None
    try:
        config = agent.make_config(env)
    except (TypeError, ValueError):
        return None  # not a JAX environment; fit will say what is wrong with it, if anything
    return float(config.num_updates * config.batch_size * config.update_epochs * n_seeds)


def _uniform_hash(r: np.ndarray, A: np.ndarray) -> np.ndarray:
    """A number in [0, 1) per pair, fixed by the pair's values (a multiplicative hash of their bits)."""
    bits = r.view(np.uint64) ^ (A.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return ((bits * np.uint64(0xBF58476D1CE4E5B9)) >> np.uint64(11)).astype(np.float64) / float(2**53)
