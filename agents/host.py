"""Training and evaluating on host-stepped Gymnasium environments.

The rollout steps a Gymnasium vector env on the host, one policy evaluation per step for every
sub-environment of every seed: in numpy for MLP torsos (:class:`NumpyPolicy`, with the rollout's noise
drawn by JAX and the log-probabilities and values computed by one batched JAX pass afterwards), else
one jitted call per step. The update is ``agents.core.make_learner``'s jitted ``learn``, the same
function the fully jitted JAX path calls inside its scan. Seeds train together: one vector env
holds ``n_seeds x num_envs`` sub-environments and the policy and the update are vmapped over seeds.

Episode boundaries follow Gymnasium 1.x ``SAME_STEP`` autoreset (see ``agents.gymnasium_env``): a
step that ends an episode returns the next episode's first observation and the ended episode's last
one in ``info["final_obs"]``, which bootstraps the value on truncation (not on termination).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from agents import networks as nets
from agents.config import PPOConfig
from agents.core import (
    ObsStats,
    ReturnStats,
    Transition,
    init_opt_state,
    init_params,
    make_learner,
    make_network,
    normalize,
    normalize_rewards,
)
from agents.envs import JaxEnv
from agents.gymnasium_env import HostEnv


def _compiled_parts(config: PPOConfig, env: HostEnv, drift_fn: Any, temporal: bool):
    """Jitted, seed-vmapped ``init``, ``policy_step``, ``learn`` and statistics update.

    Cached per configuration, spaces and drift function (not per adapter object), so fitting again on
    another instance of the same environment compiles nothing.
    """
    return _compiled_for_spaces(config, spaces_only(env), drift_fn, temporal)


def spaces_only(env) -> JaxEnv:
    """A hashable stand-in with only the spaces: all the network and the learner need to know."""
    return JaxEnv("", env.family, tuple(env.obs_shape), env.action_spec, None, None, 0, preset=env.preset)


class PolicyStep(NamedTuple):
    """The rollout's jitted policy call and how to read its one packed output on the host.

    The parameters go in as one flat vector per seed and the five outputs come back packed into one
    float32 array, because JAX's per-call overhead grows with the leaves it flattens and the buffers
    it transfers, and the rollout calls this once per environment step. HalfCheetah's 256x256 policy
    took 125-191 us per step before and 114-145 us after (A/B, 2 rounds, quiet 2-core CPU); training
    is bitwise unchanged.
    """

    flatten: Any   # params (seed-stacked pytree) -> (n_seeds, P) flat vectors; once per update
    call: Any      # (flat, stats, obs, key) -> (key, packed (n_seeds, n_envs, width))
    fields: tuple  # (name, start, stop, shape, dtype) per output: x, action, log_prob, value, env_action

    def __call__(self, params_flat, stats, obs, key):
        key, packed = self.call(params_flat, stats, obs, key)
        packed = np.asarray(packed)
        lead = packed.shape[:2]
        return key, tuple(packed[..., a:b].reshape(lead + shape).astype(dtype, copy=False)
                          for _, a, b, shape, dtype in self.fields)


_NUMPY_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda h: np.maximum(h, 0.0)}


def numpy_rollout_supported(config: PPOConfig) -> bool:
    """Whether :class:`NumpyPolicy` can act for this configuration (MLP torsos with its activations)."""
    return config.network == "mlp" and config.activation in _NUMPY_ACTIVATIONS


class NumpyPolicy:
    """The rollout's action sampling in numpy, for MLP torsos: one update's actor weights, fetched once.

    Why: the rollout asks for actions once per environment step, and a jitted call costs ~115 µs on
    this CPU whatever the network (HalfCheetah's 256x256 policy included), while numpy computes that
    policy for one observation in ~18 µs. Only the *sampling* happens here, from noise JAX drew for the
    whole rollout (:func:`agents.networks.sample_noise`, one call per update); the observations the
    learner sees, the log-probabilities and the values of the actions taken come from one batched JAX
    pass after the rollout (:func:`_compiled_scorer`), so the update's ratio starts at exactly 1
    (per-row rounding aside), as on the jitted path.
    """

    def __init__(self, config: PPOConfig, spec, params, stats: ObsStats):
        tree = jax.device_get(params)["params"]  # seed-stacked: leading axis n_seeds
        actor = tree["actor"]
        self.layers = [(np.asarray(actor[f"Dense_{i}"]["kernel"]), np.asarray(actor[f"Dense_{i}"]["bias"])[:, None])
                       for i in range(len(config.hidden_sizes))]
        self.head = (np.asarray(tree["actor_head"]["kernel"]), np.asarray(tree["actor_head"]["bias"])[:, None])
        self.std = None if spec.discrete else np.exp(np.asarray(tree["log_std"]))[:, None]  # (n_seeds, 1, dim)
        self.act = _NUMPY_ACTIVATIONS[config.activation]
        self.spec = spec
        self.normalize_obs = config.normalize_obs
        if config.normalize_obs:
            mean, var = jax.device_get((stats.mean, stats.var))
            n_seeds = mean.shape[0]
            self.mean = np.asarray(mean, np.float32).reshape(n_seeds, 1, -1)
            self.scale = (1.0 / np.sqrt(np.asarray(var, np.float32) + np.float32(1e-8))).reshape(n_seeds, 1, -1)
        if not spec.discrete:
            self.low = np.asarray(spec.low, np.float32).reshape(-1)
            self.high = np.asarray(spec.high, np.float32).reshape(-1)

    def __call__(self, obs: np.ndarray, noise: np.ndarray):
        """``obs`` ``(n_seeds, n_envs, *obs_shape)``, ``noise`` one step's ``(n_seeds, n_envs, k)``:
        ``(action, env_action)``, the sample as the learner stores it and what the env receives."""
        h = obs.reshape(obs.shape[0], obs.shape[1], -1).astype(np.float32, copy=False)
        if self.normalize_obs:
            h = np.clip((h - self.mean) * self.scale, -10.0, 10.0)
        for kernel, bias in self.layers:
            h = self.act(h @ kernel + bias)
        out = h @ self.head[0] + self.head[1]
        if self.spec.discrete:
            action = np.argmax(out + noise, axis=-1).astype(np.int32)
            return action, action
        action = (out + self.std * noise).astype(np.float32, copy=False)
        env_action = np.clip(action, self.low, self.high).reshape(action.shape[:2] + tuple(self.spec.shape))
        return action, env_action


@functools.lru_cache(maxsize=32)
def _compiled_scorer(config: PPOConfig, env: JaxEnv):
    """Jitted, seed-vmapped ``noise(keys, n_steps, n_envs)`` and ``score(params, stats, raw_obs, actions)``.

    ``score`` maps a rollout's raw observations ``(n_seeds, n_steps, n_envs, *obs_shape)`` and actions
    to what the learner needs: the prepared observations, the actions' log-probabilities and the
    values, in one batched pass (the counterpart of the jitted path's post-rollout critic pass).
    """
    network = make_network(config, env)
    spec = env.action_spec

    def score(params, stats, raw_obs, actions):
        x = nets.flatten_obs(normalize(raw_obs, stats, config.normalize_obs), env.obs_shape, config.network)
        pi, value = network.apply(params, x)
        return x, nets.log_prob(spec, pi, actions), value

    def noise(key, n_steps: int, n_envs: int):
        key, k_noise = jax.random.split(key)
        return key, nets.sample_noise(spec, k_noise, (n_steps, n_envs))

    return (jax.jit(jax.vmap(noise, in_axes=(0, None, None)), static_argnums=(1, 2)),
            jax.jit(jax.vmap(score)))


@functools.lru_cache(maxsize=32)
def _compiled_for_spaces(config: PPOConfig, env: JaxEnv, drift_fn: Any, temporal: bool):
    from drifts.base import Drift

    drift = Drift("compiled", drift_fn, None, temporal=temporal)
    network = make_network(config, env)
    spec = env.action_spec
    learn = make_learner(config, env, drift)
    template = jax.eval_shape(lambda: init_params(config, env, jax.random.PRNGKey(0)))
    _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), template))

    def policy_outputs(params, stats, obs, key):
        key, k_act = jax.random.split(key)
        x = nets.flatten_obs(normalize(obs, stats, config.normalize_obs), env.obs_shape, config.network)
        pi, value = network.apply(params, x)
        action = nets.sample(spec, pi, k_act)
        return key, (x, action, nets.log_prob(spec, pi, action), value, nets.to_env_action(spec, action))

    # The packed layout, from the shapes one seed's call produces for one batch of observations.
    obs_one = jax.ShapeDtypeStruct((1,) + tuple(env.obs_shape), jnp.float32)
    _, shapes = jax.eval_shape(policy_outputs, template, ObsStats.create(env.obs_shape), obs_one, jax.random.PRNGKey(0))
    fields, start = [], 0
    for name, sds in zip(("x", "action", "log_prob", "value", "env_action"), shapes, strict=True):
        width = int(np.prod(sds.shape[1:], dtype=np.int64))
        fields.append((name, start, start + width, tuple(sds.shape[1:]), np.dtype(sds.dtype)))
        start += width

    def policy_step(flat, stats, obs, key):
        key, outs = policy_outputs(unravel(flat), stats, obs, key)
        # Integer actions (discrete) travel as float32: exact for any action index below 2**24.
        return key, jnp.concatenate([o.reshape(o.shape[0], -1).astype(jnp.float32) for o in outs], axis=-1)

    def init(key):
        params = init_params(config, env, key)
        return params, init_opt_state(config, params)

    init_one = jax.jit(init)

    def init_seeds(keys):
        # One seed at a time, then stacked: with the MuJoCo library loaded, a vmapped (batched) QR in the
        # orthogonal initialiser hangs XLA on this CPU (seen with mujoco 4.0 and jaxlib 0.10.2).
        inits = [init_one(k) for k in keys]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *inits)

    step = PolicyStep(jax.jit(jax.vmap(lambda p: ravel_pytree(p)[0])), jax.jit(jax.vmap(policy_step)), tuple(fields))
    return (
        init_seeds,
        step,
        jax.jit(jax.vmap(learn, in_axes=(0, 0, 0, 0, 0, 0, None, None))),
        jax.jit(jax.vmap(ObsStats.update)),
    )


@functools.lru_cache(maxsize=8)
def _compiled_reward_normalizer(gamma: float):
    """``normalize_rewards`` vmapped over seeds: ``(states, rewards, dones)`` of shape ``(n_seeds, n_steps, n_envs)``."""
    return jax.jit(jax.vmap(lambda state, rewards, dones: normalize_rewards(state, rewards, dones, gamma)))


def _final_obs(next_obs: np.ndarray, info: dict, done: np.ndarray) -> np.ndarray:
    """Last observations of the episodes that ended this step (``SAME_STEP`` autoreset), else ``next_obs``."""
    final = next_obs.copy()
    if done.any():
        if "final_obs" not in info:
            raise RuntimeError("the vector env reported a done without info['final_obs']: it is not in SAME_STEP "
                               "autoreset mode")
        for i in np.flatnonzero(done):
            final[i] = np.asarray(info["final_obs"][i], np.float32).reshape(final.shape[1:])
    return final


def fit_host(agent, env: HostEnv):
    """Train ``agent.n_seeds`` runs on a host-stepped env; sets the agent's fitted state and returns it."""
    from agents.estimators import _raise_if_diverged, verify_drift, warn_partial_batch

    config = agent.make_config(env)  # a user's vector env of N sub-envs sets num_envs=N
    warn_partial_batch(agent, config, stacklevel=4)  # fit_host <- MirrorAgent.fit <- the user's call
    drift = agent.make_drift()
    if agent.check_drift:
        verify_drift(drift)
    n_seeds, n_envs, n_steps = int(agent.n_seeds), config.num_envs, config.num_steps
    init, policy_step, learn, update_stats = _compiled_parts(config, env, drift.fn, drift.temporal)
    roll = _rollout_numpy if numpy_rollout_supported(config) else _rollout

    key = jax.random.PRNGKey(int(agent.seed))
    keys = jax.random.split(key, n_seeds)
    split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
    k_params, k_learn, k_act = split[:, 0], split[:, 1], split[:, 2]
    params, opt_state = init(k_params)
    stats = jax.vmap(lambda _: ObsStats.create(env.obs_shape))(jnp.arange(n_seeds))

    bar = None
    if agent.progress:
        from agents.progress import ProgressBar

        bar = ProgressBar(config.num_updates * config.batch_size, config.batch_size,
                          desc=f"{type(agent).__name__}[{drift.name}] {env.id}", n_seeds=n_seeds)
    vec = env.make_vec(n_seeds * n_envs)
    history: dict[str, list] = {}
    try:
        obs, _ = vec.reset(seed=int(agent.seed))
        obs = _as_obs(obs, env, n_seeds, n_envs)
        ep_ret = np.zeros((n_seeds, n_envs), np.float32)
        return_stats = jax.vmap(lambda _: ReturnStats.create(n_envs))(jnp.arange(n_seeds))
        act_keys = k_act
        for update in range(config.num_updates):
            rollout, obs, ep_ret, act_keys = roll(vec, env, config, policy_step, params, stats, obs, ep_ret,
                                                  act_keys, n_seeds, n_envs, n_steps)
            traj, raw_obs, finished, n_done = rollout
            if config.normalize_reward:
                # (n_seeds, n_steps, n_envs), as the jitted path's (n_steps, n_envs) per seed
                return_stats, scaled = _compiled_reward_normalizer(float(config.gamma))(return_stats, traj.reward, traj.done)
                traj = traj._replace(reward=scaled)
            t = jnp.asarray(update / config.num_updates, jnp.float32)
            params, opt_state, k_learn, metrics = learn(params, opt_state, k_learn, traj, obs, stats,
                                                        drift.params, t)
            if config.normalize_obs:
                stats = update_stats(stats, raw_obs)
            metrics = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
            with np.errstate(invalid="ignore", divide="ignore"):
                metrics["episode_return"] = np.where(n_done > 0, finished / np.maximum(n_done, 1), np.nan)
            metrics["episodes"] = n_done.astype(np.float32)
            for k, v in metrics.items():
                history.setdefault(k, []).append(v)
            if bar is not None:
                bar(update, metrics["episode_return"])
    finally:
        vec.close()
        if bar is not None:
            bar.close()
    history = {k: np.stack(v, axis=1) for k, v in history.items()}  # (n_seeds, num_updates)
    _raise_if_diverged(history, params, drift)
    agent._set_fitted(config, env, drift, params, stats, history)
    return agent


def _as_obs(obs, env: HostEnv, n_seeds: int, n_envs: int) -> np.ndarray:
    return np.asarray(obs, np.float32).reshape((n_seeds, n_envs) + tuple(env.obs_shape))


def _rollout_numpy(vec, env, config, policy_step, params, stats, obs, ep_ret, act_keys, n_seeds, n_envs, n_steps):
    """:func:`_rollout` with :class:`NumpyPolicy` choosing the actions and one batched JAX pass scoring them."""
    del policy_step
    noise_fn, score = _compiled_scorer(config, spaces_only(env))
    act_keys, noise = noise_fn(act_keys, n_steps, n_envs)
    noise = np.asarray(noise)  # (n_seeds, n_steps, n_envs, k)
    policy = NumpyPolicy(config, env.action_spec, params, stats)
    actions = []

    def act(obs, step):
        action, env_action = policy(obs, noise[:, step])
        actions.append(action)
        return env_action

    raws, rewards, dones, truncs, finals, finished, n_done, obs, ep_ret = _step_env(
        vec, env, config, act, obs, ep_ret, n_seeds, n_envs, n_steps)
    raw_obs, action = _stack(raws, np.float32), _stack(actions)
    x, logp, value = score(params, stats, raw_obs, action)
    traj = _transition(x, action, logp, value, rewards, dones, truncs, finals)
    return (traj, raw_obs, finished, n_done), obs, ep_ret, act_keys


def _stack(items, dtype=None):
    """``n_steps`` x ``(n_seeds, n_envs, ...)`` -> ``(n_seeds, n_steps, n_envs, ...)``."""
    return np.stack([np.asarray(a, dtype) for a in items], axis=1)


def _transition(x, action, logp, value, rewards, dones, truncs, finals) -> Transition:
    """A seed-major :class:`Transition` from the scored arrays and :func:`_step_env`'s per-step lists."""
    reward = _stack(rewards, np.float32)
    return Transition(
        obs=x, action=action, log_prob=logp, value=value, reward=reward, done=_stack(dones, np.float32),
        truncated=_stack(truncs, np.float32), final_obs=_stack(finals, np.float32),
        finished_return=np.zeros_like(reward),
    )


def _step_env(vec, env, config, act, obs, ep_ret, n_seeds, n_envs, n_steps):
    """Step the vector env ``n_steps`` times with ``act(obs, step) -> env actions (n_seeds, n_envs, ...)``.

    Returns the per-step raw observations, scaled rewards, dones, truncations and final observations
    (lists of ``(n_seeds, n_envs, ...)``), each seed's finished-episode return sum and count, and the
    last observations and running episode returns.
    """
    batch = (n_seeds, n_envs)
    flat_shape = (n_seeds * n_envs,) + tuple(env.obs_shape)
    rewards, dones, truncs, finals, raws = [], [], [], [], []
    finished = np.zeros(n_seeds, np.float64)
    n_done = np.zeros(n_seeds, np.int64)
    for step in range(n_steps):
        env_action = act(obs, step)
        next_obs, reward, terminated, truncated, info = vec.step(env_action.reshape((n_seeds * n_envs,) + env_action.shape[2:]))
        terminated = np.asarray(terminated, bool)
        truncated = np.logical_and(np.asarray(truncated, bool), ~terminated)
        done = terminated | truncated
        next_flat = np.asarray(next_obs, np.float32).reshape(flat_shape)
        final = _final_obs(next_flat, info, done).reshape(batch + tuple(env.obs_shape))
        reward = np.asarray(reward, np.float32).reshape(batch)
        done, truncated = done.reshape(batch), truncated.reshape(batch)
        ep_ret = ep_ret + reward
        finished += np.where(done, ep_ret, 0.0).sum(axis=1)
        n_done += done.sum(axis=1)
        ep_ret = np.where(done, 0.0, ep_ret).astype(np.float32)
        rewards.append(reward * config.reward_scale), dones.append(done)
        truncs.append(truncated), finals.append(final), raws.append(obs)
        obs = next_flat.reshape(batch + tuple(env.obs_shape))
    return raws, rewards, dones, truncs, finals, finished, n_done, obs, ep_ret


def _rollout(vec, env, config, policy_step, params, stats, obs, ep_ret, act_keys, n_seeds, n_envs, n_steps):
    """Step the vector env ``num_steps`` times with the jitted policy (any torso); returns a seed-major
    :class:`Transition` and bookkeeping."""
    params_flat = policy_step.flatten(params)
    outs, keys = [], [act_keys]

    def act(obs, step):
        keys[0], out = policy_step(params_flat, stats, obs, keys[0])
        outs.append(out[:4])
        return out[4]

    raws, rewards, dones, truncs, finals, finished, n_done, obs, ep_ret = _step_env(
        vec, env, config, act, obs, ep_ret, n_seeds, n_envs, n_steps)
    x, action, logp, value = (_stack([o[i] for o in outs]) for i in range(4))
    traj = _transition(x, action, logp, value, rewards, dones, truncs, finals)
    return (traj, _stack(raws), finished, n_done), obs, ep_ret, keys[0]


UNCAPPED_EVAL_STEPS = 100_000  # where evaluation cuts off episodes of an env without a time limit


def evaluate_host(agent, env: HostEnv, n_episodes: int, seed: int) -> np.ndarray:
    """Deterministic returns ``(n_seeds, n_episodes)``: the first episode of each sub-environment.

    Every seed's policy drives ``n_episodes`` sub-environments (seeded ``seed, seed + 1, ...``) of one
    sync vector env until each has finished its first episode or the step cap is reached.
    """
    from agents.estimators import _compiled_policy

    n_seeds = agent.n_seeds_
    act = _compiled_policy(agent.config_, agent._policy_env(), True)
    act_all = jax.jit(jax.vmap(act, in_axes=(0, 0, 0, None)))
    horizon = int(env.max_episode_steps or 0) or UNCAPPED_EVAL_STEPS
    vec = env.make_vec(n_seeds * n_episodes, vectorization="sync")
    returns = np.zeros((n_seeds * n_episodes,), np.float64)
    alive = np.ones((n_seeds * n_episodes,), bool)
    try:
        obs, _ = vec.reset(seed=[int(seed) + i % n_episodes for i in range(n_seeds * n_episodes)])
        key = jax.random.PRNGKey(int(seed))
        for _ in range(horizon):
            batch = np.asarray(obs, np.float32).reshape((n_seeds, n_episodes) + tuple(env.obs_shape))
            action = np.asarray(act_all(agent.params_, agent.obs_stats_, jnp.asarray(batch), key))
            action = action.reshape((n_seeds * n_episodes,) + action.shape[2:])
            obs, reward, terminated, truncated, _ = vec.step(action)
            returns += np.where(alive, np.asarray(reward, np.float64), 0.0)
            alive &= ~(np.asarray(terminated, bool) | np.asarray(truncated, bool))
            if not alive.any():
                break
    finally:
        vec.close()
    if alive.any():  # only without a time limit: the env's own cap ends every episode first
        warnings.warn(
            f"{int(alive.sum())} of {alive.size} evaluation episodes on {env.id!r} had not ended after {horizon:,} "
            "steps, so their returns are cut off there; the environment has no time limit: wrap it in "
            "gymnasium.wrappers.TimeLimit", UserWarning, stacklevel=3)
    return returns.reshape(n_seeds, n_episodes)
