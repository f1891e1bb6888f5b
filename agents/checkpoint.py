"""Saving and loading agents: a versioned, pickle-free single file.

Layout (see ``mirrorlearn._archive``): JSON metadata (format and package versions, estimator class
and hyperparameters, full PPO config, drift description, environment id and spaces, history keys)
plus ``.npy`` arrays for the policy parameters of every seed, the observation-normalisation
statistics, the drift parameters and the training history. Loading validates every piece against
what the configuration implies, so a truncated, edited or foreign file is refused with a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agents.config import PPOConfig
from agents.core import ObsStats, init_params
from agents.envs import ActionSpec, JaxEnv
from drifts.base import Drift, drift_from_spec
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
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.generic):
            value = value.item()
        params[name] = value
    return params


def save_agent(agent, path: str | os.PathLike) -> Path:
    from mirrorlearn import __version__

    drift = agent.drift_
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
        "env": {"id": agent.env_id_, "family": getattr(agent.env_, "family", "unknown"),
                "preset": getattr(agent.env_, "preset", "classic"), **agent.env_spaces_},
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


def spaces_env(env_meta: dict) -> JaxEnv:
    """An environment stand-in that knows only the spaces: enough to rebuild and run the policy."""
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
        drift = drift_from_spec(meta["drift"], source=source)
        n_seeds = int(meta["n_seeds"])
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, ArchiveError):
            raise
        raise ArchiveError(f"{source}: malformed agent metadata ({err})") from None

    policy = {k[len("policy/"):]: v for k, v in arrays.items() if k.startswith("policy/")}
    template = flatten_tree(jax.device_get(init_params(config, env, jax.random.PRNGKey(0))))
    if set(policy) != set(template):
        raise ArchiveError(f"{source}: policy parameters do not match the saved configuration")
    for key, ref in template.items():
        if policy[key].shape != (n_seeds,) + ref.shape:
            raise ArchiveError(f"{source}: parameter {key} has shape {policy[key].shape}, "
                               f"expected {(n_seeds,) + ref.shape}")
        if not np.all(np.isfinite(policy[key])):
            raise ArchiveError(f"{source}: parameter {key} contains NaN or inf")
    drift_params = {k[len("drift/"):]: v for k, v in arrays.items() if k.startswith("drift/")}
    try:
        from drifts.base import _match_params

        drift = drift.with_params(_match_params(drift.params, unflatten_tree(drift_params), source))
    except ValueError as err:
        raise ArchiveError(str(err)) from None
    obs_shape = tuple(env.obs_shape)
    try:
        stats = ObsStats(jnp.asarray(arrays["obs_stats/mean"]), jnp.asarray(arrays["obs_stats/var"]),
                         jnp.asarray(arrays["obs_stats/count"]))
    except KeyError:
        raise ArchiveError(f"{source}: observation statistics are missing") from None
    if stats.mean.shape != (n_seeds,) + obs_shape or stats.var.shape != (n_seeds,) + obs_shape:
        raise ArchiveError(f"{source}: observation statistics do not match the observation shape {obs_shape}")

    klass = classes[meta["estimator"]]
    params = {k: v for k, v in meta["estimator_params"].items() if k in klass._param_names()}
    for name in ("hidden_sizes", "value_hidden_sizes"):
        if params.get(name) is not None:
            params[name] = tuple(params[name])
    agent = klass(**params) if klass is not _estimator_classes()["MirrorAgent"] else klass(**{**params, "drift": drift})
    history = {k[len("history/"):]: v for k, v in arrays.items() if k.startswith("history/")}
    history.pop("timesteps", None)
    agent._set_fitted(config, env, drift, jax.tree_util.tree_map(jnp.asarray, unflatten_tree(policy)), stats, history)
    agent.env_id_ = meta["env"]["id"]
    return agent
