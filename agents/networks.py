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


def _gram_schmidt(a: jax.Array) -> jax.Array:
    """Orthonormal columns of ``a`` (m >= n) by classical Gram-Schmidt, re-orthogonalised once.

    Equals the ``Q`` of a QR decomposition with a positive ``R`` diagonal, i.e. what
    ``nn.initializers.orthogonal`` returns, but built from plain matmuls instead of LAPACK's QR.
    """
    m, n = a.shape

    def column(k, q):
        v = a[:, k]
        for _ in range(2):  # CGS2: the second pass removes what rounding left behind
            v = v - q @ (q.T @ v)
        return q.at[:, k].set(v / jnp.linalg.norm(v))

    return jax.lax.fori_loop(0, n, column, jnp.zeros((m, n), a.dtype))


def orthogonal(scale: float = 1.0):
    """Orthogonal initialiser (same distribution as flax's) that never calls LAPACK.

    Why: under ``vmap`` over seeds or an ES population, flax's initialiser becomes a *batched*
    LAPACK QR, which fans out over XLA:CPU's intra-op thread pool while the executable holds that
    pool's threads and wedges the process (reproduced here with 2-seed training: every thread
    asleep, ``block_until_ready`` never returns). Gram-Schmidt batches as ordinary matmuls.
    """

    def init(key, shape, dtype=jnp.float32):
        n_cols = shape[-1]
        n_rows = int(np.prod(shape)) // n_cols
        transpose = n_rows < n_cols
        m, n = (n_cols, n_rows) if transpose else (n_rows, n_cols)
        q = _gram_schmidt(jax.random.normal(key, (m, n), jnp.float32))
        if transpose:
            q = q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


class Dense(nn.Module):
    """``nn.Dense`` (same parameters, same flax name) that skips the matmul kernel for small products.

    Why: a rollout step evaluates the policy on one row per environment (4 for CartPole). XLA:CPU
    dispatches a dot to a matmul library at a fixed cost of about 0.5 µs, several times the
    arithmetic of a 4x64x64 product; as a broadcast multiply and sum it fuses with the bias and
    activation into one loop (policy per rollout step 2.0 -> 0.9 µs, jax 0.10.2). Only for small
    kernels: a 256x256 layer as multiply-and-sum is ~6x slower than its matmul even for one row
    (HalfCheetah's host policy step, 3 seeds: 4.0 vs 0.69 ms). Minibatches keep the matmul.
    """

    features: int
    kernel_init: object = nn.initializers.lecun_normal()
    bias_init: object = nn.initializers.zeros

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        rows = int(np.prod(x.shape[:-1]))
        if rows <= SMALL_BATCH_ROWS and kernel.size <= SMALL_KERNEL_SIZE:
            return jnp.sum(x[..., :, None] * kernel, axis=-2) + bias
        return matmul(x, kernel) + bias


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel`` whose weight gradient is computed as ``x^T g`` in the kernel's own orientation.

    Why: JAX's rule for a dot's right operand computes ``g^T x`` (shape ``(out, in)``) and transposes
    it. Inside our learner (vmapped over seeds, parameters raveled into one vector) XLA:CPU keeps that
    transpose as a copy and runs the transposed product through Eigen rather than folding it, so the
    weight gradients were the slowest dots of a minibatch step. Computed directly, the minibatch
    step's weight gradients need no transpose and a one-seed CartPole update went from ~2.75 to
    ~2.59 ms (jax 0.10.2, this 2-core CPU; benchmarks/README.md). Same values up to float rounding.
    Reverse mode only: ``jax.jvp`` through the network raises (nothing in the package uses it).
    """
    return x @ kernel


def _matmul_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _matmul_bwd(residuals, g):
    x, kernel = residuals
    rows = x.reshape(-1, x.shape[-1])
    return g @ kernel.T, jnp.einsum("bi,bj->ij", rows, g.reshape(-1, g.shape[-1]))


matmul.defvjp(_matmul_fwd, _matmul_bwd)


SMALL_BATCH_ROWS = 16
SMALL_KERNEL_SIZE = 64 * 64


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        act = _ACTIVATIONS[self.activation]
        for size in self.hidden_sizes:
            x = act(Dense(size, kernel_init=orthogonal(np.sqrt(2)), bias_init=nn.initializers.zeros)(x))
        return x


class PatchConv(nn.Module):
    """A stride-1, SAME-padded 2-D convolution computed as one matmul over stacked patches.

    Same parameters (``kernel`` of shape ``(kh, kw, C, features)``, ``bias``) and the same result
    as ``nn.Conv(features, (kh, kw))``. Why not ``nn.Conv``: inside ``lax.scan`` (our whole
    training loop) XLA:CPU runs the convolution's *gradient* about 10x slower than outside it
    (150 vs 15 ms for 1024 MinAtar grids, measured with jax 0.10.2), while the patch matmul runs at
    6 ms in the scan. See docs/design.md, "Measured facts".
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    kernel_init: object = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        height, width = x.shape[-3], x.shape[-2]
        top, left = (kh - 1) // 2, (kw - 1) // 2
        pad = [(0, 0)] * (x.ndim - 3) + [(top, kh - 1 - top), (left, kw - 1 - left), (0, 0)]
        padded = jnp.pad(x, pad)
        # Patch feature order (i, j, c) matches the kernel's row-major (kh, kw, C) layout.
        patches = jnp.concatenate(
            [padded[..., i:i + height, j:j + width, :] for i in range(kh) for j in range(kw)], axis=-1)
        return matmul(patches, kernel.reshape(kh * kw * channels, self.features)) + bias


class MinAtarTorso(nn.Module):
    """A small conv torso for MinAtar's 10x10xC boolean grids, then an MLP."""

    hidden_sizes: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        # Named as flax names an nn.Conv, so agents saved before PatchConv still load.
        x = nn.relu(PatchConv(16, (3, 3), kernel_init=orthogonal(np.sqrt(2)), name="Conv_0")(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        return MLP(self.hidden_sizes, self.activation)(x)


class ActorCritic(nn.Module):
    action_spec: ActionSpec
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    torso: str = "mlp"
    log_std_init: float = 0.0
    value_hidden_sizes: Sequence[int] | None = None  # the critic's (None: hidden_sizes, as the actor's)

    def _torso(self, name, sizes):
        if self.torso == "minatar":
            return MinAtarTorso(sizes, self.activation, name=name)
        return MLP(sizes, self.activation, name=name)

    def setup(self):
        self.actor = self._torso("actor", self.hidden_sizes)
        self.critic = self._torso("critic", self.hidden_sizes if self.value_hidden_sizes is None else self.value_hidden_sizes)
        self.actor_head = Dense(self.action_spec.dim, kernel_init=orthogonal(0.01),
                                bias_init=nn.initializers.zeros)
        self.critic_head = Dense(1, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)
        if not self.action_spec.discrete:
            self.log_std = self.param("log_std", nn.initializers.constant(self.log_std_init), (self.action_spec.dim,))

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


def sample_noise(spec: ActionSpec, key, batch_shape):
    """The randomness behind :func:`sample_from_noise`, drawn in advance for many steps at once."""
    if spec.discrete:
        return jax.random.gumbel(key, tuple(batch_shape) + (spec.n,))
    return jax.random.normal(key, tuple(batch_shape) + (spec.dim,))


def sample_from_noise(spec: ActionSpec, pi, noise):
    """Sample with pre-drawn noise: Gumbel-max for categoricals, reparameterised Gaussians."""
    if spec.discrete:
        return jnp.argmax(pi + noise, axis=-1)
    mean, log_std = pi
    return mean + jnp.exp(log_std) * noise


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
