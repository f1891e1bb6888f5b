"""The inner loop: a whole ES population of PPO runs in one compiled, sharded call per environment.

``run_population(fn, pop_params, keys) -> returns (members, seeds)`` vmaps the agents' own pure
training (``make_train_parts``, the pieces of ``make_train``) over the members' drift parameters and
over inner seeds, then scores each trained policy. The population axis is sharded over a 1-D device
mesh, so on ``k`` devices each holds ``members / k`` runs; nothing else changes, which is why one and
several devices give the same result.

Multi-host: run the same program on every host, calling first
``jax.distributed.initialize(coordinator_address="host0:1234", num_processes=N, process_id=i)``
(on TPU pods and SLURM the arguments are found automatically: ``jax.distributed.initialize()``).
``jax.devices()`` then lists every host's devices, the mesh spans them all, and each host feeds and
reads back the same (replicated) host arrays, so every process makes identical ES updates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from agents.config import PPOConfig
from agents.core import make_evaluate, make_train_parts
from agents.envs import JaxEnv
from drifts.base import Drift

FITNESS_MODES = ("eval", "train", "curve", "eval+curve")


class PopulationFn(NamedTuple):
    """The compiled pieces of the inner loop (see :func:`compiled_population_fn`)."""

    run: Callable    # (pop_params, init_states, eval_keys) -> returns (members, seeds)
    init: Callable   # key -> initial RunnerState of one PPO run (unbatched)


@functools.lru_cache(maxsize=32)
def compiled_population_fn(config: PPOConfig, env: JaxEnv, drift_fn: Callable, temporal: bool, fitness: str,
                           n_eval_episodes: int) -> PopulationFn:
    """The inner loop, jitted once per configuration: the agents' own ``make_train_parts`` pieces.

    ``run`` scans the PPO update from given initial states, vmapped over inner seeds and members.
    Initial states are built outside it, one unbatched ``init`` per distinct key: the network's
    orthogonal initialiser is a LAPACK QR, and a *batched* QR inside the population program fans out
    over XLA:CPU's intra-op pool while the device executions hold that pool's threads, which wedges
    the process on small machines (seen here: 2 cores, and always with 2 forced host devices).
    ``fitness="eval"`` scores a final policy by ``n_eval_episodes`` deterministic episodes;
    ``"train"`` by the mean training return of the last 10% of updates; ``"curve"`` by the mean
    training return over the last half of the updates (a drift that learns early and stays there
    beats one that reaches the same end late or unsteadily); ``"eval+curve"`` by the mean of
    ``"eval"`` and ``"curve"``.
    """
    if fitness not in FITNESS_MODES:
        raise ValueError(f"fitness must be one of {FITNESS_MODES}, got {fitness!r}")
    init, update = make_train_parts(config, env, Drift("meta", drift_fn, None, temporal=temporal))
    evaluate = make_evaluate(config, env, int(n_eval_episodes))
    n_last = max(1, config.num_updates // 10)
    n_half = max(1, config.num_updates // 2)

    def one_run(drift_params, state, k_eval):
        state, metrics = jax.lax.scan(lambda s, _: update(s, drift_params), state, None, config.num_updates)
        if fitness == "train":
            return jnp.nanmean(metrics["episode_return"][-n_last:])
        curve = jnp.nanmean(metrics["episode_return"][-n_half:])
        if fitness == "curve":
            return curve
        final = jnp.mean(evaluate(state.params, state.obs_stats, k_eval))
        return final if fitness == "eval" else 0.5 * (final + curve)

    def member(drift_params, states, eval_keys):
        return jax.vmap(one_run, in_axes=(None, 0, 0))(drift_params, states, eval_keys)

    return PopulationFn(jax.jit(jax.vmap(member)), jax.jit(lambda key: init(key, None)))


def initial_states(fn: PopulationFn, train_keys: np.ndarray) -> Any:
    """Initial PPO states for keys of shape ``(members, seeds, 2)``, each distinct key initialised once."""
    cache: dict[bytes, Any] = {}
    flat = train_keys.reshape(-1, train_keys.shape[-1])
    states = []
    for k in flat:
        b = k.tobytes()
        if b not in cache:
            cache[b] = jax.tree_util.tree_map(np.asarray, jax.device_get(fn.init(jnp.asarray(k))))
        states.append(cache[b])
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *states)
    return jax.tree_util.tree_map(lambda x: x.reshape(train_keys.shape[:2] + x.shape[1:]), stacked)


def check_devices(devices: Any) -> list:
    """``devices`` as a non-empty list of JAX devices, or a ValueError that says what to pass."""
    hint = "pass a list of JAX devices, e.g. devices=jax.devices() or jax.devices()[:1], or None for all"
    if isinstance(devices, (str, bytes)) or not isinstance(devices, Iterable):
        raise ValueError(f"devices must be a sequence of JAX devices, got {devices!r}; {hint}")
    devices = list(devices)
    if not devices:
        raise ValueError(f"devices is empty; {hint}")
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if bad:
        raise ValueError(f"devices holds {bad[0]!r}, not a JAX device; {hint}")
    return devices


def make_mesh(devices: Sequence[Any] | None, chunk: int) -> Mesh:
    """A 1-D ``"pop"`` mesh over the most devices (of ``devices``, default all) that divide ``chunk``."""
    devices = list(jax.devices()) if devices is None else check_devices(devices)
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


def run_population(fn: PopulationFn, pop_params: Any, keys: np.ndarray, chunk: int, mesh: Mesh) -> np.ndarray:
    """Returns ``(members, seeds)``: every member trained from ``keys`` ``(members, seeds, 2)``, ``chunk``
    members per compiled call (bounded memory), in order. Each key splits into a training key and an
    evaluation key, as ``make_train`` users would do."""
    n = int(np.shape(keys)[0])
    if n % chunk:
        raise ValueError(f"population of {n} does not split into chunks of {chunk}; choose chunk_size dividing it")
    split = np.asarray(jax.vmap(jax.random.split)(jnp.asarray(keys.reshape(-1, keys.shape[-1]))))
    split = split.reshape(keys.shape[:2] + split.shape[1:])  # (members, seeds, 2, key)
    host = jax.tree_util.tree_map(np.asarray, jax.device_get(pop_params))
    outs = []
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        part = jax.tree_util.tree_map(lambda x, sl=sl: x[sl], host)
        states = initial_states(fn, split[sl, :, 0])
        outs.append(to_host(fn.run(shard(part, mesh), shard(states, mesh), shard(split[sl, :, 1], mesh))))
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


# The smallest normalisation scale, as a fraction of the returns' magnitude. When the starting drift
# does not clearly beat a random policy, ``reference - random`` is noise (or negative); dividing by it
# would let that one environment's scores swamp the others in the mean over environments.
MIN_SCALE_FRACTION = 0.1


def normalisation_scale(random_return: float, reference_return: float) -> float:
    """The denominator of :func:`normalise`: ``reference - random``, floored at 10% of the returns' magnitude.

    The floor is ``MIN_SCALE_FRACTION * max(|random|, |reference|, 1)``. A reference clearly above
    random (the normal case) is not floored, so its scale is exactly ``reference - random``; one that
    is below, equal or only marginally above random (an inner budget too small to learn anything)
    gets the floor, which keeps that environment's scores of order one like every other environment's.
    """
    floor = MIN_SCALE_FRACTION * max(abs(random_return), abs(reference_return), 1.0)
    return max(reference_return - random_return, floor)


def is_floored(random_return: float, reference_return: float) -> bool:
    """Whether the starting drift is too close to (or below) random for ``reference - random`` to be the scale."""
    return normalisation_scale(random_return, reference_return) != reference_return - random_return


def normalise(returns: np.ndarray, random_return: float, reference_return: float) -> np.ndarray:
    """``(R - random) / scale``: 0 = random policy, 1 = the starting drift (PPO for LPO).

    ``scale`` is ``reference - random`` whenever the starting drift clearly beats a random policy; it
    is floored at 10% of the returns' magnitude otherwise (:func:`normalisation_scale`), so a
    non-informative environment cannot dominate the mean over environments. The trainer warns when
    the floor applies and stores the scale with the run's baselines.
    """
    scale = normalisation_scale(random_return, reference_return)
    return (np.asarray(returns, dtype=np.float64) - random_return) / scale
