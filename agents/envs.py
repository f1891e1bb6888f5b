"""Environment adapters: one small interface for everything the jitted PPO core can step.

A :class:`JaxEnv` wraps a JAX-native environment (gymnax today; Brax and Gymnasium's functional
environments plug in the same way) as two pure functions with automatic reset:

``reset(key) -> (obs, state)`` and
``step(key, state, action) -> (obs, state, reward, terminated, truncated, final_obs)``

where ``obs`` is already the first observation of the next episode when the episode ended and
``final_obs`` is the last observation of the ended one (needed to bootstrap on truncation).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """Discrete (``n`` actions) or continuous (box ``low``/``high`` of ``shape``) action space."""

    kind: str  # "discrete" | "continuous"
    n: int = 0
    shape: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    @property
    def discrete(self) -> bool:
        return self.kind == "discrete"

    @property
    def dim(self) -> int:
        return self.n if self.discrete else int(np.prod(self.shape))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "n": self.n, "shape": list(self.shape), "low": list(self.low),
                "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: dict) -> ActionSpec:
        return cls(kind=d["kind"], n=int(d["n"]), shape=tuple(d["shape"]), low=tuple(d["low"]),
                   high=tuple(d["high"]))


@dataclasses.dataclass(frozen=True)
class JaxEnv:
    """A JAX-native environment, ready for ``vmap`` and ``lax.scan`` inside the PPO core."""

    id: str
    family: str                      # "gymnax", "brax", ... (selects the default hyperparameters)
    obs_shape: tuple[int, ...]
    action_spec: ActionSpec
    reset: Callable[[jax.Array], tuple[jax.Array, Any]]
    step: Callable[[jax.Array, Any, jax.Array], tuple]
    max_episode_steps: int
    preset: str = "classic"          # name of agents.config.PRESETS entry
    # Optional split of ``step`` into its randomness and the rest: ``draw(key)`` returns what one step
    # would draw from ``key`` (for gymnax: the step key and the next episode's reset), and
    # ``step_drawn(drawn, state, action)`` equals ``step(key, state, action)``. The core draws a whole
    # rollout's worth in one batched call before its scan; on the CPU the per-step random draws cost
    # more than the environment's dynamics.
    draw: Callable[[jax.Array], Any] | None = None
    step_drawn: Callable[[Any, Any, jax.Array], tuple] | None = None

    def spaces(self) -> dict:
        return {"obs_shape": list(self.obs_shape), "action": self.action_spec.to_dict()}

    def draw_steps(self, key: jax.Array, shape: tuple[int, ...]) -> Any:
        """The randomness of ``prod(shape)`` steps, as a pytree with leading axes ``shape``."""
        keys = jax.random.split(key, int(np.prod(shape))).reshape(tuple(shape) + key.shape)
        if self.draw is None:
            return keys
        flat = jax.vmap(self.draw)(keys.reshape((-1,) + key.shape))
        return jax.tree_util.tree_map(lambda a: a.reshape(tuple(shape) + a.shape[1:]), flat)

    def step_with(self, drawn: Any, state: Any, action: jax.Array) -> tuple:
        """``step`` with randomness from :meth:`draw_steps` (one step, one environment)."""
        if self.step_drawn is None:
            return self.step(drawn, state, action)
        return self.step_drawn(drawn, state, action)


MINATAR_IDS = ("Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar", "SpaceInvaders-MinAtar")


def _gymnax_ids() -> list[str]:
    import gymnax

    return list(gymnax.registered_envs)


def _action_spec_from_gymnax(space) -> ActionSpec:
    from gymnax.environments import spaces

    if isinstance(space, spaces.Discrete):
        return ActionSpec("discrete", n=int(space.n))
    if isinstance(space, spaces.Box):
        shape = tuple(int(s) for s in (space.shape or (1,)))
        low = np.broadcast_to(np.asarray(space.low, dtype=np.float64), shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, dtype=np.float64), shape).reshape(-1)
        return ActionSpec("continuous", shape=shape, low=tuple(map(float, low)), high=tuple(map(float, high)))
    raise ValueError(
        f"unsupported action space {space!r}: mirrorlearn supports Discrete and Box action spaces"
    )


def same_construction(a: Any, b: Any) -> bool:
    """Whether two environment objects (or params) were built alike: same class and equal attributes,
    arrays and pytrees compared leaf by leaf. Anything it cannot compare counts as different."""
    if type(a) is not type(b):
        return False
    try:
        va = vars(a) if hasattr(a, "__dict__") else a
        vb = vars(b) if hasattr(b, "__dict__") else b
        # leaves by path: tree definitions also hold static fields that compare by identity (Brax keeps its
        # MuJoCo model there), which would make two identical builds differ
        pa, pb = jax.tree_util.tree_flatten_with_path(va)[0], jax.tree_util.tree_flatten_with_path(vb)[0]
        if [p for p, _ in pa] != [p for p, _ in pb]:
            return False
        for (_, x), (_, y) in zip(pa, pb, strict=True):
            if isinstance(x, (jax.Array, np.ndarray)) or isinstance(y, (jax.Array, np.ndarray)):
                if not np.array_equal(np.asarray(x), np.asarray(y), equal_nan=np.asarray(x).dtype.kind in "fc"):
                    return False
            elif not (x is y or x == y):
                return False
        return True
    except Exception:  # noqa: BLE001 - an attribute that cannot be compared: not provably the same
        return False


def from_gymnax(env_id: str, env=None, env_params=None) -> JaxEnv:
    """Wrap a gymnax environment (by id, or an instance with optional params).

    An instance or params other than ``gymnax.make(env_id)``'s (a custom map, another action set) get
    the id ``custom:<env_id>``: a saved agent must not re-create the default environment in its place.
    """
    import gymnax

    saved_id = env_id
    if env is None:
        env, default_params = gymnax.make(env_id)
        if env_params is not None and not same_construction(env_params, default_params):
            saved_id = f"custom:{env_id}"
        env_params = default_params if env_params is None else env_params
    else:
        default_env, default_params = (gymnax.make(env_id) if env_id in gymnax.registered_envs else (None, None))
        if env_params is None:
            env_params = env.default_params
        if not (same_construction(env, default_env) and same_construction(env_params, default_params)):
            saved_id = f"custom:{env_id}"
    action_spec = _action_spec_from_gymnax(env.action_space(env_params))
    obs_shape = tuple(int(s) for s in env.observation_space(env_params).shape)

    def reset(key):
        obs, state = env.reset(key, env_params)
        return obs.astype(jnp.float32), state

    def step(key, state, action):
        obs, state, reward, terminated, truncated, info = env.step(key, state, action, env_params)
        final_obs = info["final_observation"].astype(jnp.float32)
        return (obs.astype(jnp.float32), state, reward.astype(jnp.float32), terminated.astype(bool),
                jnp.logical_and(truncated, jnp.logical_not(terminated)), final_obs)

    draw = step_drawn = None
    if type(env).step is _gymnax_base_step():  # the standard auto-reset step, not a wrapper's own

        def draw(key):  # the same split and reset that gymnax's Environment.step does
            key_step, key_reset = jax.random.split(key)
            obs_reset, state_reset = env.reset_env(key_reset, env_params)
            return key_step, obs_reset, state_reset

        def step_drawn(drawn, state, action):
            key_step, obs_reset, state_reset = drawn
            obs, state, reward, terminated, _ = env.step_env(key_step, state, action, env_params)
            truncated = env.is_truncated(state, env_params)
            done = jnp.logical_or(terminated, truncated)
            next_state = jax.tree_util.tree_map(lambda r, s: jax.lax.select(done, r, s), state_reset, state)
            next_obs = jax.lax.select(done, obs_reset, obs)
            return (next_obs.astype(jnp.float32), next_state, reward.astype(jnp.float32), terminated.astype(bool),
                    jnp.logical_and(truncated, jnp.logical_not(terminated)), obs.astype(jnp.float32))

    max_steps = int(getattr(env_params, "max_steps_in_episode", 1000))
    preset = "minatar" if env_id in MINATAR_IDS else ("classic" if action_spec.discrete else "continuous")
    return JaxEnv(saved_id, "gymnax", obs_shape, action_spec, reset, step, max_steps, preset=preset,
                  draw=draw, step_drawn=step_drawn)


def _gymnax_base_step():
    from gymnax.environments.environment import Environment

    return Environment.step


# Resolvers for other families register here (issue: Brax, Gymnasium). Each takes the id after its
# prefix and returns an environment object, or raises KeyError when the id is not one of its own.
_RESOLVERS: dict[str, Callable[[str], Any]] = {}


def register_resolver(prefix: str, resolver: Callable[[str], Any]) -> None:
    _RESOLVERS[prefix] = resolver


def make_env(env: Any) -> Any:
    """Resolve what a user passed to ``fit``/``evaluate`` into an environment adapter.

    Strings: ``"gymnax:ID"``, ``"brax:NAME"``, ``"gymnasium:ID"``, or a bare id (gymnax first, then
    the other registered families). gymnax environment instances are wrapped directly.
    """
    if isinstance(env, JaxEnv):
        return env
    if isinstance(env, str):
        prefix, _, rest = env.partition(":")
        if rest:
            if prefix == "gymnax":
                return _gymnax_by_id(rest)
            if prefix in _RESOLVERS:
                try:
                    return _RESOLVERS[prefix](rest)
                except KeyError as err:  # the family was named, so a missing id is the user's error
                    raise ValueError(err.args[0] if err.args else f"unknown {prefix} environment {rest!r}") from None
            raise ValueError(f"unknown environment family {prefix!r} in {env!r}; known: gymnax, {', '.join(_RESOLVERS)}")
        if env in _gymnax_ids():
            return _gymnax_by_id(env)
        close = difflib.get_close_matches(env, _gymnax_ids(), n=3, cutoff=0.5)
        for prefix, resolver in _RESOLVERS.items():
            try:
                return resolver(env)
            except KeyError as err:  # its message may carry the family's own close matches
                text = str(err.args[0]) if err.args else ""
                if "Did you mean " in text:
                    close += [f"{prefix}:{c.strip(chr(39))}" for c in
                              text.split("Did you mean ", 1)[1].split("?", 1)[0].split(", ")]
        candidates = _gymnax_ids() + [f"{p}:..." for p in _RESOLVERS]
        hint = f" Did you mean {', '.join(repr(c) for c in close[:4])}?" if close else ""
        raise ValueError(
            f"unknown environment id {env!r}.{hint} Known JAX ids: {', '.join(candidates[:12])}, ...; "
            "prefix with 'gymnax:', 'brax:' or 'gymnasium:' to choose a family."
        )
    try:
        from gymnax.environments.environment import Environment as GymnaxEnv
    except ImportError:  # pragma: no cover
        GymnaxEnv = ()
    if GymnaxEnv and isinstance(env, GymnaxEnv):
        return from_gymnax(_gymnax_instance_id(env), env=env)
    for resolver in _RESOLVERS.values():
        try:
            return resolver(env)
        except (KeyError, TypeError):
            continue
    if isinstance(env, tuple) and len(env) == 2 and GymnaxEnv and isinstance(env[0], GymnaxEnv):
        raise TypeError("got gymnax.make's (env, env_params) pair: pass the env, env_and_params[0], or "
                        "agents.envs.from_gymnax(id, env=env, env_params=params) to train with other params")
    if isinstance(env, type):
        raise TypeError(f"got the class {env.__name__}, not an environment: pass an instance, e.g. {env.__name__}()")
    raise TypeError(
        f"cannot train on a {type(env).__name__}: pass an environment id string, a gymnax environment, "
        "a Brax environment, a gymnasium.Env or a gymnasium.vector.VectorEnv"
    )


def _gymnax_instance_id(env) -> str:
    """The registered id of a gymnax instance (``"Breakout-MinAtar"``, not its class ``MinBreakout``).

    The id picks the preset (MinAtar's conv torso and hyperparameters) and is what a saved agent
    re-creates its environment from; the class name is only a fallback for unregistered environments.
    """
    import gymnax

    name = getattr(env, "name", None)
    if isinstance(name, str) and name in gymnax.registered_envs:
        return name
    # some envs' name is not their id (DiscountingChain-bsuite's is "DiscountingChain-v0"): match the stem
    stems = {type(env).__name__, name.split("-")[0] if isinstance(name, str) else None}
    matches = [i for i in gymnax.registered_envs if i.split("-")[0] in stems]
    return matches[0] if len(matches) == 1 else type(env).__name__


@functools.cache
def _gymnax_by_id(env_id: str) -> JaxEnv:
    ids = _gymnax_ids()
    if env_id not in ids:
        close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown gymnax environment {env_id!r}.{hint}")
    try:
        return from_gymnax(env_id)
    except OSError as err:  # urllib's URLError too: MNISTBandit-bsuite downloads MNIST when first made
        raise ValueError(f"gymnax environment {env_id!r} needs a download on first use, which failed ({err}); "
                         "run it once where the internet is reachable") from None


def _register_builtin_families() -> None:
    """Brax before Gymnasium, so that a bare id resolves gymnax, then Brax, then Gymnasium."""
    from agents import brax_env, gymnasium_env

    register_resolver("brax", brax_env.resolve)
    register_resolver("gymnasium", gymnasium_env.resolve)


_register_builtin_families()
