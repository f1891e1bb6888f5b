"""Frozen hyperparameter configuration of the PPO core, with per-family defaults."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

MAX_LAYERS = 64
MAX_LAYER_WIDTH = 1 << 16


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of one Mirror-Learning PPO run.

    The defaults are the classic-control setting of the paper's CartPole experiments (4 envs x 128
    steps, 4 epochs x 4 minibatches, lr 2.5e-4 annealed). ``preset(family)`` gives other families' ones.
    """

    total_timesteps: int = 500_000
    num_envs: int = 4
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2          # value-function clipping (the policy side is the drift's job)
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    max_grad_norm: float = 0.5
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    normalize_obs: bool = False
    reward_scale: float = 1.0
    bootstrap_truncation: bool = True  # add gamma * V(final obs) to the reward on time-limit truncation
    network: str = "mlp"           # "mlp" or "minatar" (a small conv torso for 10x10xC grids)
    clip_value: bool = True        # PPO2-style value clipping by clip_eps (Stable-Baselines3's default is off)
    log_std_init: float = 0.0      # initial log standard deviation of the Gaussian policy (continuous actions)
    value_hidden_sizes: tuple[int, ...] | None = None  # the critic's hidden layers (None: hidden_sizes)
    normalize_reward: bool = False  # divide rewards by a running std of the discounted return (after reward_scale)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    def validate(self) -> PPOConfig:
        """Raise ``ValueError`` naming the inconsistent numbers; return ``self`` when all is well."""
        positive_ints = ("total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        reals = ("learning_rate", "max_grad_norm", "reward_scale", "gamma", "gae_lambda", "vf_coef", "ent_coef",
                 "clip_eps", "log_std_init")
        for name in reals:  # before comparing: '0.1' > 0 would raise a TypeError that names nothing
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for name in ("learning_rate", "max_grad_norm", "reward_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("vf_coef", "ent_coef", "clip_eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"the batch of num_envs x num_steps = {self.num_envs} x {self.num_steps} = {self.batch_size} "
                f"samples does not split into num_minibatches = {self.num_minibatches} equal minibatches; "
                f"choose num_minibatches dividing {self.batch_size}"
            )
        if self.num_updates >= 2**31 or self.total_timesteps >= 2**53:  # the update counter is an int32
            raise ValueError(f"total_timesteps = {self.total_timesteps} is too large: {self.num_updates} updates of "
                             f"{self.batch_size} samples exceed what one run can count (2**31 updates)")
        if self.total_timesteps < self.batch_size:
            raise ValueError(
                f"total_timesteps = {self.total_timesteps} is less than one batch "
                f"(num_envs x num_steps = {self.batch_size}); raise total_timesteps or shrink the batch "
                "(num_envs, num_steps; --set on the command line)"
            )
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {self.activation!r}")
        if self.network not in ("mlp", "minatar"):
            raise ValueError(f"network must be 'mlp' or 'minatar', got {self.network!r}")
        for name in ("clip_value", "normalize_reward", "normalize_obs", "anneal_lr", "bootstrap_truncation"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not -20.0 <= self.log_std_init <= 5.0:
            raise ValueError(f"log_std_init must be in [-20, 5] (a standard deviation of e^-20 to e^5), "
                             f"got {self.log_std_init!r}")
        layer_sizes = {"hidden_sizes": self.hidden_sizes}
        if self.value_hidden_sizes is not None:  # None: the critic takes hidden_sizes
            layer_sizes["value_hidden_sizes"] = self.value_hidden_sizes
        for name, sizes in layer_sizes.items():
            if (isinstance(sizes, str) or not isinstance(sizes, Sequence) or not sizes
                    or any(not isinstance(h, numbers.Integral) or isinstance(h, bool) or h <= 0 for h in sizes)):
                raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {sizes!r}")
            if len(sizes) > MAX_LAYERS or any(h > MAX_LAYER_WIDTH for h in sizes):
                # far above any network trained here; an edit such as (10**18,) failed deep inside JAX
                raise ValueError(f"{name} {list(sizes)[:8]} exceeds the limit of {MAX_LAYERS} layers of at most "
                                 f"{MAX_LAYER_WIDTH} units")
        return self

    def replace(self, **changes: Any) -> PPOConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        out["value_hidden_sizes"] = None if self.value_hidden_sizes is None else list(self.value_hidden_sizes)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> PPOConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown PPOConfig fields {sorted(unknown)}")
        data = dict(data)
        for name in ("hidden_sizes", "value_hidden_sizes"):
            if data.get(name) is not None:
                data[name] = tuple(int(h) for h in data[name])
        return cls(**data)


# Per-family defaults. Classic control: the paper's / purejaxrl's CartPole setting. MinAtar: the
# published purejaxrl MinAtar setting. Brax: Brax PPO's defaults as used by the paper (Table 1 for ant).
PRESETS: dict[str, dict[str, Any]] = {
    "classic": {},
    "minatar": dict(
        total_timesteps=10_000_000, num_envs=64, num_steps=128, update_epochs=4, num_minibatches=8,
        learning_rate=5e-3, anneal_lr=True, gamma=0.99, gae_lambda=0.95, ent_coef=0.01, max_grad_norm=0.5,
        network="minatar", activation="relu",
    ),
    "continuous": dict(
        total_timesteps=1_000_000, num_envs=8, num_steps=256, update_epochs=10, num_minibatches=32,
        learning_rate=3e-4, anneal_lr=True, gamma=0.99, gae_lambda=0.95, ent_coef=0.0, max_grad_norm=0.5,
        normalize_obs=True, reward_scale=0.1,
    ),
    # RL-Zoo's tuned PPO for HalfCheetah (rl-baselines3-zoo hyperparams/ppo.yml), which the generic
    # continuous preset trails by ~40% at 1M steps (docs/results.md). Stable-Baselines3 also divides
    # rewards by a running std of the discounted return; here a fixed scale of 0.02 keeps values O(1-10)
    # (one seed at 150k steps: evaluation return 3572 with 0.02, 2318 with the generic 0.1).
    "mujoco:HalfCheetah": dict(
        total_timesteps=1_000_000, num_envs=1, num_steps=512, update_epochs=20, num_minibatches=8,
        learning_rate=2.0633e-05, anneal_lr=False, gamma=0.98, gae_lambda=0.92, ent_coef=0.000401762,
        vf_coef=0.58096, max_grad_norm=0.8, hidden_sizes=(256, 256), activation="relu", log_std_init=-2.0,
        clip_value=False, normalize_obs=True, reward_scale=0.02,
    ),
    "brax": dict(
        total_timesteps=30_000_000, num_envs=2048, num_steps=5, update_epochs=4, num_minibatches=32,
        learning_rate=3e-4, anneal_lr=False, gamma=0.97, gae_lambda=0.95, ent_coef=1e-2, max_grad_norm=1.0,
        normalize_obs=True, reward_scale=0.1, hidden_sizes=(32, 32, 32, 32), value_hidden_sizes=(256,) * 5,
        activation="tanh",
    ),
}


# The paper ran Brax's own PPO with its per-environment training defaults (Brax v1 notebook; Table 1
# for ant) and Brax's networks: a 32x4 policy and a 256x5 value network (on brax:ant at 30M steps,
# Brax's trainer scored 4021 +- 1741 against 2218 +- 178 for ours with a 32x4 critic: docs/results.md).
# Brax's update collects batch_size x num_minibatches unrolls of unroll_length steps; here that is
# num_envs = 2048 parallel envs x num_steps = unroll_length x batch_size x num_minibatches / 2048,
# so each update learns from the same number of samples in the same minibatch sizes.
_BRAX_PAPER = {  # name: (timesteps, reward_scaling, unroll_length, batch_size, epochs, discounting, entropy_cost)
    "ant": (30_000_000, 10.0, 5, 1024, 4, 0.97, 1e-2),
    "humanoid": (50_000_000, 0.1, 10, 1024, 8, 0.97, 1e-3),
    "halfcheetah": (100_000_000, 1.0, 20, 512, 8, 0.95, 1e-3),
    "reacher": (100_000_000, 5.0, 50, 256, 8, 0.95, 1e-3),
}
for _name, (_steps, _scale, _unroll, _batch, _epochs, _gamma, _ent) in _BRAX_PAPER.items():
    PRESETS[f"brax:{_name}"] = {
        **PRESETS["brax"], "total_timesteps": _steps, "reward_scale": _scale, "num_envs": 2048,
        "num_steps": _unroll * _batch * 32 // 2048, "num_minibatches": 32, "update_epochs": _epochs,
        "gamma": _gamma, "ent_coef": _ent,
    }


def parse_override(item: str) -> tuple[str, Any]:
    """``"FIELD=VALUE"`` (a command line's ``--set``) as ``(field, value)``: Python literals
    (``3e-4``, ``True``, ``(256, 256)``), else the text (``relu``). Unknown fields are named."""
    import ast
    import difflib

    field, sep, text = item.partition("=")
    field = field.strip()
    if not sep or not field:
        raise ValueError(f"{item!r}: expected FIELD=VALUE, e.g. normalize_reward=True")
    if field not in PPOConfig.__dataclass_fields__:
        close = difflib.get_close_matches(field, PPOConfig.__dataclass_fields__, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{field!r} is not a PPOConfig field.{hint} Fields: {', '.join(PPOConfig.__dataclass_fields__)}")
    try:
        return field, ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return field, text.strip()


def brax_preset(name: str, **overrides: Any) -> PPOConfig:
    """The paper's Brax PPO hyperparameters for ``name`` (e.g. ``"ant"``); other envs get Table 1's."""
    key = f"brax:{name}" if f"brax:{name}" in PRESETS else "brax"
    return PPOConfig(**{**PRESETS[key], **overrides})


def preset(family: str, **overrides: Any) -> PPOConfig:
    """The default configuration for an environment family, with ``overrides`` applied."""
    if family not in PRESETS:
        raise ValueError(f"unknown preset {family!r}; known: {sorted(PRESETS)}")
    return PPOConfig(**{**PRESETS[family], **overrides})
