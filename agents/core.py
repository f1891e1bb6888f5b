"""The Mirror-Learning PPO core: one pure, jitted training function with a pluggable drift.

``make_train(config, env, drift)`` returns ``train(key, drift_params) -> TrainOutput``, the whole
training as one ``lax.scan`` over updates. It is a pure function of its two arguments, so it can be
``jit``-ed once and ``vmap``-ed over seeds (``key``) and over drift parameters (an ES population)
without being rewritten. The drift enters in exactly one place, :func:`policy_loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from agents import networks as nets
from agents import shuffle
from agents.config import PPOConfig
from agents.envs import JaxEnv
from drifts.base import Drift


class ObsStats(NamedTuple):
    """Running mean/variance of observations (parallel-Welford), carried with the agent."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, obs_shape) -> ObsStats:
        return cls(jnp.zeros(obs_shape, jnp.float32), jnp.ones(obs_shape, jnp.float32), jnp.asarray(1e-4, jnp.float32))

    def update(self, batch: jax.Array) -> ObsStats:
        batch = batch.reshape((-1,) + self.mean.shape)
        b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        return ObsStats(mean, m2 / total, total)


def normalize(obs: jax.Array, stats: ObsStats, enabled: bool) -> jax.Array:
    if not enabled:
        return obs
    return jnp.clip((obs - stats.mean) / jnp.sqrt(stats.var + 1e-8), -10.0, 10.0)


class ReturnStats(NamedTuple):
    """What reward normalisation carries: each env's discounted return so far and its running variance.

    As Stable-Baselines3's ``VecNormalize`` and Gymnasium's ``NormalizeReward`` do: rewards are divided
    by the standard deviation of the discounted return (not re-centred), which keeps value targets
    O(1) whatever the task's reward scale, and clipped to +-10.
    """

    ret: jax.Array      # (num_envs,) discounted return of the current episodes
    stats: ObsStats     # running mean/variance of those returns (scalar)

    @classmethod
    def create(cls, n_envs: int) -> ReturnStats:
        return cls(jnp.zeros((n_envs,), jnp.float32), ObsStats.create(()))


def normalize_rewards(state: ReturnStats, rewards: jax.Array, dones: jax.Array, gamma: float):
    """Scale a ``(num_steps, num_envs)`` rollout's rewards step by step; returns ``(state, scaled)``.

    At each step every env's return is ``ret * gamma + r``; the variance absorbs those returns and the
    step's rewards are divided by its square root; an env whose episode ended restarts at 0.
    """

    def step(carry, xs):
        ret, stats = carry
        reward, done = xs
        ret = ret * gamma + reward
        stats = stats.update(ret)
        scaled = jnp.clip(reward / jnp.sqrt(stats.var + 1e-8), -10.0, 10.0)
        return (jnp.where(done > 0, 0.0, ret), stats), scaled

    (ret, stats), scaled = jax.lax.scan(step, (state.ret, state.stats), (rewards, dones))
    return ReturnStats(ret, stats), scaled


class RunnerState(NamedTuple):
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    obs_stats: ObsStats
    episode_return: jax.Array   # running undiscounted return of the current episode, per env
    key: jax.Array
    update: jax.Array           # index of the next update (drives t = update / num_updates)
    return_stats: ReturnStats   # for config.normalize_reward (carried, unused, when it is off)


class Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    finished_return: jax.Array  # episode return where an episode ended at this step, else 0


class TrainOutput(NamedTuple):
    params: Any
    obs_stats: ObsStats
    metrics: dict


# |log r| beyond this is clipped before the ratio is formed. exp() leaves float32 past |log r| ~ 87
# (r = 0 or inf), and a drift's log r (LPO's features, DPO's A < 0 branch) then turns one sample into
# a NaN loss: a SpaceInvaders run under the LPO network did exactly that at update 140 of 16 seeds.
# Samples that far from r = 1 carry no usable gradient (r * A * grad log pi vanishes or explodes),
# and inside the limit r, r**2 and every drift input stay finite, so training is unchanged elsewhere.
LOG_RATIO_LIMIT = 30.0


def probability_ratio(logp, old_logp):
    """``exp(logp - old_logp)``, the log ratio clipped to ``±LOG_RATIO_LIMIT`` so r stays finite and > 0."""
    return jnp.exp(jnp.clip(logp - old_logp, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))


def policy_loss(drift: Drift, drift_params, ratio, advantages, t):
    """Mirror Learning's policy loss: ``-mean(r * A - drift(r, A))`` (A normalised by the caller)."""
    return -jnp.mean(ratio * advantages - drift.apply(drift_params, ratio, advantages, t))


def gae(values, rewards, dones, last_value, gamma, lam):
    """Generalised advantage estimates and returns over a ``(num_steps, num_envs)`` rollout."""

    def step(carry, xs):
        next_adv, next_value = carry
        value, reward, done = xs
        not_done = 1.0 - done
        delta = reward + gamma * next_value * not_done - value
        adv = delta + gamma * lam * not_done * next_adv
        return (adv, value), adv

    _, adv = jax.lax.scan(step, (jnp.zeros_like(last_value), last_value), (values, rewards, dones), reverse=True)
    return adv, adv + values


def make_network(config: PPOConfig, env: JaxEnv) -> nets.ActorCritic:
    return nets.ActorCritic(env.action_spec, tuple(config.hidden_sizes), config.activation, config.network,
                            config.log_std_init,
                            None if config.value_hidden_sizes is None else tuple(config.value_hidden_sizes))


def make_optimizer(config: PPOConfig) -> optax.GradientTransformation:
    steps_per_update = config.update_epochs * config.num_minibatches
    if config.anneal_lr:
        def lr(count):
            return config.learning_rate * (1.0 - (count // steps_per_update) / config.num_updates)
    else:
        lr = config.learning_rate
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))


def init_opt_state(config: PPOConfig, params):
    """The optimiser state :func:`make_learner`'s ``learn`` expects: over the parameters as one flat vector."""
    return make_optimizer(config).init(ravel_pytree(params)[0])


def init_params(config: PPOConfig, env: JaxEnv, key: jax.Array):
    network = make_network(config, env)
    dummy = jnp.zeros((1,) + tuple(env.obs_shape), jnp.float32)
    return network.init(key, nets.flatten_obs(dummy, env.obs_shape, config.network))


# The rollout packs small per-environment carries (see carry_packer); a switch for A/B tests.
PACK_ROLLOUT_CARRY = True
PACK_MAX_LEAVES, PACK_MAX_WORDS = 32, 256


def carry_packer(example: Any) -> tuple[Callable, Callable] | None:
    """``(pack, unpack)`` between a pytree of per-environment arrays (leading axis: environments) and
    one ``(n_envs, k)`` uint32 array; None unless every leaf is a 32-bit number and the pytree is small
    (at most ``PACK_MAX_LEAVES`` leaves and ``PACK_MAX_WORDS`` numbers per environment).

    Why: XLA:CPU copies loop-carried buffers of the rollout's ``lax.scan`` at every step and runs one
    select per state field at an auto-reset. CartPole's state, observation and episode return are seven
    buffers of four numbers: packed into one (bit-casts, so every value and the training are bitwise
    unchanged) the rollout step runs 15 thunks instead of 24, and a one-seed CartPole run is ~5-7%
    faster (interleaved A/B, jax 0.10.2). Only measured on classic-control states on the CPU; large
    states (Brax's physics states, MinAtar's boolean grids) keep the plain carry, and so do other
    backends (see ``_rollout_packer``).
    """
    leaves, treedef = jax.tree_util.tree_flatten(example)
    if not leaves or len(leaves) > PACK_MAX_LEAVES:
        return None
    if any(not isinstance(a.dtype, np.dtype) or a.dtype.itemsize != 4 or a.dtype.kind not in "fiu"  # typed keys: no
           or a.ndim < 1 or a.shape[0] != leaves[0].shape[0] for a in leaves):
        return None
    shapes = [tuple(a.shape[1:]) for a in leaves]
    dtypes = [a.dtype for a in leaves]
    sizes = [int(np.prod(s)) for s in shapes]
    if sum(sizes) > PACK_MAX_WORDS:
        return None

    def pack(tree):
        parts = [jax.lax.bitcast_convert_type(a, jnp.uint32).reshape(a.shape[0], -1)
                 for a in jax.tree_util.tree_leaves(tree)]
        return jnp.concatenate(parts, axis=1)

    def unpack(packed):
        out, start = [], 0
        for shape, dtype, size in zip(shapes, dtypes, sizes, strict=True):
            part = packed[:, start:start + size].reshape((packed.shape[0],) + shape)
            out.append(jax.lax.bitcast_convert_type(part, dtype))
            start += size
        return jax.tree_util.tree_unflatten(treedef, out)

    return pack, unpack


def _rollout_packer(env_step: Callable, carry: tuple, noise: Any) -> tuple[Callable, Callable] | None:
    """:func:`carry_packer` for the rollout's per-environment carry (``carry[2:]``), or None for the plain scan.

    Only on the CPU (where it was measured), and only when one step returns that carry with the same
    structure, shapes and dtypes: ``lax.scan`` checks (or promotes) a carry that changes type, while
    bit-casts back to the old dtypes would silently misread it (an int field that a step turns into
    a float). Such environments keep the plain scan and its error.
    """
    if not PACK_ROLLOUT_CARRY or jax.default_backend() != "cpu":
        return None
    packer = carry_packer(carry[2:])
    if packer is None:
        return None
    one_step = jax.tree_util.tree_map(lambda a: a[0], noise)
    (_, _, *stepped), _ = jax.eval_shape(env_step, carry, one_step)
    before = jax.eval_shape(lambda c: c, carry[2:])
    if jax.tree_util.tree_structure(tuple(stepped)) != jax.tree_util.tree_structure(before):
        return None
    if any((a.shape, a.dtype) != (b.shape, b.dtype)
           for a, b in zip(jax.tree_util.tree_leaves(tuple(stepped)), jax.tree_util.tree_leaves(before), strict=True)):
        return None
    return packer


def make_train_parts(config: PPOConfig, env: JaxEnv, drift: Drift) -> tuple[Callable, Callable]:
    """``init(key, drift_params) -> RunnerState`` and ``update(state, drift_params) -> (state, metrics)``.

    :func:`make_train` scans ``update``; estimators compose them differently (e.g. ``scan(vmap(update))``
    with a progress callback outside the vmap).
    """
    config.validate()
    network = make_network(config, env)
    spec = env.action_spec
    n_envs, n_steps = config.num_envs, config.num_steps

    def prep(obs, stats):
        return nets.flatten_obs(normalize(obs, stats, config.normalize_obs), env.obs_shape, config.network)

    def init(key, drift_params):
        del drift_params  # the drift only enters the update; kept for a uniform signature
        k_params, k_env, k_run = jax.random.split(key, 3)
        params = init_params(config, env, k_params)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, n_envs))
        return RunnerState(
            params=params,
            opt_state=init_opt_state(config, params),
            env_state=env_state,
            obs=obs,
            obs_stats=ObsStats.create(tuple(env.obs_shape)),
            episode_return=jnp.zeros((n_envs,), jnp.float32),
            key=k_run,
            update=jnp.asarray(0, jnp.int32),
            return_stats=ReturnStats.create(n_envs),
        )

    def env_step(carry, xs):
        params, stats, env_state, obs, ep_ret = carry
        action_noise, env_draws = xs
        x = prep(obs, stats)
        pi = network.apply(params, x, method=network.policy)  # values are computed after the rollout
        action = nets.sample_from_noise(spec, pi, action_noise)
        logp = nets.log_prob(spec, pi, action)
        next_obs, env_state, reward, terminated, truncated, final_obs = jax.vmap(env.step_with)(
            env_draws, env_state, nets.to_env_action(spec, action)
        )
        done = jnp.logical_or(terminated, truncated)
        ep_ret = ep_ret + reward
        finished = jnp.where(done, ep_ret, 0.0)
        ep_ret = jnp.where(done, 0.0, ep_ret)
        transition = Transition(x, action, logp, None, reward * config.reward_scale, done.astype(jnp.float32),
                                truncated.astype(jnp.float32), final_obs, finished)
        return (params, stats, env_state, next_obs, ep_ret), transition

    def rollout_noise(key):
        # All of a rollout's randomness drawn in batched calls rather than per step (including the
        # environment's auto-reset states, see JaxEnv.draw): on the CPU per-step key splitting and
        # reset draws cost more than the policy network itself.
        k_act, k_env, key = jax.random.split(key, 3)
        # Traced under JAX's non-partitionable threefry (a scoped context: the user's global setting
        # is untouched). The partitionable scheme, JAX's default, is made for splitting one random
        # array across devices, which these per-seed draws never are, and costs more per bit on the CPU
        # (measured in benchmarks/README.md). Training stays a deterministic function of the seed.
        with jax.threefry_partitionable(False):
            action_noise = nets.sample_noise(spec, k_act, (n_steps, n_envs))
            drawn = env.draw_steps(k_env, (n_steps, n_envs))
        return (action_noise, drawn), key

    learn = make_learner(config, env, drift)

    def update(state: RunnerState, drift_params):
        t = state.update.astype(jnp.float32) / config.num_updates
        noise, key = rollout_noise(state.key)
        per_env = (state.env_state, state.obs, state.episode_return)
        packer = _rollout_packer(env_step, (state.params, state.obs_stats, *per_env), noise)
        if packer is None:
            carry = (state.params, state.obs_stats, *per_env)
            (_, _, env_state, obs, ep_ret), traj = jax.lax.scan(env_step, carry, noise)
        else:
            pack, unpack = packer

            def packed_step(carry, xs):
                params, stats, packed = carry
                (params, stats, *per_env), transition = env_step((params, stats, *unpack(packed)), xs)
                return (params, stats, pack(per_env)), transition

            (_, _, packed), traj = jax.lax.scan(packed_step, (state.params, state.obs_stats, pack(per_env)), noise)
            env_state, obs, ep_ret = unpack(packed)
        # One batched critic pass over the whole rollout instead of n_steps tiny ones inside the loop.
        traj = traj._replace(value=network.apply(state.params, traj.obs, method=network.value))
        return_stats = state.return_stats
        if config.normalize_reward:
            return_stats, scaled = normalize_rewards(return_stats, traj.reward, traj.done, config.gamma)
            traj = traj._replace(reward=scaled)

        stats = state.obs_stats
        if config.normalize_obs:
            stats = stats.update(_unnormalized_rollout_obs(traj, state))
        params, opt_state, key, metrics = learn(
            state.params, state.opt_state, key, traj, obs, state.obs_stats, drift_params, t
        )
        n_finished = jnp.sum(traj.done)
        metrics["episode_return"] = jnp.where(
            n_finished > 0, jnp.sum(traj.finished_return) / jnp.maximum(n_finished, 1), jnp.nan
        )
        metrics["episodes"] = n_finished
        new_state = RunnerState(params, opt_state, env_state, obs, stats, ep_ret, key, state.update + 1, return_stats)
        return new_state, metrics

    return init, update


def make_learner(config: PPOConfig, env: JaxEnv, drift: Drift) -> Callable:
    """``learn(params, opt_state, key, traj, last_obs, obs_stats, drift_params, t)``: one PPO update from a rollout.

    The learning half of an update (truncation bootstrapping, GAE, epochs of minibatch steps), split
    from the rollout so that the jitted scan and the host-stepped Gymnasium path share one function.
    ``traj`` is a :class:`Transition` of ``(num_steps, num_envs)`` arrays whose ``obs`` are already
    prepared (normalised, reshaped) with ``obs_stats``; ``last_obs`` and ``traj.final_obs`` are raw.
    ``opt_state`` comes from :func:`init_opt_state`. Returns ``(params, opt_state, key, metrics)`` with
    the mean loss terms.
    """
    network = make_network(config, env)
    optimizer = make_optimizer(config)
    spec = env.action_spec

    def prep(obs, stats):
        return nets.flatten_obs(normalize(obs, stats, config.normalize_obs), env.obs_shape, config.network)

    def loss_fn(params, batch, drift_params, t):
        x, action, old_logp, old_value, adv, target = batch
        pi, value = network.apply(params, x)
        logp = nets.log_prob(spec, pi, action)
        ratio = probability_ratio(logp, old_logp)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = policy_loss(drift, drift_params, ratio, jax.lax.stop_gradient(adv), t)
        if config.clip_value:
            value_clipped = old_value + jnp.clip(value - old_value, -config.clip_eps, config.clip_eps)
            v_loss = 0.5 * jnp.mean(jnp.maximum((value - target) ** 2, (value_clipped - target) ** 2))
        else:
            v_loss = 0.5 * jnp.mean((value - target) ** 2)
        ent = jnp.mean(nets.entropy(spec, pi))
        total = pg_loss + config.vf_coef * v_loss - config.ent_coef * ent
        log_ratio = logp - old_logp
        aux = {
            "policy_loss": pg_loss,
            "value_loss": v_loss,
            "entropy": ent,
            "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
            "ratio_dev": jnp.mean(jnp.abs(ratio - 1.0)),
        }
        return total, aux

    def learn(params, opt_state, key, traj: Transition, last_obs, obs_stats, drift_params, t):
        # The minibatch steps see the parameters as one flat vector (the network reads slices of it):
        # gradient clipping and Adam then run as a few fused loops instead of a few per leaf: a
        # one-seed CartPole learner went from 1.82 to 1.64 ms per update (this CPU, jax 0.10.2).
        flat_params, unravel = ravel_pytree(params)
        grad_fn = jax.value_and_grad(lambda p, *args: loss_fn(unravel(p), *args), has_aux=True)

        last_value = network.apply(params, prep(last_obs, obs_stats), method=network.value)
        rewards = traj.reward
        if config.bootstrap_truncation:
            final_value = network.apply(params, prep(traj.final_obs, obs_stats), method=network.value)
            rewards = rewards + config.gamma * final_value * traj.truncated
        adv, targets = gae(traj.value, rewards, traj.done, last_value, config.gamma, config.gae_lambda)

        samples = jax.tree_util.tree_map(
            lambda a: a.reshape((config.batch_size,) + a.shape[2:]),
            (traj.obs, traj.action, traj.log_prob, traj.value, adv, targets),
        )

        def epoch(carry, _):
            params, opt_state, key = carry
            key, k_perm = jax.random.split(key)
            perm = shuffle.permutation(k_perm, config.batch_size)  # no sort: see agents/shuffle.py
            minibatches = jax.tree_util.tree_map(
                lambda a: a[perm].reshape((config.num_minibatches, config.minibatch_size) + a.shape[1:]),
                samples,
            )

            def minibatch(carry, batch):
                params, opt_state = carry
                (loss, aux), grads = grad_fn(params, batch, drift_params, t)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
                aux = {**aux, "loss": loss, "grad_norm": optax.global_norm(grads)}
                return (params, opt_state), aux

            (params, opt_state), aux = jax.lax.scan(minibatch, (params, opt_state), minibatches)
            return (params, opt_state, key), aux

        (flat_params, opt_state, key), aux = jax.lax.scan(
            epoch, (flat_params, opt_state, key), None, config.update_epochs)
        return unravel(flat_params), opt_state, key, {k: jnp.mean(v) for k, v in aux.items()}

    return learn


def _unnormalized_rollout_obs(traj: Transition, state: RunnerState) -> jax.Array:
    """Recover the raw observations of a rollout from the normalised ones stored in it."""
    stats = state.obs_stats
    x = traj.obs.reshape(traj.obs.shape[:2] + tuple(stats.mean.shape))
    return x * jnp.sqrt(stats.var + 1e-8) + stats.mean


def make_train(config: PPOConfig, env: JaxEnv, drift: Drift) -> Callable[[jax.Array, Any], TrainOutput]:
    """A pure ``train(key, drift_params) -> TrainOutput``: the whole run as one ``lax.scan``.

    ``TrainOutput.metrics`` holds one value per update (loss terms, approximate KL, mean return of
    the episodes that ended during that update's rollout, NaN when none did).
    """
    init, update = make_train_parts(config, env, drift)

    def train(key, drift_params):
        state = init(key, drift_params)
        state, metrics = jax.lax.scan(lambda s, _: update(s, drift_params), state, None, config.num_updates)
        return TrainOutput(state.params, state.obs_stats, metrics)

    return train


def make_policy_fn(config: PPOConfig, env: JaxEnv) -> Callable:
    """``act(params, obs_stats, obs, key, deterministic) -> env action`` for a batch of raw observations."""
    network = make_network(config, env)
    spec = env.action_spec

    def act(params, obs_stats, obs, key, deterministic: bool):
        x = nets.flatten_obs(normalize(obs, obs_stats, config.normalize_obs), env.obs_shape, config.network)
        pi = network.apply(params, x, method=network.policy)
        action = nets.mode(spec, pi) if deterministic else nets.sample(spec, pi, key)
        return nets.to_env_action(spec, action)

    return act


def make_evaluate(config: PPOConfig, env: JaxEnv, n_episodes: int, max_steps: int | None = None) -> Callable:
    """``evaluate(params, obs_stats, key) -> returns (n_episodes,)``: deterministic episodes run in parallel.

    Each episode runs until its first termination or truncation (the environment's own time limit).
    """
    act = make_policy_fn(config, env)
    horizon = int(max_steps or env.max_episode_steps)

    def evaluate(params, obs_stats, key):
        k_reset, k_run = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(k_reset, n_episodes))

        def step(carry, _):
            obs, env_state, ret, alive, key = carry
            key, k_step = jax.random.split(key)
            action = act(params, obs_stats, obs, k_step, True)
            obs, env_state, reward, terminated, truncated, _ = jax.vmap(env.step)(
                jax.random.split(k_step, n_episodes), env_state, action
            )
            ret = ret + reward * alive
            alive = alive * (1.0 - jnp.logical_or(terminated, truncated))
            return (obs, env_state, ret, alive, key), None

        init = (obs, env_state, jnp.zeros(n_episodes), jnp.ones(n_episodes), k_run)
        (_, _, ret, _, _), _ = jax.lax.scan(step, init, None, horizon)
        return ret

    return evaluate
