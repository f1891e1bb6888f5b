"""Gymnasium environments: host-stepped vector envs, and Gymnasium's functional JAX envs in the scan.

Three things a user may hand to ``fit``/``evaluate`` resolve here:

* an id (``"gymnasium:HalfCheetah-v5"``, or a bare id that is neither gymnax nor Brax);
* a ``gymnasium.Env`` instance, including a custom class from no registry;
* a ``gymnasium.vector.VectorEnv`` (sync or async).

They become a :class:`HostEnv`: the spaces, plus a factory of vector envs that the host-side
training loop (``agents.host``) steps with a jitted policy. Every vector env we build uses Gymnasium
1.x's ``SAME_STEP`` autoreset, so each ``step`` is a real transition and the last observation of an
ended episode arrives in ``info["final_obs"]`` (needed to bootstrap on truncation). With the default
``NEXT_STEP`` mode the step after a done returns the reset observation with reward 0 and must not be
learnt from; rather than mask those steps we rebuild a user's vector env from its ``env_fns`` in
``SAME_STEP`` mode.

Gymnasium's own functional JAX environments (``phys2d/CartPole-v1``, ``phys2d/Pendulum-v0``, ...)
are turned into a :class:`~agents.envs.JaxEnv` instead and train inside the jitted scan.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agents.config import PRESETS
from agents.envs import ActionSpec, JaxEnv

FAMILY = "gymnasium"


class EnvStepError(RuntimeError):
    """A Gymnasium environment raised during a rollout; the message names env, episode and step."""


class UnsupportedSpaceError(ValueError):
    """The observation or action space is one that mirrorlearn cannot learn on."""


@dataclasses.dataclass(frozen=True, eq=False)
class HostEnv:
    """A Gymnasium environment stepped on the host (a vector env) while the learner stays jitted.

    ``make_vec(n)`` builds a vector env of ``n`` sub-environments with ``SAME_STEP`` autoreset, each
    sub-environment wrapped so that an exception names the environment, episode and step. Identity
    (``eq=False``) is the hash, so compiled policies are cached per adapter.
    """

    id: str
    obs_shape: tuple[int, ...]
    action_spec: ActionSpec
    env_fns: tuple[Callable[[], Any], ...]     # one or more single-env factories (cycled over sub-envs)
    max_episode_steps: int
    preset: str = "classic"
    vectorization: str = "sync"               # "sync" | "async"
    family: str = FAMILY
    discrete_start: int = 0

    def spaces(self) -> dict:
        return {"obs_shape": list(self.obs_shape), "action": self.action_spec.to_dict()}

    def make_vec(self, n: int, vectorization: str | None = None):
        """A fresh ``SAME_STEP`` vector env of ``n`` guarded sub-environments (the caller closes it)."""
        import gymnasium as gym

        fns = [_guarded(self.env_fns[i % len(self.env_fns)], self.id, i) for i in range(n)]
        mode = vectorization or self.vectorization
        same_step = gym.vector.AutoresetMode.SAME_STEP
        if mode == "async":
            # forkserver: forking a process that runs JAX threads can deadlock
            return gym.vector.AsyncVectorEnv(fns, autoreset_mode=same_step, context="forkserver")
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=same_step)


def _guarded(env_fn: Callable[[], Any], env_id: str, index: int) -> Callable[[], Any]:
    def make():
        return _StepGuard(env_fn(), env_id, index)

    return make


@functools.cache
def _step_guard_class():
    import gymnasium as gym

    class StepGuard(gym.Wrapper):
        """Re-raise any exception from ``reset``/``step`` as :class:`EnvStepError` with where it happened,
        and check what the env returns (the Gymnasium API, the observation's shape, finite numbers) so
        that a broken env is named here, not blamed on the drift or failing inside numpy later."""

        def __init__(self, env, env_id: str, index: int):
            super().__init__(env)
            self._where = (env_id, index)
            self._episode = 0
            self._step = 0
            space = env.observation_space
            self._obs_shape = tuple(getattr(space, "shape", None) or ())
            self._obs_dtype = np.dtype(getattr(space, "dtype", None) or np.float32)
            act = env.action_space
            # a Box of shape () is learnt as shape (1,): give the env back the shape it declared
            self._scalar_action = isinstance(act, gym.spaces.Box) and tuple(act.shape) == ()

        def _fail(self, what: str, err: Exception):
            env_id, index = self._where
            raise EnvStepError(
                f"environment {env_id!r} (sub-environment {index}) raised {type(err).__name__}: {err} "
                f"in {what} at episode {self._episode}, step {self._step}; the run stopped and nothing was saved"
            ) from err

        def _check_obs(self, what: str, obs):
            # cheap on the usual path (an ndarray of the right shape): this runs for every step of every env
            native = isinstance(obs, np.ndarray)  # lists and scalars take the space's dtype when stored
            if not (native and obs.dtype.kind in "fiub"):
                try:
                    obs = np.asarray(obs, dtype=np.float64)
                except (TypeError, ValueError) as err:
                    self._fail(what, ValueError(f"the observation is not numeric ({err})"))
            if obs.shape != self._obs_shape:
                self._fail(what, ValueError(f"the observation has shape {obs.shape}, but observation_space "
                                            f"{self.env.observation_space} declares {self._obs_shape}"))
            if obs.dtype.kind == "f" and not np.isfinite(obs).all():
                self._fail(what, ValueError(f"the observation contains NaN or inf: {obs!r}"))
            if native and not np.can_cast(obs.dtype, self._obs_dtype, casting="same_kind"):
                # a vector env copies observations into buffers of the space's dtype and would fail in numpy
                self._fail(what, ValueError(f"the observation has dtype {obs.dtype}, but observation_space "
                                            f"{self.env.observation_space} declares {self._obs_dtype}; return "
                                            f"{self._obs_dtype} arrays or declare the space with dtype={obs.dtype}"))

        def reset(self, **kwargs):
            self._episode += 1
            self._step = 0
            try:
                out = self.env.reset(**kwargs)
            except EnvStepError:
                raise
            except Exception as err:  # noqa: BLE001 - any user env error is reported with its location
                self._fail("reset()", err)
            if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
                self._fail("reset()", TypeError(
                    "reset() must return (observation, info) with info a dict (the Gymnasium >= 0.26 API), got "
                    f"{type(out).__name__}; an old Gym env needs gymnasium's compatibility wrapper (shimmy)"))
            self._check_obs("reset()", out[0])
            return out

        def step(self, action):
            self._step += 1
            if self._scalar_action:
                action = np.reshape(action, ())
            try:
                out = self.env.step(action)
            except EnvStepError:
                raise
            except Exception as err:  # noqa: BLE001
                self._fail("step()", err)
            if not (isinstance(out, tuple) and len(out) == 5):
                self._fail("step()", TypeError(
                    "step() must return (observation, reward, terminated, truncated, info) (the Gymnasium >= 0.26 "
                    f"API), got {type(out).__name__} of length {len(out) if isinstance(out, tuple) else '?'}; an "
                    "old Gym env needs gymnasium's compatibility wrapper (shimmy)"))
            self._check_obs("step()", out[0])
            reward = out[1]
            if not (isinstance(reward, (float, int, np.floating, np.integer)) and not isinstance(reward, bool)
                    and math.isfinite(reward)):
                if not (np.ndim(reward) == 0 and np.issubdtype(np.asarray(reward).dtype, np.number)
                        and np.isfinite(reward)):
                    self._fail("step()", ValueError(f"the reward must be one finite number, got {reward!r}"))
            return out

    return StepGuard


def _StepGuard(env, env_id: str, index: int):  # noqa: N802 - a factory standing in for a class
    return _step_guard_class()(env, env_id, index)


# -- spaces --------------------------------------------------------------------------------------------
_SUPPORTED = ("observations: Box (any shape); actions: Discrete (start 0) and Box. Wrap other observation "
              "spaces with gymnasium.wrappers.FlattenObservation so that they become a Box")


def obs_shape_from_space(space) -> tuple[int, ...]:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return tuple(int(s) for s in space.shape) or (1,)
    raise UnsupportedSpaceError(f"unsupported observation space {space!r}; mirrorlearn supports {_SUPPORTED}")


_ACTION_ADVICE = ("mirrorlearn's policies act in Discrete (start 0) and float Box spaces: wrap the env so that it "
                  "takes one of those, e.g. a Discrete over all combinations of a MultiDiscrete's choices, or a Box "
                  "whose values a gymnasium.wrappers.TransformAction rounds")


def action_spec_from_space(space) -> tuple[ActionSpec, int]:
    """The :class:`ActionSpec` of a Gymnasium action space (and a Discrete space's ``start``)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return ActionSpec("discrete", n=int(space.n)), int(space.start)
    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.floating):
            raise UnsupportedSpaceError(
                f"unsupported action space {space!r}: a Box of {space.dtype} values; the Gaussian policy samples "
                "real numbers, so use a float Box (rounding in a gymnasium.wrappers.TransformAction if the env "
                "needs integers) or a Discrete space")
        # A Box of shape () keeps it: the policy has one output and predict returns one number per observation
        shape = tuple(int(s) for s in space.shape)
        low = np.broadcast_to(np.asarray(space.low, np.float64), shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, np.float64), shape).reshape(-1)
        if np.any((low > 0) | (high < 0)):
            # The Gaussian policy starts at mean 0, std 1 and its actions are clipped to the box: every action
            # would start on a bound, with no gradient to leave it.
            warnings.warn(f"action space {space!r} does not contain 0 in every dimension, where the Gaussian policy "
                          "starts; its clipped actions would sit on the bounds and may never learn. Wrap the env "
                          "with gymnasium.wrappers.RescaleAction(env, -1.0, 1.0)", UserWarning, stacklevel=2)
        return ActionSpec("continuous", shape=shape, low=tuple(map(float, low)), high=tuple(map(float, high))), 0
    raise UnsupportedSpaceError(f"unsupported action space {space!r}; {_ACTION_ADVICE}")


def _check_discrete_start(space_start: int, space) -> None:
    if space_start != 0:
        raise UnsupportedSpaceError(
            f"unsupported action space {space!r}: Discrete with start={space_start}; predict returns actions "
            "0..n-1, so wrap the env (e.g. gymnasium.wrappers.TransformAction) to accept actions from 0"
        )


def _preset_for(env_id: str | None, spec: ActionSpec) -> str:
    """MuJoCo-style (continuous-action) tasks get observation normalisation and reward scaling; a
    task with its own tuned preset (``agents.config.PRESETS["mujoco:<name>"]``) gets that one."""
    if spec.discrete:
        return "classic"
    name = (env_id or "").split(":")[-1].split("/")[-1].split("-v")[0]
    return f"mujoco:{name}" if f"mujoco:{name}" in PRESETS else "continuous"


# -- resolving ids, envs and vector envs -----------------------------------------------------------------
def resolve(env: Any, vectorization: str = "sync") -> Any:
    """Resolver for ``agents.envs.make_env``: KeyError/TypeError when ``env`` is not Gymnasium's."""
    if isinstance(env, HostEnv):
        return env
    if isinstance(env, str):
        return from_id(env, vectorization=vectorization)
    import gymnasium as gym

    if isinstance(env, gym.vector.VectorEnv):
        return from_vector_env(env)
    if isinstance(env, gym.Env):
        return from_env(env, vectorization=vectorization)
    raise TypeError(f"not a Gymnasium environment: {type(env).__name__}")


def from_id(env_id: str, vectorization: str = "sync") -> Any:
    """A registered Gymnasium id: functional JAX envs become a :class:`JaxEnv`, others a :class:`HostEnv`.

    An unknown id is a ``KeyError`` (so ``make_env`` can try the next family) carrying close matches.
    """
    import gymnasium as gym

    try:
        spec = gym.spec(env_id)
    except gym.error.Error as err:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown Gymnasium environment {env_id!r} ({err}).{hint}") from None
    try:
        probe = gym.make(env_id)
    except gym.error.DependencyNotInstalled as err:
        raise ValueError(f"Gymnasium environment {env_id!r} needs an extra: {err}") from None
    try:
        func_env = getattr(probe.unwrapped, "func_env", None)
        if func_env is not None and spec.vector_entry_point is not None:
            return from_functional(func_env, f"gymnasium:{env_id}", spec.max_episode_steps or 1000)
        obs_shape = obs_shape_from_space(probe.observation_space)
        action_spec, start = action_spec_from_space(probe.action_space)
        _check_discrete_start(start, probe.action_space)
    finally:
        probe.close()
    return HostEnv(
        id=f"gymnasium:{env_id}", obs_shape=obs_shape, action_spec=action_spec,
        env_fns=(_MakeById(env_id),), max_episode_steps=int(spec.max_episode_steps or 0),
        preset=_preset_for(env_id, action_spec), vectorization=vectorization,
    )


@dataclasses.dataclass(frozen=True)
class _MakeById:
    """A picklable factory (async workers receive it) that makes a registered env by id."""

    env_id: str

    def __call__(self):
        import gymnasium as gym

        return gym.make(self.env_id)


def _env_name(env) -> str:
    """``gymnasium:<id>`` when ``gym.make(id)`` re-creates this very environment, else ``custom:<...>``.

    The name is what a saved agent keeps to re-create its environment for ``evaluate()``. An env made with
    other arguments (``gym.make("Pendulum-v1", g=0.0)``), another time limit or extra wrappers is a
    different task under the same id, so it is named ``custom:`` and a loaded agent asks for it instead
    of quietly evaluating on the default one.
    """
    spec = getattr(env, "spec", None)
    if spec is not None and getattr(spec, "id", None) and _rebuilds_from_id(spec):
        return f"gymnasium:{spec.id}"
    what = getattr(spec, "id", None) or type(getattr(env, "unwrapped", env)).__name__
    return f"custom:{what}"


def _rebuilds_from_id(spec) -> bool:
    import gymnasium as gym

    try:
        default = gym.spec(spec.id)
    except gym.error.Error:
        return False
    def task_kwargs(s):  # render_mode changes what is drawn, not the task
        return {k: v for k, v in (s.kwargs or {}).items() if k != "render_mode"}

    return (not spec.additional_wrappers and not default.additional_wrappers
            and task_kwargs(spec) == task_kwargs(default) and spec.max_episode_steps == default.max_episode_steps)


def _copier(env) -> Callable[[], Any]:
    """A factory of independent copies of ``env`` (the user's instance itself is never stepped)."""
    try:
        copy.deepcopy(env).close()
    except Exception as err:  # noqa: BLE001 - fall back to the registry when the env cannot be copied
        spec = getattr(env, "spec", None)
        if spec is not None and getattr(spec, "id", None):
            import gymnasium as gym

            # The spec keeps the make() arguments and wrappers, not changes made to the instance since.
            warnings.warn(f"cannot copy {_env_name(env)} (copy.deepcopy failed: {err}), so training and evaluation "
                          f"use fresh gym.make({spec.id!r}) environments with the same arguments and wrappers; "
                          "changes made to your instance after gym.make are not carried over. If there are any, "
                          "pass a gymnasium.vector.SyncVectorEnv built from a factory function instead",
                          UserWarning, stacklevel=4)
            return lambda: gym.make(spec)
        raise ValueError(
            f"cannot make independent copies of {_env_name(env)} (copy.deepcopy failed: {err}); pass a "
            "gymnasium.vector.SyncVectorEnv built from a factory function instead"
        ) from None
    return lambda: copy.deepcopy(env)


def from_env(env, vectorization: str = "sync") -> Any:
    """A ``gymnasium.Env`` instance (any class, registered or not)."""
    func_env = getattr(getattr(env, "unwrapped", env), "func_env", None)
    spec = getattr(env, "spec", None)
    max_steps = int(getattr(spec, "max_episode_steps", None) or 0)
    if func_env is not None and _is_plain_functional(env):
        return from_functional(func_env, _env_name(env), max_steps or 1000)
    obs_shape = obs_shape_from_space(env.observation_space)
    action_spec, start = action_spec_from_space(env.action_space)
    _check_discrete_start(start, env.action_space)
    return HostEnv(
        id=_env_name(env), obs_shape=obs_shape, action_spec=action_spec, env_fns=(_copier(env),),
        max_episode_steps=max_steps, preset=_preset_for(getattr(env.spec, "id", None), action_spec),
        vectorization=vectorization,
    )


def _is_plain_functional(env) -> bool:
    """A functional JAX env with no user wrappers besides Gymnasium's standard ones (time limit, checks)."""
    import gymnasium as gym

    standard = (gym.wrappers.TimeLimit, gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker)
    while isinstance(env, gym.Wrapper):
        if not isinstance(env, standard):
            return False
        env = env.env
    return True


def from_vector_env(vec) -> HostEnv:
    """A ``gymnasium.vector.VectorEnv``: rebuilt from its ``env_fns`` in ``SAME_STEP`` mode, same sync/async kind."""
    import gymnasium as gym

    if isinstance(vec, gym.vector.VectorWrapper):
        raise UnsupportedSpaceError(
            f"cannot train on a vector env wrapped by {type(vec).__name__}: mirrorlearn rebuilds vector envs from "
            "their sub-environments (to use SAME_STEP autoreset), so vector-level wrappers would be silently "
            "dropped. Wrap each sub-environment instead: gym.make_vec(id, n, vectorization_mode='sync', "
            "wrappers=[...]), or wrappers inside the env_fns of a SyncVectorEnv/AsyncVectorEnv"
        )
    env_fns = _vector_env_fns(vec)
    if not env_fns:
        raise ValueError(
            f"cannot train on a {type(vec).__name__}: mirrorlearn rebuilds vector envs from their env_fns "
            "(to use SAME_STEP autoreset) and this one has none; pass a gymnasium.vector.SyncVectorEnv or "
            "AsyncVectorEnv, or a single gymnasium.Env"
        )
    obs_shape = obs_shape_from_space(vec.single_observation_space)
    action_spec, start = action_spec_from_space(vec.single_action_space)
    _check_discrete_start(start, vec.single_action_space)
    probe = env_fns[0]()  # the name and time limit of what actually trains: a sub-environment
    try:
        name = _env_name(probe)
        max_steps = int(getattr(getattr(probe, "spec", None), "max_episode_steps", None) or 0)
    finally:
        probe.close()
    vectorization = "async" if isinstance(vec, gym.vector.AsyncVectorEnv) else "sync"
    return HostEnv(
        id=name, obs_shape=obs_shape, action_spec=action_spec, env_fns=tuple(env_fns), max_episode_steps=max_steps,
        preset=_preset_for(name, action_spec), vectorization=vectorization,
    )


_VECTOR_ONLY_KWARGS = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers")


def _vector_env_fns(vec) -> tuple[Callable[[], Any], ...]:
    """Single-env factories for ``vec``'s sub-environments (empty if they cannot be known).

    ``gym.make_vec`` keeps ``env_fns`` as a generator its constructor has already used up, so its
    sub-environments are rebuilt from their specs instead; a vector env with its own vectorised
    implementation (``vector_entry_point``) has no sub-environments, so its single-env id is used.
    """
    import gymnasium as gym

    fns = getattr(vec, "env_fns", None)
    fns = tuple(fns) if fns is not None and not isinstance(fns, str) else ()
    if fns:
        return fns
    subs = [getattr(e, "spec", None) for e in getattr(vec, "envs", None) or ()]
    if subs and all(s is not None for s in subs):
        return tuple(functools.partial(gym.make, s) for s in subs)
    spec = getattr(vec, "spec", None)
    if spec is not None and getattr(spec, "id", None) in gym.registry:
        if (spec.kwargs or {}).get("wrappers"):
            raise UnsupportedSpaceError(
                f"cannot train on {spec.id!r} made by gym.make_vec with wrappers=: this id has its own vectorised "
                "implementation, whose sub-environments mirrorlearn cannot wrap; pass "
                f"gym.make_vec({spec.id!r}, n, vectorization_mode='sync', wrappers=[...]) instead")
        kwargs = {k: v for k, v in (spec.kwargs or {}).items() if k not in _VECTOR_ONLY_KWARGS}
        # one factory per sub-environment, so that training uses as many as the user's vector env has
        return (functools.partial(gym.make, spec.id, **kwargs),) * max(1, int(getattr(vec, "num_envs", 1)))
    return ()


def from_gymnasium(env: Any, vectorization: str = "sync") -> Any:
    """Explicit entry point: an id, Env or VectorEnv; ``vectorization="async"`` steps sub-envs in processes."""
    if vectorization not in ("sync", "async"):
        raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
    if isinstance(env, str):
        try:
            return from_id(env.removeprefix("gymnasium:"), vectorization=vectorization)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
    return resolve(env, vectorization=vectorization)


# -- Gymnasium's functional JAX environments in the jitted scan -------------------------------------------
def from_functional(func_env, env_id: str, max_episode_steps: int) -> JaxEnv:
    """Wrap a ``gymnasium.experimental.functional.FuncEnv`` (pure JAX) as a :class:`JaxEnv`.

    Adds what the functional API leaves to its vector wrapper: a time limit (``truncated``),
    auto-reset, and the final observation of an ended episode.
    """
    import jax
    import jax.numpy as jnp

    obs_shape = obs_shape_from_space(func_env.observation_space)
    action_spec, start = action_spec_from_space(func_env.action_space)
    _check_discrete_start(start, func_env.action_space)
    horizon = int(max_episode_steps)

    def reset(key):
        k_init, k_obs = jax.random.split(key)
        state = func_env.initial(k_init)
        obs = jnp.asarray(func_env.observation(state, k_obs), jnp.float32).reshape(obs_shape)
        return obs, (state, jnp.asarray(0, jnp.int32))

    def step(key, env_state, action):
        state, t = env_state
        k_trans, k_obs, k_reset = jax.random.split(key, 3)
        if not action_spec.discrete:
            action = action.reshape(func_env.action_space.shape)
        next_state = func_env.transition(state, action, k_trans)
        reward = jnp.asarray(func_env.reward(state, action, next_state, k_trans), jnp.float32)
        terminated = jnp.asarray(func_env.terminal(next_state, k_obs), bool)
        t = t + 1
        truncated = jnp.logical_and(t >= horizon, jnp.logical_not(terminated))
        final_obs = jnp.asarray(func_env.observation(next_state, k_obs), jnp.float32).reshape(obs_shape)
        reset_obs, (reset_state, reset_t) = reset(k_reset)
        done = jnp.logical_or(terminated, truncated)
        obs = jnp.where(done, reset_obs, final_obs)
        new_state = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), reset_state, next_state)
        return obs, (new_state, jnp.where(done, reset_t, t)), reward, terminated, truncated, final_obs

    preset = "classic" if action_spec.discrete else "continuous"
    return JaxEnv(env_id, FAMILY, obs_shape, action_spec, reset, step, horizon, preset=preset)


def functional_ids() -> Sequence[str]:
    """Registered Gymnasium ids whose environments are functional JAX envs (train inside the scan)."""
    import gymnasium as gym

    return [k for k, s in gym.registry.items() if str(s.entry_point).startswith("gymnasium.envs.phys2d")]
