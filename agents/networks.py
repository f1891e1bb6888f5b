"""Actor-critic networks and the two action distributions the core needs.

Separate actor and critic torsos (as in the paper's Brax PPO and purejaxrl), orthogonal
initialisation, a categorical head for discrete actions and a diagonal Gaussian with a
state-independent log standard deviation for continuous ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from agents.envs import ActionSpec

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        act = _ACTIVATIONS[self.activation]
        for size in self.hidden_sizes:
            x = act(nn.Dense(size, kernel_init=nn.initializers.orthogonal(np.sqrt(2)),
                             bias_init=nn.initializers.zeros)(x))
        return x


class MinAtarTorso(nn.Module):
    """A small conv torso for MinAtar's 10x10xC boolean grids, then an MLP."""

    hidden_sizes: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3), kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        return MLP(self.hidden_sizes, self.activation)(x)


class ActorCritic(nn.Module):
    action_spec: ActionSpec
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    torso: str = "mlp"

    def _torso(self, name):
        if self.torso == "minatar":
            return MinAtarTorso(self.hidden_sizes, self.activation, name=name)
        return MLP(self.hidden_sizes, self.activation, name=name)

    def setup(self):
        self.actor = self._torso("actor")
        self.critic = self._torso("critic")
        self.actor_head = nn.Dense(self.action_spec.dim, kernel_init=nn.initializers.orthogonal(0.01),
                                   bias_init=nn.initializers.zeros)
        self.critic_head = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), bias_init=nn.initializers.zeros)
        if not self.action_spec.discrete:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.action_spec.dim,))

    def __call__(self, obs):
        return self.policy(obs), self.value(obs)

    def policy(self, obs):
        """Logits (discrete) or ``(mean, log_std)`` (continuous)."""
        out = self.actor_head(self.actor(obs))
        if self.action_spec.discrete:
            return out
        return out, jnp.broadcast_to(self.log_std, out.shape)

    def value(self, obs):
        return self.critic_head(self.critic(obs))[..., 0]


def flatten_obs(obs: jax.Array, obs_shape: tuple[int, ...], torso: str) -> jax.Array:
    """Reshape ``(*batch, *obs_shape)`` for the torso: flattened features for MLPs, grids for conv."""
    batch = obs.shape[: obs.ndim - len(obs_shape)]
    if torso == "minatar":
        return obs.reshape(batch + tuple(obs_shape)).astype(jnp.float32)
    return obs.reshape(batch + (-1,)).astype(jnp.float32)


# -- distributions (pure functions on the policy head's output) ---------------------------------------
def sample(spec: ActionSpec, pi, key):
    if spec.discrete:
        return jax.random.categorical(key, pi)
    mean, log_std = pi
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)


def mode(spec: ActionSpec, pi):
    if spec.discrete:
        return jnp.argmax(pi, axis=-1)
    return pi[0]


def log_prob(spec: ActionSpec, pi, action):
    if spec.discrete:
        logp_all = jax.nn.log_softmax(pi)
        return jnp.take_along_axis(logp_all, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
    mean, log_std = pi
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def entropy(spec: ActionSpec, pi):
    if spec.discrete:
        logp_all = jax.nn.log_softmax(pi)
        return -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    _, log_std = pi
    return jnp.sum(log_std + 0.5 * (1.0 + jnp.log(2 * jnp.pi)), axis=-1)


def to_env_action(spec: ActionSpec, action):
    """What the environment receives: integer actions, or Gaussian samples clipped to the box."""
    if spec.discrete:
        return action.astype(jnp.int32)
    low = jnp.asarray(spec.low, dtype=jnp.float32).reshape(spec.shape)
    high = jnp.asarray(spec.high, dtype=jnp.float32).reshape(spec.shape)
    return jnp.clip(action.reshape(action.shape[:-1] + tuple(spec.shape)), low, high)
