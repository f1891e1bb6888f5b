"""The inner loop: a whole ES population of PPO runs in one compiled, sharded call per environment.

``population_fn(pop_params, keys) -> returns (members, seeds)`` vmaps the agents' own pure
``make_train`` over the members' drift parameters (and over inner seeds), then scores each trained
policy. The population axis is sharded over a 1-D device mesh, so on ``k`` devices each holds
``members / k`` runs; nothing else changes, which is why one and several devices give the same result.

Multi-host: run the same program on every host, calling first
``jax.distributed.initialize(coordinator_address="host0:1234", num_processes=N, process_id=i)``
(on TPU pods and SLURM the arguments are found automatically: ``jax.distributed.initialize()``).
``jax.devices()`` then lists every host's devices, the mesh spans them all, and each host feeds and
reads back the same (replicated) host arrays, so every process makes identical ES updates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from agents.config import PPOConfig
from agents.core import make_evaluate, make_train
from agents.envs import JaxEnv
from drifts.base import Drift

FITNESS_MODES = ("eval", "train")


@functools.lru_cache(maxsize=32)
def compiled_population_fn(config: PPOConfig, env: JaxEnv, drift_fn: Callable, temporal: bool, fitness: str,
                           n_eval_episodes: int) -> Callable:
    """``f(pop_params, keys) -> (members, seeds)`` mean returns, jitted once per configuration.

    ``keys`` has shape ``(members, seeds, 2)``: the trainer gives every member the same keys in a
    generation (common random numbers: members differ only by their drift, which lowers the variance
    of the ES gradient) and distinct keys when it estimates one drift's return precisely.
    ``fitness="eval"`` scores the final policy by ``n_eval_episodes`` deterministic episodes;
    ``"train"`` by the mean training return of the last 10% of updates.
    """
    if fitness not in FITNESS_MODES:
        raise ValueError(f"fitness must be one of {FITNESS_MODES}, got {fitness!r}")
    train = make_train(config, env, Drift("meta", drift_fn, None, temporal=temporal))
    evaluate = make_evaluate(config, env, int(n_eval_episodes))
    n_last = max(1, config.num_updates // 10)

    def one_run(drift_params, key):
        k_train, k_eval = jax.random.split(key)
        out = train(k_train, drift_params)
        if fitness == "eval":
            return jnp.mean(evaluate(out.params, out.obs_stats, k_eval))
        return jnp.nanmean(out.metrics["episode_return"][-n_last:])

    def member(drift_params, keys):
        return jax.vmap(one_run, in_axes=(None, 0))(drift_params, keys)

    return jax.jit(jax.vmap(member))


def make_mesh(devices: Sequence[Any] | None, chunk: int) -> Mesh:
    """A 1-D ``"pop"`` mesh over the most devices (of ``devices``, default all) that divide ``chunk``."""
    devices = list(jax.devices() if devices is None else devices)
    n = max(d for d in range(1, len(devices) + 1) if chunk % d == 0)
    return Mesh(np.asarray(devices[:n]), ("pop",))


def shard(tree: Any, mesh: Mesh) -> Any:
    """Place host arrays with their leading (population) axis split over ``mesh``.

    ``make_array_from_callback`` works single- and multi-host alike: each process fills only the
    shards its own devices hold, from the identical host array every process computed.
    """
    sharding = NamedSharding(mesh, PartitionSpec("pop"))

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree)


def to_host(x: jax.Array) -> np.ndarray:
    """Bring a (possibly multi-host) sharded result back as one numpy array on every process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def run_population(fn: Callable, pop_params: Any, keys: np.ndarray, chunk: int, mesh: Mesh) -> np.ndarray:
    """Evaluate every member, ``chunk`` members per compiled call (bounded memory), in order."""
    n = int(np.shape(keys)[0])
    if n % chunk:
        raise ValueError(f"population of {n} does not split into chunks of {chunk}; choose chunk_size dividing it")
    host = jax.tree_util.tree_map(np.asarray, jax.device_get(pop_params))
    outs = []
    for start in range(0, n, chunk):
        part = jax.tree_util.tree_map(lambda x, s=start: x[s:s + chunk], host)
        outs.append(to_host(fn(shard(part, mesh), shard(keys[start:start + chunk], mesh))))
    return np.concatenate(outs, axis=0)


def random_policy_return(env: JaxEnv, n_episodes: int, key: jax.Array) -> float:
    """Mean return of uniformly random actions: the zero of the normalised fitness scale."""
    spec = env.action_spec

    def sample(k, n):
        if spec.discrete:
            return jax.random.randint(k, (n,), 0, spec.n)
        low, high = jnp.asarray(spec.low, jnp.float32), jnp.asarray(spec.high, jnp.float32)
        shape = (n,) + tuple(spec.shape)
        u = jax.random.uniform(k, (n, low.size))
        return (low + u * (high - low)).reshape(shape)

    @jax.jit
    def run(key):
        k_reset, k_run = jax.random.split(key)
        obs, state = jax.vmap(env.reset)(jax.random.split(k_reset, n_episodes))

        def step(carry, _):
            state, ret, alive, key = carry
            key, k_act, k_step = jax.random.split(key, 3)
            _, state, reward, terminated, truncated, _ = jax.vmap(env.step)(
                jax.random.split(k_step, n_episodes), state, sample(k_act, n_episodes))
            ret = ret + reward * alive
            alive = alive * (1.0 - jnp.logical_or(terminated, truncated))
            return (state, ret, alive, key), None

        init = (state, jnp.zeros(n_episodes), jnp.ones(n_episodes), k_run)
        (_, ret, _, _), _ = jax.lax.scan(step, init, None, int(env.max_episode_steps))
        return ret

    return float(np.mean(np.asarray(run(key))))


def normalise(returns: np.ndarray, random_return: float, reference_return: float) -> np.ndarray:
    """``(R - random) / (reference - random)``: 0 = random policy, 1 = the starting drift (PPO for LPO).

    The denominator is floored (1e-3 of the scale) so a reference no better than random cannot blow
    the scores up; the floor is visible in the baselines stored with the run.
    """
    scale = max(abs(random_return), abs(reference_return), 1.0)
    denom = max(reference_return - random_return, 1e-3 * scale)
    return (np.asarray(returns, dtype=np.float64) - random_return) / denom
