"""A reference PPO written the way the public single-file JAX trainers (purejaxrl and its descendants) are.

Why it is here: ``throughput.py`` reports our training rate as a fraction of an env-only floor, and the
issue's target (14%) is set against "the best public implementations reach about 11%". That floor's
speed depends on the machine (random-bit generation especially), so a fraction alone cannot say
whether we or the machine moved. This peer, timed in the same run, calibrates it.

Written for this benchmark (not copied): the same algorithm and settings as ``PPOConfig``'s CartPole
defaults, in the common public style, i.e. what our core's optimisations are measured against:

* a fresh key split per rollout step, and gymnax's auto-reset ``step`` called with per-env keys;
* ``flax.linen.Dense`` layers (matmuls even for a rollout step's 4 rows), actor and critic evaluated
  together at every step;
* ``jax.random.permutation`` (a sort) for the minibatch shuffle;
* ``optax.chain(clip_by_global_norm, adam)`` over the parameter pytree, the LR annealed per update;
* a clipped surrogate, clipped value loss and entropy bonus; advantages normalised per minibatch.

It does a little less than our timed run: no bootstrap at truncation (ours evaluates the critic on each
rollout's final observations and stores them, ``bootstrap_truncation=True``) and PPO's clip instead of
the DPO drift, so ``vs_reference`` slightly understates our speed. Parameters are initialised with
``agents.networks.orthogonal`` (flax's orthogonal initialiser wedges XLA:CPU under vmap, see
docs/design.md); initialisation and the first reset run inside the timed ``train``, as ours do.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from agents.networks import orthogonal


class _ActorCritic(nn.Module):
    n_actions: int

    @nn.compact
    def __call__(self, x):
        a = nn.tanh(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)))(x))
        a = nn.tanh(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)))(a))
        logits = nn.Dense(self.n_actions, kernel_init=orthogonal(0.01))(a)
        c = nn.tanh(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)))(x))
        c = nn.tanh(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)))(c))
        return logits, nn.Dense(1, kernel_init=orthogonal(1.0))(c)[..., 0]


class _Step(NamedTuple):
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array


def make_reference_train(env, env_params, n_actions: int, total_timesteps: int = 500_000, num_envs: int = 4,
                         num_steps: int = 128, update_epochs: int = 4, num_minibatches: int = 4,
                         lr: float = 2.5e-4, gamma: float = 0.99, gae_lambda: float = 0.95, clip_eps: float = 0.2,
                         ent_coef: float = 0.01, vf_coef: float = 0.5, max_grad_norm: float = 0.5):
    """``train(key) -> (params, mean episode return per update)`` for a gymnax ``env`` with discrete actions."""
    num_updates = total_timesteps // (num_envs * num_steps)
    batch_size = num_envs * num_steps
    minibatch_size = batch_size // num_minibatches
    network = _ActorCritic(n_actions)

    def schedule(count):
        return lr * (1.0 - (count // (num_minibatches * update_epochs)) / num_updates)

    tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(schedule, eps=1e-5))

    def loss_fn(params, batch, advantages, targets):
        logits, value = network.apply(params, batch.obs)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), batch.action[:, None], axis=-1)[:, 0]
        value_clipped = batch.value + jnp.clip(value - batch.value, -clip_eps, clip_eps)
        value_loss = 0.5 * jnp.maximum((value - targets) ** 2, (value_clipped - targets) ** 2).mean()
        ratio = jnp.exp(log_prob - batch.log_prob)
        adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        actor_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv).mean()
        logp_all = jax.nn.log_softmax(logits)
        entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
        return actor_loss + vf_coef * value_loss - ent_coef * entropy

    grad_fn = jax.grad(loss_fn)

    def train(key):
        key, k_init, k_reset = jax.random.split(key, 3)
        params = network.init(k_init, jnp.zeros(env.observation_space(env_params).shape))
        opt_state = tx.init(params)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, num_envs), env_params)

        def env_step(carry, _):
            params, env_state, obs, ep_ret, key = carry
            key, k_act, k_env = jax.random.split(key, 3)
            logits, value = network.apply(params, obs)
            action = jax.random.categorical(k_act, logits)
            log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0]
            next_obs, env_state, reward, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_env, num_envs), env_state, action, env_params)
            done = jnp.logical_or(terminated, truncated)  # no bootstrap at truncation, as those trainers do
            ep_ret = ep_ret + reward
            finished = jnp.where(done, ep_ret, 0.0)
            step = _Step(obs, action, log_prob, value, reward, done.astype(jnp.float32))
            return (params, env_state, next_obs, jnp.where(done, 0.0, ep_ret), key), (step, finished)

        def update(carry, _):
            params, opt_state, env_state, obs, ep_ret, key = carry
            (_, env_state, obs, ep_ret, key), (traj, finished) = jax.lax.scan(
                env_step, (params, env_state, obs, ep_ret, key), None, num_steps)
            _, last_value = network.apply(params, obs)

            def gae_step(carry, step):
                gae, next_value = carry
                delta = step.reward + gamma * next_value * (1 - step.done) - step.value
                gae = delta + gamma * gae_lambda * (1 - step.done) * gae
                return (gae, step.value), gae

            _, advantages = jax.lax.scan(gae_step, (jnp.zeros_like(last_value), last_value), traj, reverse=True)
            targets = advantages + traj.value

            def epoch(carry, _):
                params, opt_state, key = carry
                key, k_perm = jax.random.split(key)
                perm = jax.random.permutation(k_perm, batch_size)
                data = jax.tree_util.tree_map(lambda a: a.reshape((batch_size,) + a.shape[2:])[perm].reshape(
                    (num_minibatches, minibatch_size) + a.shape[2:]), (traj, advantages, targets))

                def minibatch(carry, mb):
                    params, opt_state = carry
                    grads = grad_fn(params, *mb)
                    updates, opt_state = tx.update(grads, opt_state)
                    return (optax.apply_updates(params, updates), opt_state), None

                (params, opt_state), _ = jax.lax.scan(minibatch, (params, opt_state), data)
                return (params, opt_state, key), None

            (params, opt_state, key), _ = jax.lax.scan(epoch, (params, opt_state, key), None, update_epochs)
            n_done = traj.done.sum()
            mean_return = jnp.where(n_done > 0, finished.sum() / jnp.maximum(n_done, 1), jnp.nan)
            return (params, opt_state, env_state, obs, ep_ret, key), mean_return

        carry = (params, opt_state, env_state, obs, jnp.zeros(num_envs), key)
        (params, *_), returns = jax.lax.scan(update, carry, None, num_updates)
        return params, returns

    return train
