"""Saving and loading agents: a versioned, pickle-free single file.

Layout (see ``mirrorlearn._archive``): JSON metadata (format and package versions, estimator class
and hyperparameters, full PPO config, drift description, environment id and spaces, history keys)
plus ``.npy`` arrays for the policy parameters of every seed, the observation-normalisation
statistics, the drift parameters and the training history. Loading validates every piece against
what the configuration implies, so a truncated, edited or foreign file is refused with a clear error.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agents.config import PPOConfig
from agents.core import ObsStats, init_params
from agents.envs import ActionSpec, JaxEnv
from drifts.base import Drift, checked_params, drift_from_spec
from mirrorlearn._archive import ArchiveError, flatten_tree, read_archive, unflatten_tree, write_archive

AGENT_FILE_KIND = "mirrorlearn.agent"
AGENT_FILE_VERSION = 1


def _estimator_classes():
    from agents.estimators import DPO, LPO, PPO, MirrorAgent

    return {"MirrorAgent": MirrorAgent, "PPO": PPO, "DPO": DPO, "LPO": LPO}


def _json_params(agent) -> dict:
    params = {}
    for name, value in agent.get_params().items():
        if isinstance(value, (Drift,)) or callable(value):
            value = None  # the drift itself is stored in full under "drift"
        elif isinstance(value, os.PathLike):
            value = str(value)
        elif isinstance(value, (tuple, np.ndarray)):  # hidden_sizes=np.array([32, 32]) trains, so it saves
            value = [v.item() if isinstance(v, np.generic) else v for v in list(value)]
        elif isinstance(value, np.generic):
            value = value.item()
        params[name] = value
    return params


def save_agent(agent, path: str | os.PathLike) -> Path:
    from mirrorlearn import __version__

    drift = agent.drift_
    env_meta = {"id": agent.env_id_, "family": getattr(agent.env_, "family", "unknown"),
                "preset": getattr(agent.env_, "preset", "classic"), **agent.env_spaces_}
    problem = _estimator_params_problem(agent, agent.config_)
    if problem:
        raise ValueError(f"cannot save this agent: {problem}; fix it with set_params before saving")
    try:
        drift_spec = drift.to_spec()
    except ValueError as err:
        raise ValueError(
            f"cannot save this agent: {err} (the policy is fine; a drift given as a plain Python function "
            "cannot be stored without pickle)"
        ) from None
    meta = {
        "kind": AGENT_FILE_KIND,
        "format_version": AGENT_FILE_VERSION,
        "package_version": __version__,
        "estimator": type(agent).__name__,
        "estimator_params": _json_params(agent),
        "config": agent.config_.to_dict(),
        "drift": drift_spec,
        "env": env_meta,
        "n_seeds": agent.n_seeds_,
        "host_normalizer": bool(getattr(agent, "reward_stats_", None) is not None),
    }
    arrays = {}
    arrays.update({f"policy/{k}": v for k, v in flatten_tree(jax.device_get(agent.params_)).items()})
    stats = jax.device_get(agent.obs_stats_)
    arrays.update({"obs_stats/mean": stats.mean, "obs_stats/var": stats.var, "obs_stats/count": stats.count})
    arrays.update({f"drift/{k}": v for k, v in flatten_tree(jax.device_get(drift.params)).items()})
    arrays.update({f"history/{k}": np.asarray(v) for k, v in agent.history_.items()})
    return write_archive(path, meta, arrays)


def _check_action_meta(action: dict) -> None:
    """A ValueError for saved action fields of the wrong type, which ``ActionSpec.from_dict`` would coerce
    silently (``n = 2.5`` read as 2 actions, ``low = [[1]]`` as a nested bound)."""
    if not isinstance(action, dict):
        raise ValueError(f"env.action must be a mapping, got {type(action).__name__}")
    n = action.get("n")
    if not isinstance(n, int) or isinstance(n, bool):
        raise ValueError(f"env.action.n must be a whole number, got {n!r}")
    for name in ("shape", "low", "high"):
        value = action.get(name)
        if not isinstance(value, list):
            raise ValueError(f"env.action.{name} must be a list, got {value!r}")
        if name == "shape":
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ValueError(f"env.action.shape must be whole numbers, got {value!r}")
        elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value):
            raise ValueError(f"env.action.{name} must be a flat list of finite numbers, got {str(value)[:60]}")


def spaces_env(env_meta: dict) -> JaxEnv:
    """An environment stand-in that knows only the spaces: enough to rebuild and run the policy."""
    _check_action_meta(env_meta["action"])
    return JaxEnv(
        id=env_meta["id"], family=env_meta.get("family", "unknown"), obs_shape=tuple(env_meta["obs_shape"]),
        action_spec=ActionSpec.from_dict(env_meta["action"]), reset=None, step=None, max_episode_steps=0,
        preset=env_meta.get("preset", "classic"),
    )


def load_agent(path: str | os.PathLike):
    meta, arrays = read_archive(path, AGENT_FILE_KIND, AGENT_FILE_VERSION)
    source = str(path)
    try:
        classes = _estimator_classes()
        if meta["estimator"] not in classes:
            raise ArchiveError(f"{source}: unknown estimator {meta['estimator']!r}")
        config = PPOConfig.from_dict(meta["config"]).validate()
        env = spaces_env(meta["env"])
        _check_spaces(env)
        drift = drift_from_spec(meta["drift"], source=source)
        n_seeds = meta["n_seeds"]
        if not isinstance(n_seeds, int) or isinstance(n_seeds, bool) or n_seeds < 1:
            raise ValueError(f"n_seeds must be a positive integer, got {n_seeds!r}")
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, ArchiveError):
            raise
        raise ArchiveError(f"{source}: malformed agent metadata ({err})") from None

    policy = {k[len("policy/"):]: v for k, v in arrays.items() if k.startswith("policy/")}
    try:
        _check_sizes(config, env)
        # Shapes only (jax.eval_shape traces, never runs or compiles the initialiser): a load costs no network
        # initialisation, and a file declaring a huge network is refused by its shapes before any memory is used.
        shapes = jax.eval_shape(lambda key: init_params(config, env, key), jax.random.PRNGKey(0))
        template = flatten_tree(jax.tree_util.tree_map(  # zero-stride views: the shapes at no memory cost
            lambda x: np.broadcast_to(np.zeros((), x.dtype), x.shape), shapes))
    except ValueError as err:
        raise ArchiveError(f"{source}: {err}; the file was edited or corrupted") from None
    except Exception as err:  # noqa: BLE001 - e.g. a grid torso given a flat observation shape by an edit
        raise ArchiveError(f"{source}: the saved spaces (observations {tuple(env.obs_shape)}) do not fit the saved "
                           f"network ({config.network!r}); the file was edited or corrupted "
                           f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if set(policy) != set(template):
        raise ArchiveError(f"{source}: policy parameters do not match the saved configuration")
    for key, ref in template.items():
        if policy[key].shape != (n_seeds,) + ref.shape:
            raise ArchiveError(f"{source}: parameter {key} has shape {policy[key].shape}, "
                               f"expected {(n_seeds,) + ref.shape}")
        if not np.issubdtype(policy[key].dtype, np.floating):
            raise ArchiveError(f"{source}: parameter {key} has dtype {policy[key].dtype}, expected floats")
        if not np.all(np.isfinite(policy[key])):
            raise ArchiveError(f"{source}: parameter {key} contains NaN or inf")
    drift_params = {k[len("drift/"):]: v for k, v in arrays.items() if k.startswith("drift/")}
    try:
        drift = drift.with_params(checked_params(drift, unflatten_tree(drift_params), source))
    except ValueError as err:
        raise ArchiveError(str(err)) from None
    stats = _checked_obs_stats(arrays, n_seeds, tuple(env.obs_shape), source)

    klass = classes[meta["estimator"]]
    if not isinstance(meta.get("estimator_params"), dict):
        raise ArchiveError(f"{source}: malformed agent metadata (estimator_params is not a mapping)")
    params = {k: v for k, v in meta["estimator_params"].items() if k in klass._param_names()}
    for name in ("hidden_sizes", "value_hidden_sizes"):
        if isinstance(params.get(name), list):  # JSON has no tuples
            params[name] = tuple(params[name])
    agent = klass(**params) if klass is not _estimator_classes()["MirrorAgent"] else klass(**{**params, "drift": drift})
    problem = _estimator_params_problem(agent, config)
    if problem:
        raise ArchiveError(f"{source}: invalid saved hyperparameters ({problem}); the file was edited or corrupted")
    history = {k[len("history/"):]: v for k, v in arrays.items() if k.startswith("history/")}
    history.pop("timesteps", None)
    agent._set_fitted(config, env, drift, jax.tree_util.tree_map(jnp.asarray, unflatten_tree(policy)), stats, history)
    agent.env_id_ = meta["env"]["id"]
    return agent


def _checked_obs_stats(arrays: dict, n_seeds: int, obs_shape: tuple, source: str) -> ObsStats:
    """The observation statistics of every seed: right shapes, finite, variances >= 0 and counts > 0
    (a negative variance would put NaN into every action through its square root)."""
    try:
        mean, var, count = (np.asarray(arrays[f"obs_stats/{name}"]) for name in ("mean", "var", "count"))
    except KeyError:
        raise ArchiveError(f"{source}: observation statistics are missing") from None
    if mean.shape != (n_seeds,) + obs_shape or var.shape != (n_seeds,) + obs_shape or count.shape != (n_seeds,):
        raise ArchiveError(f"{source}: observation statistics have shapes {mean.shape}, {var.shape}, {count.shape}; "
                           f"expected {(n_seeds,) + obs_shape} for {n_seeds} seeds of observation shape {obs_shape}")
    for name, value in (("mean", mean), ("var", var), ("count", count)):
        if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
            raise ArchiveError(f"{source}: observation statistics {name} has dtype {value.dtype}, expected numbers")
        if not np.all(np.isfinite(value)):
            raise ArchiveError(f"{source}: observation statistics {name} contain NaN or inf")
    if np.any(var < 0) or np.any(count <= 0):
        raise ArchiveError(f"{source}: observation statistics hold a negative variance or a count <= 0; "
                           "the file is corrupted: re-save the agent")
    return ObsStats(jnp.asarray(mean, jnp.float32), jnp.asarray(var, jnp.float32), jnp.asarray(count, jnp.float32))


# Far above any space this package trains, far below what would overflow XLA's shape arithmetic (an edited
# action count of 10**18 aborted the loading process) or exhaust memory. Layer sizes: PPOConfig.validate.
MAX_OBS_ELEMENTS = 1 << 24
MAX_OBS_DIMS = 8
MAX_ACTIONS = 1 << 16


def _check_sizes(config: PPOConfig, env: JaxEnv) -> None:
    """A ValueError for saved sizes beyond any real agent's, before a shape is built from them."""
    shape = tuple(env.obs_shape)
    if len(shape) > MAX_OBS_DIMS or int(np.prod([min(d, MAX_OBS_ELEMENTS + 1) for d in shape], dtype=object)) > MAX_OBS_ELEMENTS:
        raise ValueError(f"observation shape {list(shape)[:12]} exceeds the limit of {MAX_OBS_DIMS} dimensions and "
                         f"{MAX_OBS_ELEMENTS} numbers")
    spec = env.action_spec
    size = spec.n if spec.kind == "discrete" else int(np.prod(spec.shape, dtype=object))
    if size > MAX_ACTIONS:
        raise ValueError(f"{size} actions exceed the limit of {MAX_ACTIONS}")


def _positive_ints(value) -> bool:
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value)


def _check_spaces(env: JaxEnv) -> None:
    """A ValueError for saved spaces no network can be built for (an edited file), before JAX sees them."""
    if not _positive_ints(env.obs_shape):
        raise ValueError(f"obs_shape must be positive integers, got {list(env.obs_shape)!r}")
    spec = env.action_spec
    if spec.kind == "discrete":
        if spec.n < 1:
            raise ValueError(f"a discrete action space needs n >= 1 actions, got {spec.n}")
    elif spec.kind == "continuous":
        size = int(np.prod(spec.shape))
        if not _positive_ints(spec.shape) or len(spec.low) != size or len(spec.high) != size:
            raise ValueError(f"a continuous action space needs a positive shape and one low/high per action, got "
                             f"shape {list(spec.shape)}, {len(spec.low)} lows and {len(spec.high)} highs")
    else:
        raise ValueError(f"action kind must be 'discrete' or 'continuous', got {spec.kind!r}")


def _estimator_params_problem(agent, config: PPOConfig) -> str | None:
    """What is wrong with the agent's hyperparameters for ``fit``, or None.

    A loaded agent may be re-fitted or cloned, so a value ``fit`` cannot use is refused when loading,
    naming the file, rather than deep inside a later ``fit``. Saving checks it too (``set_params`` after
    ``fit`` can change the values), so every file that saves also loads. Deliberately no stricter than
    ``fit`` has ever been, so that files saved by earlier versions keep loading.
    """
    try:
        # the configuration fields, judged against the configuration the agent trained with (not the
        # preset: a user's vector env sets num_envs, so the preset's batch may not fit the budget)
        dataclasses.replace(config, **agent.config_overrides()).validate()
        for name in ("n_seeds", "seed", "policy_seed"):
            value = getattr(agent, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if agent.n_seeds < 1 or agent.policy_seed < 0:
            raise ValueError(f"n_seeds must be >= 1 and policy_seed >= 0, got {agent.n_seeds} and {agent.policy_seed}")
        classes = _estimator_classes()
        if isinstance(agent, (classes["PPO"], classes["DPO"])):  # eps / alpha / beta: what fit will build
            agent.make_drift()
    except (TypeError, ValueError) as err:
        return str(err)
    return None
