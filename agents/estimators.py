"""Scikit-learn-like estimators around the jitted PPO core.

The constructor stores hyperparameters only; ``fit`` resolves the environment, builds the
configuration (family preset + the hyperparameters you set), checks the drift, and trains
``n_seeds`` independent runs in one vmapped, jitted call. Learned state ends with ``_``.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents.config import PPOConfig, preset
from agents.core import make_evaluate, make_policy_fn, make_train_parts
from agents.envs import JaxEnv, make_env
from drifts.base import Drift
from drifts.library import dpo, get_drift, ppo

CONFIG_FIELDS = tuple(f for f in PPOConfig.__dataclass_fields__)


class NotFittedError(RuntimeError):
    """``predict``/``evaluate``/``save`` called before ``fit``."""


class TrainingDivergedError(RuntimeError):
    """NaN or inf appeared in the loss or the parameters during training."""


class DriftConditionError(ValueError):
    """The drift violates a Mirror Learning drift condition (see ``drifts.check_drift``)."""


def _check_seed(name: str, value: Any) -> None:
    # Gymnasium refuses negative seeds, so they are refused for every family alike (and 1.7 is not a seed)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < 2**32:
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {value!r}")


def _same_value(a: Any, b: Any) -> bool:
    """``a == b`` that never raises (numpy arrays compare elementwise, so ``==`` is not a truth value)."""
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (grid searches built with ``np.arange`` pass them)."""
    return value.item() if isinstance(value, np.generic) else value


class MirrorAgent:
    """A Mirror-Learning PPO agent whose policy objective is ``E[r A] - E[drift(r, A)]``.

    Hyperparameters left as ``None`` take the environment family's defaults
    (``agents.config.PRESETS``); the rest override them. ``drift`` is a ``Drift``, a name
    (``"ppo"``, ``"dpo"``, ``"lpo"``), a drift file or any function ``f(r, A)``.
    """

    def __init__(
        self,
        drift: Any = "ppo",
        *,
        total_timesteps: int | None = None,
        num_envs: int | None = None,
        num_steps: int | None = None,
        update_epochs: int | None = None,
        num_minibatches: int | None = None,
        learning_rate: float | None = None,
        anneal_lr: bool | None = None,
        gamma: float | None = None,
        gae_lambda: float | None = None,
        clip_eps: float | None = None,
        vf_coef: float | None = None,
        ent_coef: float | None = None,
        max_grad_norm: float | None = None,
        hidden_sizes: tuple[int, ...] | None = None,
        activation: str | None = None,
        normalize_obs: bool | None = None,
        reward_scale: float | None = None,
        bootstrap_truncation: bool | None = None,
        network: str | None = None,
        clip_value: bool | None = None,
        log_std_init: float | None = None,
        value_hidden_sizes: tuple[int, ...] | None = None,
        normalize_reward: bool | None = None,
        n_seeds: int = 1,
        seed: int = 0,
        progress: bool = False,
        check_drift: bool = True,
        policy_seed: int = 0,
    ):
        self.drift = drift
        self.total_timesteps = total_timesteps
        self.num_envs = num_envs
        self.num_steps = num_steps
        self.update_epochs = update_epochs
        self.num_minibatches = num_minibatches
        self.learning_rate = learning_rate
        self.anneal_lr = anneal_lr
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.clip_eps = clip_eps
        self.vf_coef = vf_coef
        self.ent_coef = ent_coef
        self.max_grad_norm = max_grad_norm
        self.hidden_sizes = hidden_sizes
        self.activation = activation
        self.normalize_obs = normalize_obs
        self.reward_scale = reward_scale
        self.bootstrap_truncation = bootstrap_truncation
        self.network = network
        self.clip_value = clip_value
        self.log_std_init = log_std_init
        self.value_hidden_sizes = value_hidden_sizes
        self.normalize_reward = normalize_reward
        self.n_seeds = n_seeds
        self.seed = seed
        self.progress = progress
        self.check_drift = check_drift
        self.policy_seed = policy_seed

    # -- scikit-learn conventions -------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            if "__init__" not in klass.__dict__ or klass is object:
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names:
                    names.append(p.name)
        if cls is not MirrorAgent and "drift" in names and "drift" not in inspect.signature(cls.__init__).parameters:
            names.remove("drift")
        return names

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> MirrorAgent:
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        """scikit-learn's estimator tags (its tools ask for them): not a classifier or regressor; ``fit``
        takes an environment, not arrays, and training is stochastic across seeds."""
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False), non_deterministic=True,
                    input_tags=InputTags(two_d_array=False), no_validation=True)

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(MirrorAgent.__init__).parameters.values()}
        for klass in type(self).__mro__:
            if "__init__" in klass.__dict__ and klass is not object:
                for p in inspect.signature(klass.__init__).parameters.values():
                    defaults.setdefault(p.name, p.default)
        shown = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same_value(defaults.get(k), v)]
        return f"{type(self).__name__}({', '.join(shown)})"

    # -- configuration ------------------------------------------------------------------------------
    def make_drift(self) -> Drift:
        """The drift this agent optimises with (resolved from ``drift``)."""
        if self.drift is None:
            raise ValueError("drift is None: pass a Drift, a name ('ppo', 'dpo', 'lpo'), a file or f(r, A)")
        return get_drift(self.drift)

    def make_config(self, env: JaxEnv | str) -> PPOConfig:
        """The full configuration ``fit`` would use on ``env``: its family preset plus your overrides."""
        env = make_env(env) if not isinstance(env, JaxEnv) else env
        overrides = self.config_overrides()
        user_vec_envs = len(getattr(env, "env_fns", ()))
        if user_vec_envs > 1:  # a user's vector env of N sub-envs trains N
            # Sub-envs from one factory (gym.make_vec of an id) are interchangeable; separate factories may
            # be separate tasks, and another num_envs would silently leave some out or repeat others.
            distinct = len({id(fn) for fn in env.env_fns}) > 1
            if overrides.setdefault("num_envs", user_vec_envs) != user_vec_envs and distinct:
                raise ValueError(f"num_envs={overrides['num_envs']} but the vector env {env.id!r} has {user_vec_envs} "
                                 f"sub-environments from separate factories (possibly separate tasks): training would "
                                 f"{'leave some out' if overrides['num_envs'] < user_vec_envs else 'repeat some'}. "
                                 f"Drop num_envs (or set num_envs={user_vec_envs}), or pass a vector env of the size "
                                 "you want")
        config = preset(getattr(env, "preset", "classic"), **overrides).validate()
        if config.network == "minatar" and len(env.obs_shape) != 3:
            raise ValueError(f"network='minatar' (a convolutional torso) needs image observations of shape (H, W, C); "
                             f"{env.id!r} has observations of shape {tuple(env.obs_shape)}: use network='mlp'")
        return config

    def config_overrides(self) -> dict:
        """The hyperparameters you set (not None), as plain Python values, that replace the preset's."""
        overrides = {k: _plain(getattr(self, k)) for k in CONFIG_FIELDS if getattr(self, k, None) is not None}
        for name in ("hidden_sizes", "value_hidden_sizes"):
            sizes = overrides.get(name)
            if sizes is None:
                continue
            if isinstance(sizes, str) or not isinstance(sizes, Sequence | np.ndarray):
                raise ValueError(f"{name} must be a sequence of positive integers such as (64, 64), got {sizes!r}")
            overrides[name] = tuple(_plain(h) for h in sizes)
        return overrides

    def _validate_run_params(self) -> None:
        for name in ("n_seeds",):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        _check_seed("seed", self.seed)

    # -- training -----------------------------------------------------------------------------------
    def fit(self, env: Any) -> MirrorAgent:
        """Train ``n_seeds`` independent runs on ``env``; returns ``self``."""
        self._validate_run_params()
        env_adapter = make_env(env)
        if not isinstance(env_adapter, JaxEnv):
            from agents import host  # host-stepped Gymnasium environments

            return host.fit_host(self, env_adapter)
        config = self.make_config(env_adapter)
        warn_partial_batch(self, config)
        drift = self.make_drift()
        if self.check_drift:
            verify_drift(drift)
        train = _compiled_train(config, env_adapter, drift.fn, drift.temporal, int(self.n_seeds), bool(self.progress))
        keys = shard_seeds(jax.random.split(jax.random.PRNGKey(int(self.seed)), int(self.n_seeds)))
        if self.progress:
            from agents.progress import ProgressBar

            bar = ProgressBar(config.num_updates * config.batch_size, config.batch_size,
                              desc=f"{type(self).__name__}[{drift.name}] {env_adapter.id}", n_seeds=int(self.n_seeds))
            _PROGRESS_SINK[0] = bar
        try:
            params, obs_stats, metrics = train(keys, drift.params)
            metrics = jax.device_get(metrics)
        finally:
            if self.progress:
                _PROGRESS_SINK[0].close()
                _PROGRESS_SINK[0] = None
        history = {k: np.asarray(v) for k, v in metrics.items()}
        _raise_if_diverged(history, params, drift)
        self._set_fitted(config, env_adapter, drift, params, obs_stats, history)
        return self

    def _set_fitted(self, config, env_adapter, drift, params, obs_stats, history) -> None:
        self.config_ = config
        self.env_id_ = env_adapter.id
        self.env_spaces_ = env_adapter.spaces()
        self.env_ = env_adapter
        self.drift_ = drift
        self.params_ = params
        self.obs_stats_ = obs_stats
        history["timesteps"] = (np.arange(1, config.num_updates + 1) * config.batch_size).astype(np.int64)
        self.history_ = history
        self.n_seeds_ = int(jax.tree_util.tree_leaves(params)[0].shape[0])
        self.num_timesteps_ = int(config.num_updates * config.batch_size)

    # -- using the policy ---------------------------------------------------------------------------
    def _check_fitted(self, what: str) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(env) before {what}()")

    def _seed_params(self):
        if isinstance(self.policy_seed, bool) or not isinstance(self.policy_seed, (int, np.integer)):
            raise ValueError(f"policy_seed must be the index of a trained seed (an integer), got {self.policy_seed!r}")
        seed = int(self.policy_seed)
        if not 0 <= seed < self.n_seeds_:
            raise ValueError(f"policy_seed={seed} but the agent has {self.n_seeds_} seeds (0..{self.n_seeds_ - 1})")
        pick = functools.partial(lambda i, x: x[i], seed)
        return jax.tree_util.tree_map(pick, self.params_), jax.tree_util.tree_map(pick, self.obs_stats_)

    def predict(self, obs: Any, deterministic: bool = True, key: Any = None) -> np.ndarray:
        """Action(s) for one observation or a batch (numpy in, numpy out), from seed ``policy_seed``."""
        self._check_fitted("predict")
        if not isinstance(deterministic, (bool, np.bool_)):  # None or "no" would silently sample / act greedily
            raise ValueError(f"deterministic must be True or False, got {deterministic!r}")
        obs_shape = tuple(self.env_spaces_["obs_shape"])
        expected = f"expected {obs_shape} (one observation) or (batch, {', '.join(map(str, obs_shape))})"
        try:
            x = np.asarray(obs, dtype=np.float32)
        except (ValueError, TypeError):
            hint = ("; env.reset() returns (obs, info): unpack it with `obs, _ = env.reset()`"
                    if isinstance(obs, tuple) and len(obs) == 2 and isinstance(obs[1], dict) else "")
            raise ValueError(f"observation must be an array of numbers, got {type(obs).__name__}; {expected}{hint}") from None
        if obs_shape == (1,) and x.ndim <= 1 and x.shape != obs_shape:  # a Box(shape=()) space is learnt as (1,)
            x = x.reshape(-1, 1) if x.ndim == 1 else x.reshape(1)  # (n,): n scalar observations; (): one
        single = x.shape == obs_shape
        if single:
            x = x[None]
        elif x.ndim != len(obs_shape) + 1 or x.shape[1:] != obs_shape:
            raise ValueError(f"observation has shape {x.shape}, {expected}")
        if not np.all(np.isfinite(x)):
            raise ValueError("observation contains NaN or inf")
        key = self._predict_key(key)
        params, stats = self._seed_params()
        act = _compiled_policy(self.config_, self._policy_env(), bool(deterministic))
        empty = len(x) == 0
        if empty:  # one dummy row gives the actions' dtype and trailing shape; the jitted policy needs a row
            x = np.zeros((1,) + obs_shape, np.float32)
        action = np.asarray(act(params, stats, jnp.asarray(x), key))
        return action[:0] if empty else action[0] if single else action

    def _predict_key(self, key: Any) -> jax.Array:
        """A PRNG key for stochastic actions from None (a fresh one per call), an integer seed or a JAX key."""
        if key is None:
            self._predict_calls = getattr(self, "_predict_calls", 0) + 1
            return jax.random.PRNGKey(hash((int(self.seed), self._predict_calls)) & 0x7FFFFFFF)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            _check_seed("key", key)  # PRNGKey keeps 32 bits: 2**32 would silently be the key of 0
            return jax.random.PRNGKey(int(key))
        if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        if not (isinstance(key, (jax.Array, np.ndarray)) and key.shape == (2,) and key.dtype == np.uint32):
            raise ValueError(f"key must be None, an integer seed or a JAX PRNG key such as jax.random.PRNGKey(0), "
                             f"got {key!r}")
        return jnp.asarray(key)

    def _policy_env(self) -> JaxEnv:
        return self.env_

    def evaluate(self, env: Any = None, n_episodes: int = 10, seed: int = 0) -> dict:
        """Deterministic evaluation of every seed's policy.

        Returns ``{"mean_return", "std_return", "returns"}`` with ``returns`` of shape
        ``(n_seeds, n_episodes)`` and mean/std over all of them.
        """
        self._check_fitted("evaluate")
        if not isinstance(n_episodes, (int, np.integer)) or isinstance(n_episodes, bool) or n_episodes < 1:
            raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
        _check_seed("seed", seed)
        if env is None:
            reusable = getattr(self.env_, "reset", None) is not None or getattr(self.env_, "make_vec", None)
            env = self.env_ if reusable else self.env_id_
            try:
                env_adapter = make_env(env)
            except (ValueError, KeyError, TypeError) as err:
                # e.g. a loaded agent trained on a custom gymnasium.Env or an unregistered gymnax class:
                # its id names the environment but cannot rebuild it
                raise ValueError(f"cannot re-create the environment this agent was trained on ({self.env_id_!r}) "
                                 f"from its id: {err}. Pass it explicitly: agent.evaluate(env)") from None
        else:
            env_adapter = make_env(env)
        self._check_same_spaces(env_adapter)
        if not isinstance(env_adapter, JaxEnv):
            from agents import host

            returns = host.evaluate_host(self, env_adapter, int(n_episodes), int(seed))
        else:
            evaluate = _compiled_evaluate(self.config_, env_adapter, int(n_episodes))
            returns = np.asarray(evaluate(self.params_, self.obs_stats_, jax.random.PRNGKey(int(seed))))
        return {"mean_return": float(returns.mean()), "std_return": float(returns.std()), "returns": returns}

    def score(self, env: Any = None, n_episodes: int = 10, seed: int = 0) -> float:
        """Mean evaluation return over all seeds (scikit-learn's ``score`` convention: higher is better)."""
        return self.evaluate(env, n_episodes=n_episodes, seed=seed)["mean_return"]

    def _check_same_spaces(self, env_adapter) -> None:
        spaces = env_adapter.spaces()
        if spaces != self.env_spaces_:
            raise ValueError(
                f"environment {env_adapter.id!r} has spaces {spaces}, but this agent was trained on "
                f"{self.env_id_!r} with spaces {self.env_spaces_}; evaluate on an environment with the same spaces"
            )

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> os.PathLike:
        """Save to a versioned, pickle-free file (atomic write). Load with ``MirrorAgent.load``."""
        from agents.checkpoint import save_agent

        self._check_fitted("save")
        return save_agent(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> MirrorAgent:
        """Load a saved agent. ``MirrorAgent.load`` returns whatever estimator the file holds; a subclass
        (``PPO.load``) refuses a file saved by another one rather than hand back an agent of a type the
        caller did not ask for."""
        from agents.checkpoint import load_agent

        agent = load_agent(path)
        if not isinstance(agent, cls):
            saved = type(agent).__name__
            raise TypeError(f"{os.fspath(path)} holds a {saved} agent, not a {cls.__name__}; load it with "
                            f"{saved}.load(...) or MirrorAgent.load(...), which returns whichever agent a file holds")
        return agent


class PPO(MirrorAgent):
    """PPO: Mirror Learning with the clip drift ``ReLU((r - clip(r, 1 - eps, 1 + eps)) A)``."""

    def __init__(self, eps: float = 0.2, **kwargs: Any):
        _refuse_drift_argument("PPO", "eps=...", kwargs)
        super().__init__(drift=None, **kwargs)
        self.eps = eps

    def make_drift(self) -> Drift:
        return ppo(self.eps)


class DPO(MirrorAgent):
    """Discovered Policy Optimisation (the paper's eq. 9; ``alpha = 2``, ``beta = 0.6``)."""

    def __init__(self, alpha: float = 2.0, beta: float = 0.6, **kwargs: Any):
        _refuse_drift_argument("DPO", "alpha=... and beta=...", kwargs)
        super().__init__(drift=None, **kwargs)
        self.alpha = alpha
        self.beta = beta

    def make_drift(self) -> Drift:
        return dpo(self.alpha, self.beta)


class LPO(MirrorAgent):
    """Learnt Policy Optimisation: a meta-learned drift network (the package's shipped one by default).

    The shipped network was meta-trained on CartPole-v1 alone at a 16,384-step budget: there it doubles
    PPO's return, but it does not transfer (it fails on continuous control and trails PPO at larger
    budgets; docs/results.md, "Does a discovered drift transfer?"). Elsewhere prefer PPO or DPO, or pass
    ``drift_file=`` a drift meta-trained for your tasks.
    """

    def __init__(self, drift_file: str | os.PathLike | None = None, **kwargs: Any):
        _refuse_drift_argument("LPO", "drift_file=..., a learned drift file (default: the shipped network),", kwargs)
        super().__init__(drift=None, **kwargs)
        self.drift_file = drift_file

    def make_drift(self) -> Drift:
        if self.drift_file is None:
            return get_drift("lpo")
        drift = get_drift(self.drift_file)
        if drift.family not in ("lpo", "lpo_zero"):  # e.g. drift_file="dpo" would train DPO under LPO's name
            raise ValueError(f"LPO(drift_file={self.drift_file!r}) gives the {drift.name!r} drift, not a learned drift "
                             "network; pass a learned drift file (e.g. a meta-train run's drift.drift), or use "
                             f"MirrorAgent(drift={self.drift_file!r}) for any other drift")
        return drift


# -- helpers shared by the estimators -------------------------------------------------------------------
def _refuse_drift_argument(estimator: str, own: str, kwargs: dict) -> None:
    """PPO/DPO/LPO fix their drift family, so ``drift=`` is an error that names what to pass instead."""
    if "drift" in kwargs:
        others = [f"{name}()" for name in ("PPO", "DPO", "LPO") if name != estimator]
        raise TypeError(f"{estimator} takes {own} not drift=; for any other drift use MirrorAgent(drift=...), "
                        f"{others[0]} or {others[1]}")


def warn_partial_batch(agent: MirrorAgent, config: PPOConfig, stacklevel: int = 3) -> None:
    """Training runs whole updates of num_envs x num_steps samples (purejaxrl's convention), so a budget
    that is not a multiple of the batch is rounded down. Say so when that drops 5% or more of a budget the
    user chose (1,000 steps in batches of 512 train 512), not for the usual rounding of a large budget
    (500,000 in batches of 512 train 499,712; 300,000 in MinAtar's batches of 8,192 train 294,912)."""
    done = config.num_updates * config.batch_size
    if agent.total_timesteps is None or config.total_timesteps - done < 0.05 * config.total_timesteps:
        return
    warnings.warn(
        f"total_timesteps={config.total_timesteps} is not a multiple of the batch (num_envs x num_steps = "
        f"{config.num_envs} x {config.num_steps} = {config.batch_size}): training runs {config.num_updates} whole "
        f"update{'s' if config.num_updates != 1 else ''}, {done} steps (num_timesteps_). "
        f"Choose a multiple of {config.batch_size} to silence this.",
        UserWarning, stacklevel=stacklevel)


def verify_drift(drift: Drift) -> None:
    """Raise :class:`DriftConditionError` naming the violated condition if ``drift`` is not valid."""
    from drifts.checks import check_drift

    report = _cached_check(drift)
    if report is None:
        report = check_drift(drift)
        _remember_check(drift, report)
    if not report.valid:
        raise DriftConditionError(
            f"drift {drift.name!r} violates the drift conditions, so Mirror Learning's guarantees do not hold:\n"
            f"{report}\nFix the drift, or pass check_drift=False (--no-check-drift on the command line) to train with it anyway."
        )


_CHECK_CACHE: dict[Any, Any] = {}


def _drift_key(drift: Drift):
    leaves = [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(drift.params)]
    return (drift.fn, drift.temporal, tuple(leaves))


def _cached_check(drift: Drift):
    return _CHECK_CACHE.get(_drift_key(drift))


def _remember_check(drift: Drift, report) -> None:
    if len(_CHECK_CACHE) > 256:
        _CHECK_CACHE.clear()
    _CHECK_CACHE[_drift_key(drift)] = report


def _raise_if_diverged(history: dict, params, drift: Drift) -> None:
    loss = history["loss"]
    bad = ~np.isfinite(loss)
    params_ok = all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(params))
    if bad.any() or not params_ok:
        if bad.any():
            seed, update = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])]
            where = f"first at update {int(update) + 1} of seed {int(seed)}"
        else:
            where = "in the final parameters"
        raise TrainingDivergedError(
            f"training diverged: NaN/inf in the loss or parameters ({where}). Likely causes: a drift "
            f"({drift.name!r}) that is not finite for some ratios (e.g. log of r <= 0 or overflow), a learning "
            "rate that is too high, or unnormalised observations/rewards; nothing was kept as a trained agent."
        )


# Compiled functions are cached so repeated fits with the same configuration (seeds sweeps, tests,
# comparisons) compile once. Keys hold the config, the env adapter, the drift's function and sizes.
_PROGRESS_SINK: list = [None]


def _progress_callback(update_index, episode_return) -> None:
    sink = _PROGRESS_SINK[0]
    if sink is not None:
        sink(update_index, episode_return)


def shard_seeds(keys: jax.Array) -> jax.Array:
    """Spread the seed axis over the local devices when it divides evenly (else leave it on one).

    Seeds are independent runs, so XLA partitions the vmapped training without communication and
    each device (each CPU core, with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``, which the
    ``mirrorlearn`` command line sets) trains its share in parallel: 2.2x the steps/s for 8 seeds on
    2 cores here. Each device count is deterministic, but a seed's result may differ in the last bits
    between device counts, since the per-device batch changes floating-point rounding.
    """
    devices = jax.local_devices()
    n = keys.shape[0]
    if len(devices) < 2 or n % len(devices):
        return keys
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("seed",))
    return jax.device_put(keys, NamedSharding(mesh, PartitionSpec("seed")))


@functools.lru_cache(maxsize=64)
def _compiled_train(config: PPOConfig, env: JaxEnv, drift_fn: Any, temporal: bool, n_seeds: int, progress: bool):
    # Only the drift's function and arity shape the compiled code; its params are a traced argument.
    drift = Drift("compiled", drift_fn, None, temporal=temporal)
    init, update = make_train_parts(config, env, drift)
    every = max(1, config.num_updates // 200)

    def train(keys, drift_params):
        state = jax.vmap(init, in_axes=(0, None))(keys, drift_params)

        def body(state, i):
            state, metrics = jax.vmap(update, in_axes=(0, None))(state, drift_params)
            if progress:
                jax.lax.cond(
                    (i % every == 0) | (i == config.num_updates - 1),
                    # The mean over seeds, not the per-seed values: with seeds sharded over devices,
                    # handing the sharded vector to a host callback made XLA warn of a full
                    # rematerialisation at every fit; the reduced scalar is replicated.
                    lambda: jax.debug.callback(_progress_callback, i, jnp.nanmean(metrics["episode_return"])),
                    lambda: None,
                )
            return state, metrics

        state, metrics = jax.lax.scan(body, state, jnp.arange(config.num_updates))
        metrics = jax.tree_util.tree_map(lambda m: jnp.swapaxes(m, 0, 1), metrics)  # seed axis first
        return state.params, state.obs_stats, metrics

    return jax.jit(train)


@functools.lru_cache(maxsize=64)
def _compiled_policy(config: PPOConfig, env: JaxEnv, deterministic: bool):
    act = make_policy_fn(config, env)
    return jax.jit(lambda params, stats, obs, key: act(params, stats, obs, key, deterministic))


@functools.lru_cache(maxsize=64)
def _compiled_evaluate(config: PPOConfig, env: JaxEnv, n_episodes: int):
    evaluate = make_evaluate(config, env, n_episodes)
    return jax.jit(jax.vmap(evaluate, in_axes=(0, 0, None)))
