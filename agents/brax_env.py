"""Brax environments as :class:`~agents.envs.JaxEnv`: they train inside the jitted scan.

``"brax:ant"``, ``"brax:hopper"``, ... resolve through ``brax.envs.get_environment`` with the
physics backend that was fastest on a CPU here (``spring``, ``DEFAULT_BACKEND``; see docs/results.md, Environments),
an episode length of 1000 and an action repeat of 1, as in Brax's PPO defaults. The adapter adds the
time limit itself (``truncated`` when the limit, not the task, ends an episode, so the core
bootstraps the value there) and auto-resets to the slot's first state, as Brax's own training
wrapper does (cheap: no physics reset inside the scan).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from agents.envs import ActionSpec, JaxEnv

FAMILY = "brax"
DEFAULT_BACKEND = "spring"  # fastest here: hopper generalized 8.7k, positional 21k, spring 37k, mjx 1.2k steps/s
EPISODE_LENGTH = 1000
ACTION_REPEAT = 1
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")   # Brax names; Gymnasium ids ("Ant-v5") never match


def brax_names() -> list[str]:
    from brax import envs

    return sorted(envs._envs)


def resolve(env: Any) -> JaxEnv:
    """Resolver for ``agents.envs.make_env``: KeyError/TypeError when ``env`` is not a Brax env."""
    if isinstance(env, str):
        if re.search(r"-v\d+$", env):  # a Gymnasium id ("Ant-v5"): no need to import Brax to know
            raise KeyError(f"{env!r} is not a Brax environment name")
        try:
            names = brax_names()
        except ImportError:
            raise KeyError(f"{env!r}: Brax is not installed (pip install brax)") from None
        if env not in names:
            import difflib

            # "Hopper", "ant ", "Ant" (bare, when no other family has it) find their Brax names
            key = env.strip().lower().replace("-", "_")
            close = [key] if key in names else difflib.get_close_matches(key, names, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            kind = "unknown Brax environment" if _NAME.match(env) else "not a Brax environment name:"
            raise KeyError(f"{kind} {env!r}.{hint} Known: {', '.join(names)}")
        return from_brax(env)
    if any(c.__module__.startswith("brax.") for c in type(env).__mro__):
        from brax import envs

        if isinstance(env, envs.Wrapper):
            raise ValueError(
                f"got a Brax env wrapped in {type(env).__name__} (e.g. from brax.envs.create): pass the bare env, "
                "brax.envs.get_environment(name); mirrorlearn adds its own time limit and auto-reset, which tell "
                "truncation from termination (agents.brax_env.from_brax(name, env, episode_length=...) sets the limit)")
        names = [n for n, cls in envs._envs.items() if type(env) is cls]
        name = names[0] if names else type(env).__name__.lower()
        return from_brax(name, env=env)
    raise TypeError(f"not a Brax environment: {type(env).__name__}")


@functools.cache
def _cached(name: str, backend: str, episode_length: int, action_repeat: int) -> JaxEnv:
    return _build(name, None, backend, episode_length, action_repeat)


def from_brax(name: str, env: Any = None, backend: str = DEFAULT_BACKEND, episode_length: int = EPISODE_LENGTH,
              action_repeat: int = ACTION_REPEAT) -> JaxEnv:
    """Wrap a Brax environment (by name, or an instance) with a time limit and auto-reset."""
    if env is None:
        return _cached(name, backend, int(episode_length), int(action_repeat))
    return _build(name, env, backend, int(episode_length), int(action_repeat))


def _build(name: str, env: Any, backend: str, episode_length: int, action_repeat: int) -> JaxEnv:
    import jax
    import jax.numpy as jnp
    from brax import envs

    saved_id = f"brax:{name}"
    built_here = env is None
    if built_here:
        env = envs.get_environment(name, backend=backend)
    if not _recreated_by_name(name, None if built_here else env, backend, episode_length, action_repeat):
        # another backend or constructor arguments: a saved agent must not re-create the default env instead
        saved_id = f"custom:brax:{name}"
    if episode_length < 1 or action_repeat < 1:
        raise ValueError(f"episode_length and action_repeat must be >= 1, got {episode_length}, {action_repeat}")
    dim = int(env.action_size)
    spec = ActionSpec("continuous", shape=(dim,), low=(-1.0,) * dim, high=(1.0,) * dim)
    obs_shape = (int(env.observation_size),)

    def reset(key):
        state = env.reset(key)
        return state.obs.astype(jnp.float32), (state, state, jnp.asarray(0, jnp.int32))

    def step(key, env_state, action):
        del key  # Brax steps are deterministic given the state
        state, first, t = env_state

        def repeat(s, _):
            s = env.step(s, action)
            return s, s.reward

        state, rewards = jax.lax.scan(repeat, state, None, action_repeat)
        t = t + action_repeat
        terminated = state.done > 0.5
        truncated = jnp.logical_and(t >= episode_length, jnp.logical_not(terminated))
        done = jnp.logical_or(terminated, truncated)
        final_obs = state.obs.astype(jnp.float32)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), first, state)
        obs = state.obs.astype(jnp.float32)
        new_t = jnp.where(done, 0, t)
        return obs, (state, first, new_t), jnp.sum(rewards).astype(jnp.float32), terminated, truncated, final_obs

    from agents.config import PRESETS

    preset = f"brax:{name}" if f"brax:{name}" in PRESETS else "brax"
    return JaxEnv(saved_id, FAMILY, obs_shape, spec, reset, step, episode_length // action_repeat,
                  preset=preset)


def _recreated_by_name(name: str, env: Any, backend: str, episode_length: int, action_repeat: int) -> bool:
    """Whether ``"brax:<name>"`` re-creates this env: the default backend, length and repeat, and (for a
    user's instance; ``env`` None means built here by name) the registry's default arguments."""
    from brax import envs

    from agents.envs import same_construction

    if (backend, episode_length, action_repeat) != (DEFAULT_BACKEND, EPISODE_LENGTH, ACTION_REPEAT):
        return False
    if env is None:
        return True
    try:  # swimmer has no spring model, a user's env may need arguments: such an env is not re-created
        default = _default_env(name) if name in envs._envs else None
    except Exception:  # noqa: BLE001
        return False
    return default is not None and same_construction(env, default)


@functools.cache
def _default_env(name: str) -> Any:
    from brax import envs

    return envs.get_environment(name, backend=DEFAULT_BACKEND)
